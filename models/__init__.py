"""Models buildable from a config: every name in ``__all__`` is a model class."""

from .u2net import U2Net

__all__ = ["U2Net"]
