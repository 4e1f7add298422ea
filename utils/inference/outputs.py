"""What inference writes for each image: saliency map, binary mask, cut-out and overlay.

Each kind has its own folder under the output folder and keeps the input's relative path and
stem: ``OUT/maps/sub/photo.png`` for ``INPUT/sub/photo.jpg``. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.io.images import write_image

OUTPUT_KINDS = {  # kind: (folder, extension)
    "map": ("maps", ".png"),
    "mask": ("masks", ".png"),
    "cutout": ("cutouts", ".png"),
    "overlay": ("overlays", ".jpg"),
    "polygons": ("polygons", ".geojson"),  # and .gpkg: utils.inference.geo_outputs writes them
}
OUTPUT_MARKER = ".u2seg-outputs"
"""An empty file inference writes into its output folder, so that a later run whose input
folder contains it does not read those outputs back as inputs."""
OVERLAY_COLOUR = np.array([255, 32, 32], dtype=np.float32)  # RGB
OVERLAY_OPACITY = 0.5


def output_path(out_dir: Path, kind: str, key: str) -> Path:
    """Where ``kind`` is written for the input whose relative path without extension is ``key``."""
    folder, extension = OUTPUT_KINDS[kind]
    return out_dir / folder / f"{key}{extension}"


def display_rgb(image: np.ndarray) -> np.ndarray:
    """The HxWx3 uint8 RGB picture of an HxWxC uint8 model input: the image itself for RGB, the
    first three bands of multi-band input (as its ``imagery`` section selects and scales them),
    the first band as grey for one or two bands."""
    if image.shape[2] == 3:
        return image
    if image.shape[2] > 3:
        return np.ascontiguousarray(image[:, :, :3])
    return np.repeat(image[:, :, :1], 3, axis=2)


def overlay(image: np.ndarray, saliency: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image tinted by the saliency (``OVERLAY_OPACITY`` at 255) and the mask's outline."""
    alpha = saliency.astype(np.float32) * (OVERLAY_OPACITY / 255)
    alpha = alpha[:, :, None]
    tinted = image * (1 - alpha) + OVERLAY_COLOUR * alpha
    out = np.clip(tinted + 0.5, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    colour = tuple(int(c) for c in OVERLAY_COLOUR)
    return cv2.drawContours(out, contours, -1, colour, thickness)


def write_outputs(
    out_dir: Path,
    key: str,
    kinds: tuple[str, ...],
    image: np.ndarray,
    saliency: np.ndarray,
    mask: np.ndarray | None,
) -> None:
    """Write the ``kinds`` for one image.

    ``image``: HxWxC uint8, the model's input (RGB; multi-band images are shown by
    :func:`display_rgb`); ``saliency``: HxW uint8 (``round(p * 255)``); ``mask``: HxW uint8 in
    {0, 255} (needed for the mask and the overlay). The cut-out is the RGB image with the
    saliency as alpha (RGBA PNG).
    """
    image = display_rgb(image)
    renders = {
        "map": lambda: saliency,
        "mask": lambda: mask,
        "cutout": lambda: np.dstack((image, saliency)),
        "overlay": lambda: overlay(image, saliency, mask),
    }
    for kind in kinds:
        write_image(output_path(out_dir, kind, key), renders[kind]())
