"""Abstract parts every dataset, loader, model and trainer builds on."""

from base.base_dataloader import BaseDataLoader
from base.base_dataset import BaseDataSet
from base.base_model import BaseModel
from base.base_trainer import BaseTrainer

__all__ = ["BaseDataLoader", "BaseDataSet", "BaseModel", "BaseTrainer"]
