"""One optimisation step: autocast forward, float32 loss, scaled backward, clipping, update."""

from __future__ import annotations

import torch
from torch import nn

from utils.runtime.precision import autocast, check_amp, memory_format


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
        check_amp(amp, device)
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
