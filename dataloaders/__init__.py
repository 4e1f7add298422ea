"""Data loaders selectable by name in a config (looked up in ``__all__``)."""

from dataloaders.buildings import InriaBuilding, MassachusettsBuilding, VOCBinary, WHUBuilding
from dataloaders.demo import DemoSOD
from dataloaders.duts import DUTS

__all__ = [
    "DUTS",
    "DemoSOD",
    "InriaBuilding",
    "MassachusettsBuilding",
    "VOCBinary",
    "WHUBuilding",
]
