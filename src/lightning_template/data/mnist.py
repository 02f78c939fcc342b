"""MNISTDataModule: find or unpack or download an MNIST-family dataset, verify it, split it, standardize it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Sampler

from lightning_template.data.batches import (
    RandomDistortion,
    ResumableRandomSampler,
    Standardizer,
    TensorBatchDataset,
    keep_batch,
)
from lightning_template.data.idx_files import (
    DataFileError,
    ensure_idx_files,
    missing_files,
    read_idx,
)

log = logging.getLogger(__name__)

# The canonical MD5 sums of the four uncompressed files of the original distribution.
MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TRAIN_SIZE = 60_000
TEST_SIZE = 10_000
IDX_NAMES = tuple(MNIST_FILES)  # every dataset of the family uses these four file names


@dataclass(frozen=True)
class IdxDataset:
    """Where an MNIST-format dataset lives, how to check its files, and how torchvision downloads it."""

    title: str  # in messages
    folder: str  # files go to <data_dir>/<folder>/raw/, as torchvision's class of the same name puts them
    source: str  # where to get the files by hand
    # MD5 of each unpacked file (name -> MD5), where published; otherwise None and `archive_md5s` is used.
    md5s: Mapping[str, str | None] = field(default_factory=lambda: dict.fromkeys(IDX_NAMES))
    archive_md5s: Mapping[str, str] = field(default_factory=dict)  # name -> MD5 of name.gz
    torchvision_class: str | None = None  # torchvision.datasets class that downloads it; None: no download
    train_size: int = TRAIN_SIZE
    test_size: int = TEST_SIZE


# `data.dataset` chooses one. The .gz sums are those of torchvision's own classes (their `resources`).
DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        title="MNIST",
        folder="MNIST",
        source="the template's git repository ships them in data/MNIST/raw/",
        md5s=MNIST_FILES,
        torchvision_class="MNIST",
    ),
    "fashion_mnist": IdxDataset(
        title="Fashion-MNIST",
        folder="FashionMNIST",
        source="https://github.com/zalandoresearch/fashion-mnist",
        archive_md5s={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        torchvision_class="FashionMNIST",
    ),
    "kmnist": IdxDataset(
        title="Kuzushiji-MNIST",
        folder="KMNIST",
        source="https://github.com/rois-codh/kmnist",
        archive_md5s={
            "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        torchvision_class="KMNIST",
    ),
}


def dataset_spec(name: str) -> IdxDataset:
    """The `DATASETS` entry for `data.dataset`, or a message listing the ones that exist."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(
            f"data.dataset={name!r} is not a known dataset; choose one of {sorted(DATASETS)} "
            "(or add an entry to DATASETS in lightning_template.data.mnist)."
        )
    return DATASETS[name]


def resolve_val_split(val_split: int | float, train_size: int = TRAIN_SIZE) -> int:
    """Turn Keras-style `validation_split` (a fraction) or a count into a number of images."""
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)):
        raise ValueError(f"data.val_split must be a fraction in (0, 1) or a count, got {val_split!r}.")
    if isinstance(val_split, float):
        if not 0.0 < val_split < 1.0:
            raise ValueError(
                f"data.val_split={val_split!r}: as a fraction it must lie strictly between 0 and 1 "
                f"(or give a whole count from 1 to {train_size - 1})."
            )
        return max(1, min(train_size - 1, round(val_split * train_size)))
    if not 1 <= val_split <= train_size - 1:
        raise ValueError(
            f"data.val_split={val_split!r}: as a count it must be from 1 to {train_size - 1} "
            "(or give a fraction in (0, 1))."
        )
    return val_split


