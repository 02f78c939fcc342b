"""MNISTDataModule: MNIST, Fashion-MNIST or KMNIST through torchvision, from the files under data_dir."""

import gzip
import shutil
import zlib
from pathlib import Path
from typing import Any

from filelock import FileLock
from torchvision.datasets import KMNIST, MNIST, FashionMNIST

from lightning_template.data.datamodule import InMemoryDataModule, InMemoryDataset
from lightning_template.errors import UserError

# torchvision's classes know each dataset's files, checksums, mirrors and class names.
DATASETS = {"mnist": MNIST, "fashion_mnist": FashionMNIST, "kmnist": KMNIST}


def unpacked(archive: Path) -> bool:
    """Whether `archive` is there, unpacked beside itself, whole: as long as gzip's last 4 bytes say."""
    target = archive.with_suffix("")
    there = archive.exists() and target.exists()
    return there and target.stat().st_size == int.from_bytes(archive.read_bytes()[-4:], "little")


def unpack(archive: Path) -> None:
    """Unpack `archive` beside itself under a temporary name, then rename it: a partial file never counts."""
    partial = archive.with_suffix(".partial")
    try:
        with gzip.open(archive) as source, partial.open("wb") as target:
            shutil.copyfileobj(source, target)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        partial.unlink()
        raise UserError(
            f"{archive} is damaged ({exc}): replace it with a whole copy (`git checkout -- data/MNIST/raw` "
            "restores the repository's MNIST files), or delete it to download it again."
        ) from exc
    partial.replace(archive.with_suffix(""))  # atomic: the file is whole or not there


class MNISTDataModule(InMemoryDataModule):
    """28x28 grayscale images in 10 classes: 60,000 to train and validate on, the official 10,000 to test."""

    def __init__(self, data_dir: str | Path = "data", dataset: str = "mnist", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dataset not in DATASETS:
            raise UserError(f"data.dataset must be one of {list(DATASETS)}, got {dataset!r}.")
        self.data_dir, self.dataset = Path(data_dir), dataset
        self.folder = self.data_dir / DATASETS[dataset].__name__ / "raw"
        self.classes = [name.split(" - ")[0] for name in DATASETS[dataset].classes]  # MNIST's: "0" to "9"

    def prepare_data(self) -> None:
        """Unpack (or download) once, however many processes start: a lock for those without a barrier."""
        archives = [self.folder / name for name, _ in DATASETS[self.dataset].resources]
        if all(map(unpacked, archives)):
            return  # the usual case: no lock needed, so a read-only data_dir works too
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(self.folder / "unpack.lock"):
            for archive in archives:  # not torchvision's own bytes: it would download them again
                if archive.exists() and not unpacked(archive):  # unless another process just did
                    unpack(archive)
            self.read(train=False)  # downloads what is missing (torchvision's files), still under the lock

    def read(self, train: bool) -> Any:
        """torchvision's dataset, from the unpacked files; downloaded when neither they nor the .gz are there."""
        try:
            return DATASETS[self.dataset](self.data_dir, train=train, download=True)
        except (RuntimeError, OSError, ValueError, AssertionError) as exc:  # missing, damaged, offline
            reason = " ".join(str(exc).split())  # one paragraph: torchvision's message spans several lines
            raise UserError(
                f"data.dataset={self.dataset}: its files in {self.folder} could not be read or downloaded "
                f"({reason}). Put the four .gz files there (a damaged file beside its .gz is unpacked "
                f"again), or point paths.data_dir at a folder that holds {self.folder.parent.name}/raw/."
            ) from exc

    def load(self) -> tuple[InMemoryDataset, InMemoryDataset, list[str], None]:
        train, test = (InMemoryDataset(p.data.unsqueeze(1), p.targets) for p in map(self.read, (True, False)))
        return train, test, self.classes, None
