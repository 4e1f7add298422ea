"""Models buildable from a config: every name in ``__all__`` is a model class.

``load_pretrained(path)`` (not a model class, so not in ``__all__``) loads a U2Net from official,
ported or U2Seg weights.
"""

from .pretrained import load_pretrained as load_pretrained
from .u2net import U2Net

__all__ = ["U2Net"]
