"""ImageFolderDataModule: your own images, as `<root>/train/<class>/*` and optionally `<root>/test/<class>/*`,
decoded once into a memory-mapped cache: any number of images in a bounded amount of memory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

from lightning_template.data.datamodule import InMemoryDataModule, InMemoryDataset, random_split
from lightning_template.errors import UserError

GRAYSCALE_MODES = (
    "1",
    "L",
    "LA",
    "I",
    "I;16",
    "I;16B",
    "I;16L",
)  # PIL modes read as one channel; others as RGB


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits, keeping its range (PIL's convert clips it at 255)."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F" or pixels.min() < 0 or pixels.max() > 65535:
        raise OSError(f"its {image.mode} pixels span {pixels.min():g} to {pixels.max():g}, not 8 or 16 bits")
    return Image.fromarray((pixels / 257).round().astype(np.uint8))


def read_image(path: str | Path, size: Sequence[int], grayscale: bool | None = None) -> torch.Tensor:
    """uint8 (C, H, W) resized to size (H, W): one channel for a grayscale file (or grayscale=True), else RGB."""
    with Image.open(path) as file:
        gray = file.mode in GRAYSCALE_MODES if grayscale is None else grayscale
        image = (eight_bit(file) if file.mode.startswith(("I", "F")) else file).convert(
            "L" if gray else "RGB"
        )
    return pil_to_tensor(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


class Decoding(Dataset):
    """Each image read in a DataLoader worker; a file that cannot be used reports why instead of an image."""

    def __init__(self, found: ImageFolder, shape: Sequence[int]) -> None:
        self.paths, self.shape = [path for path, _ in found.samples], tuple(shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.paths[index]
        try:
            image = read_image(path, self.shape[1:])
        except OSError as exc:
            return torch.zeros(
                self.shape, dtype=torch.uint8
            ), f"{path} could not be read as an image ({exc})."
        if image.shape[0] != self.shape[0]:
            error = f"{path} has {image.shape[0]} channel(s) where the first training image has {self.shape[0]}"
            return torch.zeros(
                self.shape, dtype=torch.uint8
            ), f"{error}: make them all grayscale or all colour."
        return image, ""


class ImageFolderDataModule(InMemoryDataModule):
    """Any images PIL reads, resized to `image_size` as uint8, one channel or three; folders name classes."""

    def __init__(
        self,
        root: str | Path,
        image_size: Sequence[int] = (32, 32),
        test_split: float = 0.2,
        cache_dir: str | Path = "data/image_cache",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.image_size, self.test_split = Path(root), tuple(image_size), test_split
        self.cache_dir = Path(cache_dir)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise UserError(f"data.image_size must be [height, width], got {list(image_size)}.")

    def find(self, part: str) -> ImageFolder:
        """The images of `root/part/<class>/`, listed (torchvision's class-folder layout and extensions)."""
        try:
            return ImageFolder(str(self.root / part), loader=Path)
        except (FileNotFoundError, OSError) as exc:
            raise UserError(f"data.root={self.root}: in {self.root / part}, {exc}") from exc

    def cached(self, found: ImageFolder, channels: int) -> torch.Tensor:
        """The images as uint8 (N, C, H, W), memory-mapped from a cache file named by the files' paths, sizes
        and times and the image size: decoded once, again only when a file changes."""
        files = [
            (os.path.abspath(path), os.stat(path).st_size, os.stat(path).st_mtime_ns)
            for path, _ in found.samples
        ]
        key = hashlib.sha256(repr((files, self.image_size, channels)).encode()).hexdigest()[:20]
        path = self.cache_dir / f"{self.root.name}-{Path(found.root).name}-{key}.npy"
        if not path.exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{path}.lock"):  # processes started at once decode once
                if not path.exists():
                    self.decode(found, (channels, *self.image_size), path)
        return torch.from_numpy(
            np.load(path, mmap_mode="c")
        )  # copy-on-write: pages load as batches need them

    def decode(self, found: ImageFolder, shape: tuple[int, ...], path: Path) -> None:
        """Decode and resize every image in parallel into `path`, through a partial file: whole or absent."""
        partial = path.with_suffix(".partial")
        images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(found), *shape))
        workers = min(
            len(os.sched_getaffinity(0)), len(found) // 500
        )  # a small folder: no processes to start
        batches = DataLoader(Decoding(found, shape), batch_size=100, num_workers=workers)
        start = 0
        for batch, errors in tqdm(
            batches, f"Decoding {found.root} into {self.cache_dir} (once)", unit="batch"
        ):
            if any(errors):
                partial.unlink()
                raise UserError(f"data.root: {next(filter(None, errors))}")
            images[start : start + len(batch)] = batch.numpy()
            start += len(batch)
        images.flush()
        os.replace(partial, path)

    def prepare_data(self) -> None:
        self.load()  # the caches: made by one process per machine, before every process's setup

    def load(self) -> tuple[InMemoryDataset, InMemoryDataset, list[str], None]:
        found = self.find("train")
        try:  # the first image sets the channels of all
            channels = read_image(found.samples[0][0], self.image_size).shape[0]
        except OSError as exc:
            raise UserError(
                f"data.root: {found.samples[0][0]} could not be read as an image ({exc})."
            ) from exc
        train = InMemoryDataset(self.cached(found, channels), torch.tensor(found.targets))
        if not (self.root / "test").is_dir():  # no test folder: a seeded split, drawn before validation's
            rest, part = random_split(train.indices, self.test_split, "data.test_split", self.seed)
            return train.subset(rest), train.subset(part), found.classes, None
        found_test = self.find("test")
        if found_test.classes != found.classes:
            raise UserError(
                f"data.root: {self.root}/test needs the class folders of train/, {found.classes}."
            )
        test = InMemoryDataset(self.cached(found_test, channels), torch.tensor(found_test.targets))
        return train, test, found.classes, None
