"""ImageFolderDataModule: images in `<root>/train/<class>/` (and `test/`), decoded once into a cache."""

import hashlib
import os
from collections.abc import Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

from lightning_template.data.datamodule import InMemoryDataModule, InMemoryDataset
from lightning_template.errors import UserError

# The PIL modes read as one channel; any other is read as RGB.
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")


def read_image(path: str | Path, size: Sequence[int], grayscale: bool | None = None) -> torch.Tensor:
    """uint8 (C, H, W) resized to size (H, W): one channel for a grayscale file (or grayscale=True), else RGB."""
    with Image.open(path) as file:
        gray = file.mode in GRAYSCALE_MODES if grayscale is None else grayscale
        # 16-bit pixels scaled to 8 bits: their whole range kept (PIL's convert would clip it at 255)
        image = file.convert("I").point(lambda value: value / 257) if file.mode.startswith("I") else file
        image = image.convert("L" if gray else "RGB")
    return pil_to_tensor(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def decoded(path: str, shape: Sequence[int]) -> tuple[torch.Tensor, str]:
    """An image of `shape` for the cache, or why the file cannot be one (a worker's exception loses the path)."""
    try:
        image = read_image(path, shape[1:])
        if image.shape[0] != shape[0]:
            raise OSError(f"it has {image.shape[0]} channel(s) where the first training image has {shape[0]}")
        return image, ""
    except OSError as exc:
        return torch.zeros(shape, dtype=torch.uint8), f"{path} could not be read as an image ({exc})."


class ImageFolderDataModule(InMemoryDataModule):
    """Any images PIL reads, resized to `image_size` as uint8, one channel or three; folders name classes."""

    def __init__(
        self,
        root: str | Path,
        image_size: Sequence[int] = (32, 32),
        cache_dir: str | Path = "data/image_cache",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.image_size, self.cache_dir = Path(root), tuple(image_size), Path(cache_dir)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise UserError(f"data.image_size must be [height, width], got {list(image_size)}.")

    def find(self, part: str) -> ImageFolder:
        """The images of `root/part/<class>/`, listed (torchvision's class-folder layout and extensions)."""
        try:
            return ImageFolder(str(self.root / part), loader=Path)
        except OSError as exc:  # no such folder, or no class folder in it
            raise UserError(f"data.root={self.root}: in {self.root / part}, {exc}") from exc

    def cached(self, found: ImageFolder, channels: int) -> torch.Tensor:
        """The images (N, C, H, W), memory-mapped from a cache named by the files' paths, sizes and times."""
        stats = ((path, os.stat(path)) for path, _ in found.samples)
        files = [(os.path.abspath(path), stat.st_size, stat.st_mtime_ns) for path, stat in stats]
        key = hashlib.sha256(repr((files, self.image_size, channels)).encode()).hexdigest()[:20]
        path = self.cache_dir / f"{self.root.name}-{Path(found.root).name}-{key}.npy"
        if not path.exists():  # the usual case needs no lock, so a read-only cache_dir works too
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{path}.lock"):  # processes started at once decode once
                if not path.exists():
                    self.decode(found, (channels, *self.image_size), path)
        return torch.from_numpy(np.load(path, mmap_mode="c"))  # copy-on-write: nothing is written back

    def decode(self, found: ImageFolder, shape: tuple[int, ...], path: Path) -> None:
        """Decode and resize every image, in parallel, into `path` through a partial file: whole or absent."""
        temporary = path.with_suffix(".partial")
        images = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=(len(found), *shape))
        found.loader = partial(decoded, shape=shape)
        workers = min(len(os.sched_getaffinity(0)), len(found) // 500)  # a small folder: no processes
        progress = tqdm(DataLoader(found, batch_size=100, num_workers=workers), f"Decoding {found.root} once")
        for number, ((batch, errors), _) in enumerate(progress):
            if any(errors):
                temporary.unlink()
                raise UserError(f"data.root: {next(filter(None, errors))}")
            images[number * 100 : number * 100 + len(batch)] = batch.numpy()
        images.flush()
        os.replace(temporary, path)

    def prepare_data(self) -> None:
        self.load()  # the caches: made by one process per machine, before every process's setup

    def load(self) -> tuple[InMemoryDataset, InMemoryDataset | None, list[str], None]:
        found = self.find("train")
        channels = 3  # unless the first image is grayscale; decode() names an unreadable one
        with suppress(OSError), Image.open(found.samples[0][0]) as first:
            channels = 1 if first.mode in GRAYSCALE_MODES else 3
        train = InMemoryDataset(self.cached(found, channels), torch.tensor(found.targets))
        if not (self.root / "test").is_dir():  # the test set: data.test_split of train/
            return train, None, found.classes, None
        test = self.find("test")
        if test.classes != found.classes:
            raise UserError(f"data.root: test/ needs the class folders of train/, {found.classes}.")
        test_set = InMemoryDataset(self.cached(test, channels), torch.tensor(test.targets))
        return train, test_set, found.classes, None
