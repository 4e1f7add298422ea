"""Models buildable from a config: every name in ``__all__`` is a model class.

``load_pretrained(path)`` and ``read_pretrained(path)`` (not model classes, so not in ``__all__``)
load a U2Net, or its weights in our naming, from official, ported or U2Seg files.
"""

from models.u2net import U2Net
from models.u2net import load_pretrained as load_pretrained
from models.weight_formats import PretrainedWeights as PretrainedWeights
from models.weight_formats import read_pretrained as read_pretrained

__all__ = ["U2Net"]