class MNISTDataModule(L.LightningDataModule):
    """An MNIST-family dataset held in memory as uint8; batches are standardized (and augmented) on the device."""

    def __init__(
        self,
        data_dir: str | Path = "data",
        val_split: int | float = 5000,
        batch_size: int = 128,
        eval_batch_size: int = 2500,
        normalize: str = "global",
        augment: Mapping[str, float] | None = None,
        seed: int = 42,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        download: bool = True,
        on_device: bool = False,
        dataset: str = "mnist",
    ) -> None:
        super().__init__()
        self.dataset = dataset_spec(dataset)
        self.val_size = resolve_val_split(val_split, self.dataset.train_size)
        for name, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers must be an integer >= 0, got {num_workers!r}.")
        if on_device and num_workers:
            raise ValueError(
                f"data.on_device=true keeps the data on the accelerator, so data.num_workers must be 0, got {num_workers}."
            )
        self.on_device = on_device
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = int(seed)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.download = download
        self.standardizer = Standardizer(normalize)
        self.augmenter = RandomDistortion(**(augment or {}))
        self.data_train: TensorBatchDataset | None = None
        self.data_val: TensorBatchDataset | None = None
        self.data_test: TensorBatchDataset | None = None
        self.train_indices: torch.Tensor | None = None
        # (epoch, batches trained on in it) and the sampler they came from: a checkpoint's data position.
        self._trained: tuple[int, int] = (-1, 0)
        self._train_sampler: ResumableRandomSampler | None = None
        self._restart_position: dict[str, Any] = {}
        self.val_indices: torch.Tensor | None = None

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.dataset.folder / "raw"

    def prepare_data(self) -> None:
        missing = missing_files(self.raw_dir, self.dataset.md5s)
        if missing:
            self._download(missing)
        ensure_idx_files(self.raw_dir, self.dataset.md5s, self.dataset.archive_md5s)

    def _download(self, missing: list[str]) -> None:
        spec = self.dataset
        put_here = (
            f"Put the four {spec.title} files ({', '.join(f + '.gz' for f in spec.md5s)}) in {self.raw_dir} "
            f"({spec.source}), or point data.data_dir at a folder that holds {spec.folder}/raw/."
        )
        if not self.download or spec.torchvision_class is None:
            reason = "data.download=false" if not self.download else "torchvision cannot download it"
            raise DataFileError(
                f"{spec.title} files {missing} are missing from {self.raw_dir} and {reason}. {put_here}"
            )
        log.warning(
            "%s files %s are missing from %s: downloading them with torchvision.",
            spec.title,
            missing,
            self.raw_dir,
        )
        try:
            import torchvision.datasets

            download_class = getattr(torchvision.datasets, spec.torchvision_class)
            download_class(str(self.data_dir), train=True, download=True)
        except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError... when offline
            reason = " ".join(str(exc).split())  # one paragraph: torchvision's message spans several lines
            raise DataFileError(
                f"Downloading {spec.title} into {self.raw_dir} failed ({reason}); this machine may be offline. {put_here}"
            ) from exc

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        spec = self.dataset
        if any(not (self.raw_dir / name).exists() for name in spec.md5s):  # setup() without prepare_data()
            ensure_idx_files(self.raw_dir, spec.md5s, spec.archive_md5s)
        images = read_idx(self.raw_dir / "train-images-idx3-ubyte").unsqueeze(1)  # (N, 1, 28, 28)
        labels = read_idx(self.raw_dir / "train-labels-idx1-ubyte").long()
        test_images = read_idx(self.raw_dir / "t10k-images-idx3-ubyte").unsqueeze(1)
        test_labels = read_idx(self.raw_dir / "t10k-labels-idx1-ubyte").long()
        for split, found, expected in (
            ("training", (len(images), len(labels)), spec.train_size),
            ("test", (len(test_images), len(test_labels)), spec.test_size),
        ):
            if found != (expected, expected):
                raise DataFileError(
                    f"Expected {expected} {split} images and labels of {spec.title} in {self.raw_dir}, "
                    f"found {found[0]} and {found[1]}."
                )
        order = torch.randperm(spec.train_size, generator=torch.Generator().manual_seed(self.seed))
        self.val_indices, self.train_indices = (
            order[: self.val_size],
            order[self.val_size :],
        )
        self.data_train = TensorBatchDataset(images[self.train_indices], labels[self.train_indices])
        self.data_val = TensorBatchDataset(images[self.val_indices], labels[self.val_indices])
        self.data_test = TensorBatchDataset(test_images, test_labels)
        # Fitted on the training split only; a checkpoint's statistics replace these in load_state_dict.
        self.standardizer.fit(self.data_train.images)
        if self.on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            for dataset in (self.data_train, self.data_val, self.data_test):
                dataset.images, dataset.labels = dataset.images.to(device), dataset.labels.to(device)

    def _loader(self, dataset: TensorBatchDataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("MNISTDataModule.setup() must run before the dataloaders are requested.")
        pin = self.pin_memory
        if pin is None:
            pin = (
                self.trainer is not None and self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
            )
        pin = pin and dataset.images.device.type == "cpu"  # tensors already on the GPU need no pinning
        # Every loader has its own generator, so creating one never draws from the global RNG that
        # dropout and augmentation use (which would make a resumed run draw differently).
        generator = torch.Generator().manual_seed(self.seed)
        sampler: Sampler[int] | None = ResumableRandomSampler(dataset, generator) if shuffle else None
        if not shuffle and self.trainer is not None and self.trainer.world_size > 1:
            # Lightning's default DistributedSampler pads the shards to equal length by repeating images,
            # which would count those twice in val/test metrics whenever the processes don't divide the set.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=generator,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.data_train, self.batch_size, shuffle=True)
        self._train_sampler = loader.sampler if isinstance(loader.sampler, ResumableRandomSampler) else None
        single_process = self.trainer is None or self.trainer.world_size == 1
        if self._train_sampler is not None and self._restart_position and single_process:
            self._train_sampler.restart_from(self._restart_position)
            # Lightning can't see this restore, and would warn that resuming mid-epoch is unreliable.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        self._restart_position = {}
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        images = images.float()
        if self.trainer is not None and self.trainer.training:
            epoch, done = self._trained
            self._trained = (
                self.trainer.current_epoch,
                done + 1 if epoch == self.trainer.current_epoch else 1,
            )
            if self.augmenter.active:
                images = self.augmenter(images)
        return self.standardizer(images), labels

    def state_dict(self) -> dict[str, Any]:
        # Saved in every checkpoint, so eval and predict standardize exactly as training did, and a
        # resumed run continues the interrupted epoch's data order where it stopped.
        state: dict[str, Any] = {"standardizer": self.standardizer.state_dict()}
        if self._train_sampler is not None and self.trainer is not None:
            epoch, done = self._trained
            finished = epoch != self.trainer.current_epoch or done >= self.trainer.num_training_batches
            state["train_position"] = self._train_sampler.position(done * self.batch_size, finished)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.standardizer.load_state_dict(state_dict["standardizer"])
        self._restart_position = state_dict.get("train_position", {})
