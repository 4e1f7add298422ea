"""Binary-mask metrics of the foreground class (IoU, F1, precision, recall, accuracy)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from utils.metrics.base import Accumulator

BINARY_LEVEL = 128
"""A pixel is predicted foreground when its 8-bit value is ``>= BINARY_LEVEL``."""

SCORES = ("IoU", "F1", "precision", "recall", "accuracy")
"""The binary metrics, in the order of :func:`binary_scores`."""


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 1 where the denominator is 0 (the numerator is 0 there)."""
    return np.where(denominator == 0, 1.0, numerator / np.maximum(denominator, 1.0))


def binary_scores(confusion: np.ndarray) -> np.ndarray:
    """``IoU, F1, precision, recall, accuracy`` (..., 5) from ``TP, FP, FN, TN`` (..., 4), float64.

    ``IoU = TP / (TP + FP + FN)``, ``F1 = 2 TP / (2 TP + FP + FN)``, ``precision = TP / (TP + FP)``,
    ``recall = TP / (TP + FN)``, ``accuracy = (TP + TN) / (TP + FP + FN + TN)``; a zero denominator
    gives 1 (nothing to find and nothing found wrongly is perfect).
    """
    tp, fp, fn, tn = np.moveaxis(confusion.astype(np.float64), -1, 0)
    return np.stack(
        [
            _ratio(tp, tp + fp + fn),
            _ratio(2.0 * tp, 2.0 * tp + fp + fn),
            _ratio(tp, tp + fp),
            _ratio(tp, tp + fn),
            _ratio(tp + tn, tp + fp + fn + tn),
        ],
        axis=-1,
    )


class BinaryAccumulator(Accumulator):
    """Binary segmentation metrics of the foreground class (e.g. building extraction).

    The prediction is binarised **without** the min-max normalisation of the SOD metrics:
    a pixel is foreground when ``pred_uint8 >= 128``, i.e. when its probability ``p >= 0.5`` up
    to the 8-bit quantisation ``round(p * 255)`` of our saved maps (``round(127.5) = 128``, so
    ``p = 0.5`` is foreground). The ground truth is ``gt_uint8 > 128`` (``batch.gt``).

    * ``IoU``, ``F1``, ``precision``, ``recall``, ``accuracy``: pooled over the dataset, from the
      TP / FP / FN / TN pixel counts summed over all pixels of all images (float64 sums, so the
      state can be all-reduced); large images weigh more.
    * ``IoU_img``, ``F1_img``, ``precision_img``, ``recall_img``, ``accuracy_img``: the same
      scores computed per image, then averaged over images (every image weighs the same).

    Zero denominators (as ``segmentation_models_pytorch``'s default ``zero_division=1``): a ratio
    whose denominator is 0 is 1, per image and pooled alike, and no image is ever excluded. Its
    numerator is then 0 as well: nothing was to be found and nothing was found wrongly. So an
    image with empty ground truth and empty prediction scores 1 everywhere; with empty ground
    truth but some predicted foreground, recall is 1 and IoU = F1 = precision = 0; with an empty
    prediction but some foreground, precision is 1 and IoU = F1 = recall = 0. ``accuracy``
    never has a zero denominator.

    Computed from ``batch.stats.counts`` (pixels per 8-bit level, split by ground truth), so it
    costs a few hundred additions per image.
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {
        **dict.fromkeys(SCORES, True),
        **{f"{name}_img": True for name in SCORES},
    }

    def _init_state(self) -> None:
        self.confusion_sum = self._zeros(4)  # TP, FP, FN, TN over all pixels of all images
        self.score_sum = self._zeros(len(SCORES))  # per-image scores, summed over images
        self.count = self._zeros()

    def state_arrays(self) -> list[np.ndarray]:
        return [self.confusion_sum, self.score_sum, self.count]

    @staticmethod
    def confusion(batch: Any) -> np.ndarray:
        """Per-image ``TP, FP, FN, TN`` pixel counts (B x 4, int64) from the level histograms
        ``batch.stats``."""
        counts = batch.stats.counts  # B x 2 (background, foreground) x 256
        negative = counts[:, :, :BINARY_LEVEL].sum(axis=2)  # B x 2
        positive = counts[:, :, BINARY_LEVEL:].sum(axis=2)
        return np.stack([positive[:, 1], positive[:, 0], negative[:, 1], negative[:, 0]], axis=1)

    def update(self, batch: Any) -> None:
        confusion = self.confusion(batch)
        self.confusion_sum += confusion.sum(axis=0)
        self.score_sum += binary_scores(confusion).sum(axis=0)
        self.count += batch.batch_size

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        pooled = binary_scores(self.confusion_sum).tolist()
        per_image = (self.score_sum / self.count).tolist()
        return {
            **dict(zip(SCORES, pooled, strict=True)),
            **{f"{name}_img": value for name, value in zip(SCORES, per_image, strict=True)},
        }
