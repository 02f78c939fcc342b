"""ImageFolderDataModule: your own images, as `<root>/train/<class>/*` and optionally `<root>/test/<class>/*`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from lightning_template.data.datamodule import Images, InMemoryDataModule, random_split
from lightning_template.errors import UserError

GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes read as one channel; any other as RGB


def read_image(path: str | Path, size: Sequence[int], grayscale: bool | None = None) -> torch.Tensor:
    """uint8 (C, H, W) resized to size (H, W): one channel for a grayscale file (or grayscale=True), else RGB."""
    with Image.open(path) as file:
        gray = file.mode in GRAYSCALE_MODES if grayscale is None else grayscale
        image = file.convert("L" if gray else "RGB")
    return pil_to_tensor(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


class ImageFolderDataModule(InMemoryDataModule):
    """Any images PIL reads, resized to `image_size` as uint8, one channel or three; folders name classes."""

    def __init__(
        self, root: str | Path, image_size: Sequence[int] = (32, 32), test_split: float = 0.2, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.image_size, self.test_split = Path(root), tuple(image_size), test_split
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise UserError(f"data.image_size must be [height, width], got {list(image_size)}.")

    def read(self, folder: Path, channels: int | None = None) -> tuple[Images, list[str]]:
        """Every image of `folder/<class>/`, resized; a file that is no image stops with its path."""
        try:
            found = ImageFolder(str(folder), loader=Path)  # torchvision's class-folder layout and extensions
        except (FileNotFoundError, OSError) as exc:
            raise UserError(f"data.root={self.root}: in {folder}, {exc}") from exc
        images = []
        for path, _ in found.samples:
            try:
                images.append(read_image(path, self.image_size))
            except OSError as exc:
                raise UserError(f"data.root: {path} could not be read as an image ({exc}).") from exc
        counts = [image.shape[0] for image in images]
        expected = channels or max(set(counts), key=counts.count)  # what most images have
        odd = [path for (path, _), count in zip(found.samples, counts, strict=True) if count != expected]
        if odd:
            message = f"{odd[0]} and {len(odd) - 1} more have not the {expected} channel(s) of the rest"
            raise UserError(f"data.root: {message}: make them all grayscale or all colour.")
        return (torch.stack(images), torch.tensor(found.targets)), found.classes

    def load(self) -> tuple[Images, Images]:
        train, self.classes = self.read(self.root / "train")
        if not (self.root / "test").is_dir():  # no test folder: a seeded split, drawn before validation's
            return random_split(train, self.test_split, "data.test_split", self.seed)
        test, test_classes = self.read(self.root / "test", channels=train[0].shape[1])
        if test_classes != self.classes:
            raise UserError(f"data.root: {self.root}/test needs the class folders of train/, {self.classes}.")
        return train, test
