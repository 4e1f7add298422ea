"""DUTS salient object detection dataset (http://saliencydetection.net/duts/)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from base.base_dataloader import BaseDataLoader
from base.base_dataset import BaseDataSet
from utils.io.images import IMAGE_EXTENSIONS, find_images, read_image, read_mask

SPLIT_DIRS = {
    "train": ("DUTS-TR/DUTS-TR-Image", "DUTS-TR/DUTS-TR-Mask"),
    "test": ("DUTS-TE/DUTS-TE-Image", "DUTS-TE/DUTS-TE-Mask"),
}


def _unmatched(names: list[str], kind: str, folder: str, missing: str, other: str) -> str:
    listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{len(names)} {kind} in {folder} have no {missing} in {other}: {listed}"


class DUTSDataset(BaseDataSet):
    """DUTS: ``<data_dir>/DUTS-TR/DUTS-TR-{Image,Mask}`` and ``DUTS-TE/DUTS-TE-{Image,Mask}``.

    Images and masks are paired by file name without extension; ``split`` is "train" or "test".
    Masks are read with the mask rule of :func:`utils.io.images.read_mask` (0/1-encoded masks
    become 0/255; a notice says how many of the masks checked are). Every pair's image and mask
    sizes are checked at construction, from the file headers; ``pair_mismatch`` says what
    happens to pairs whose sizes differ. Other arguments are those of ``BaseDataSet``.
    """

    def __init__(self, data_dir: str, split: str = "train", **kwargs: Any) -> None:
        if split not in SPLIT_DIRS:
            raise ValueError(f"split must be one of {sorted(SPLIT_DIRS)}, got {split!r}")
        super().__init__(data_dir, split, **kwargs)

    def _set_files(self) -> None:
        image_dir, mask_dir = (os.path.join(self.data_dir, d) for d in SPLIT_DIRS[self.split])
        missing = [d for d in (image_dir, mask_dir) if not os.path.isdir(d)]
        if missing:
            where = "does not exist" if not os.path.isdir(self.data_dir) else "is incomplete"
            raise FileNotFoundError(
                f"DUTS data_dir {self.data_dir} {where}: expected folders {image_dir} and "
                f"{mask_dir} (missing: {', '.join(missing)}). Download DUTS from "
                "http://saliencydetection.net/duts/ and unpack it there, or set data_dir."
            )
        images = find_images(image_dir, recursive=False)
        masks = find_images(mask_dir, recursive=False, what="mask")
        if not images:
            raise FileNotFoundError(
                f"no images in {image_dir} (looked for {', '.join(IMAGE_EXTENSIONS)} files)"
            )
        no_mask = [images[s].name for s in images if s not in masks]
        if no_mask:
            raise ValueError(_unmatched(no_mask, "images", image_dir, "mask", mask_dir))
        no_image = [masks[s].name for s in masks if s not in images]
        if no_image:
            raise ValueError(_unmatched(no_image, "masks", mask_dir, "image", image_dir))
        self.files = [(str(images[s]), str(masks[s])) for s in sorted(images)]

    def _pair_paths(self) -> Sequence[tuple[str, str]]:
        return self.files

    def _load_data(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image_path, mask_path = self.files[index]
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        return read_image(image_path), read_mask(mask_path), image_id


class DUTS(BaseDataLoader):
    """Loader for the DUTS dataset (``DUTSDataset``)."""

    dataset_class = DUTSDataset
