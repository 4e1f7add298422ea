"""One optimisation step: autocast forward, float32 loss, scaled backward, clipping, update."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` (``off``, ``fp16``, ``bf16``) on ``device``'s type."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class TrainStep:
    """Forward, loss, backward and optimizer step of a deep-supervised model.

    ``amp``: ``off``, ``fp16`` (autocast float16 and a ``GradScaler``; CUDA only) or ``bf16``
    (autocast bfloat16, no scaler; CPU or GPU). The loss is computed in float32 from the logits,
    outside autocast. ``channels_last`` puts the inputs in channels-last memory format (the
    model must be converted by the caller). ``clip_grad_norm > 0`` clips the gradient norm,
    after unscaling under fp16, so the threshold applies to the true gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        amp: str = "off",
        channels_last: bool = False,
        clip_grad_norm: float = 0.0,
    ) -> None:
        if amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
        if amp == "fp16" and device.type != "cuda":
            raise ValueError(
                "amp 'fp16' needs a CUDA GPU (float16 with a GradScaler); on the CPU use "
                "'bf16' or 'off'"
            )
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.device = device
        self.amp = amp
        self.memory_format = memory_format(channels_last)
        self.clip_grad_norm = clip_grad_norm
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """One step on a batch already on the device; returns the (detached) float32 loss."""
        images = images.contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.amp):
            outputs = self.model(images)
        loss = self.loss(tuple(o.float() for o in outputs), masks)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()
