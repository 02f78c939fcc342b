"""MNISTDataModule: MNIST, Fashion-MNIST or KMNIST through torchvision, from the files under data_dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import KMNIST, MNIST, FashionMNIST
from torchvision.datasets.utils import extract_archive

from lightning_template.data.datamodule import Images, InMemoryDataModule
from lightning_template.errors import UserError

# torchvision's classes know each dataset's files, checksums, mirrors and class names.
DATASETS = {"mnist": MNIST, "fashion_mnist": FashionMNIST, "kmnist": KMNIST}


class MNISTDataModule(InMemoryDataModule):
    """28x28 grayscale images in 10 classes: 60,000 to train and validate on, the official 10,000 to test."""

    def __init__(self, data_dir: str | Path = "data", dataset: str = "mnist", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dataset not in DATASETS:
            raise UserError(f"data.dataset must be one of {list(DATASETS)}, got {dataset!r}.")
        self.data_dir, self.dataset = Path(data_dir), dataset
        self.classes = [name.split(" - ")[0] for name in DATASETS[dataset].classes]  # MNIST's: "0" to "9"

    def read(self, train: bool) -> Any:
        """torchvision's dataset, from the unpacked files; downloaded when neither they nor the .gz are there."""
        folder = self.data_dir / DATASETS[self.dataset].__name__ / "raw"
        for archive in folder.glob("*.gz"):
            if not archive.with_suffix("").exists():  # the repository's .gz are not torchvision's own bytes
                extract_archive(str(archive))
        try:
            return DATASETS[self.dataset](self.data_dir, train=train, download=True)
        except (RuntimeError, OSError) as exc:
            reason = " ".join(str(exc).split())  # one paragraph: torchvision's message spans several lines
            raise UserError(
                f"data.dataset={self.dataset}: its files in {folder} could not be read or downloaded ({reason}). "
                "Put the four .gz files there, or point paths.data_dir at a folder that holds "
                f"{folder.parent.name}/raw/."
            ) from exc

    def load(self) -> tuple[Images, Images]:
        train, test = self.read(train=True), self.read(train=False)
        return (train.data.unsqueeze(1), train.targets), (test.data.unsqueeze(1), test.targets)
