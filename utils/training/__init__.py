"""Training helpers: losses, learning-rate schedules, the optimisation step, TensorBoard images,
and the registries of the config sections they serve (``loss``, ``optimizer``,
``lr_scheduler``)."""

from torch import optim

from utils.config import classes_in
from utils.training import losses, lr_scheduler

LOSSES = classes_in(losses)
OPTIMIZERS = classes_in(optim, exclude=[optim.Optimizer])
LR_SCHEDULERS = classes_in(lr_scheduler)
