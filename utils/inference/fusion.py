"""Conv-BatchNorm(-ReLU) fusion for faster inference: BatchNorm folded into the convolution's
weights and bias, and on the CPU the ReLU applied by oneDNN in the same call."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


class FusedConv(nn.Module):
    """A convolution with a BatchNorm (eval mode) folded into its weights and bias, and
    optionally the ReLU after it, applied in one oneDNN call on the CPU where torch has it
    (float32, no autocast); elsewhere as a convolution and an in-place ReLU."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: bool) -> None:
        super().__init__()
        weight, bias = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
            bn.weight,
            bn.bias,
        )
        self.weight, self.bias = weight, bias
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cpu_float = x.device.type == "cpu" and x.dtype == torch.float32
        if _ONEDNN_CONV is not None and cpu_float and not torch.is_autocast_enabled("cpu"):
            attr = "relu" if self.relu else "none"
            args = (self.padding, self.stride, self.dilation, self.groups, attr, [None], "")
            return _ONEDNN_CONV(x, self.weight, self.bias, *args)
        y = F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        return y.relu_() if self.relu else y


_ONEDNN_CONV = (
    getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if torch.backends.mkldnn.is_available()
    else None
)
"""oneDNN's convolution with a fused element-wise post-op (the one torch.compile uses on the
CPU), where this torch build has it."""


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.Sequential`` of a Conv2d (zero padding), a BatchNorm2d and
    optionally a ReLU (U2Net's ConvBNReLU) in the eval-mode ``model`` by a :class:`FusedConv`;
    returns ``model``. Other modules are kept as they are."""
    for name, child in model.named_children():
        parts = list(child.children()) if isinstance(child, nn.Sequential) else []
        if _fusable(parts):
            setattr(model, name, FusedConv(parts[0], parts[1], relu=len(parts) == 3))
        else:
            fuse_conv_bn(child)
    return model


def _fusable(parts: list[nn.Module]) -> bool:
    """Whether ``parts`` are a Conv2d with zero padding, a BatchNorm2d with running statistics
    and optionally a ReLU."""
    if len(parts) not in (2, 3) or not isinstance(parts[0], nn.Conv2d):
        return False
    conv, bn = parts[0], parts[1]
    return (
        conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.running_mean is not None
        and (len(parts) == 2 or isinstance(parts[2], nn.ReLU))
    )
