"""MNISTDataModule: find or unpack or download MNIST, verify it, split it, fit the standardization."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

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
    """MNIST held in memory as uint8 tensors; batches are standardized (and augmented) on the device."""

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
    ) -> None:
        super().__init__()
        self.val_size = resolve_val_split(val_split)
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
        return self.data_dir / "MNIST" / "raw"

    def prepare_data(self) -> None:
        missing = missing_files(self.raw_dir, MNIST_FILES)
        if missing:
            self._download(missing)
        ensure_idx_files(self.raw_dir, MNIST_FILES)

    def _download(self, missing: list[str]) -> None:
        put_here = (
            f"Put the four MNIST files ({', '.join(f + '.gz' for f in MNIST_FILES)}) in {self.raw_dir} "
            "(the template's git repository ships them in data/MNIST/raw/), or point data.data_dir at a "
            "folder that holds MNIST/raw/."
        )
        if not self.download:
            raise DataFileError(
                f"MNIST files {missing} are missing from {self.raw_dir} and data.download=false. {put_here}"
            )
        log.warning(
            "MNIST files %s are missing from %s: downloading them with torchvision.",
            missing,
            self.raw_dir,
        )
        try:
            from torchvision.datasets import MNIST

            MNIST(str(self.data_dir), train=True, download=True)
        except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError... when offline
            raise DataFileError(
                f"Downloading MNIST into {self.raw_dir} failed ({exc}); this machine may be offline. {put_here}"
            ) from exc

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        if any(not (self.raw_dir / name).exists() for name in MNIST_FILES):
            ensure_idx_files(self.raw_dir, MNIST_FILES)  # setup() called without prepare_data()
        images = read_idx(self.raw_dir / "train-images-idx3-ubyte").unsqueeze(1)  # (N, 1, 28, 28)
        labels = read_idx(self.raw_dir / "train-labels-idx1-ubyte").long()
        if len(images) != TRAIN_SIZE or len(labels) != TRAIN_SIZE:
            raise DataFileError(
                f"Expected {TRAIN_SIZE} training images and labels in {self.raw_dir}, found {len(images)} and {len(labels)}."
            )
        order = torch.randperm(TRAIN_SIZE, generator=torch.Generator().manual_seed(self.seed))
        self.val_indices, self.train_indices = (
            order[: self.val_size],
            order[self.val_size :],
        )
        self.data_train = TensorBatchDataset(images[self.train_indices], labels[self.train_indices])
        self.data_val = TensorBatchDataset(images[self.val_indices], labels[self.val_indices])
        self.data_test = TensorBatchDataset(
            read_idx(self.raw_dir / "t10k-images-idx3-ubyte").unsqueeze(1),
            read_idx(self.raw_dir / "t10k-labels-idx1-ubyte").long(),
        )
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
        sampler = ResumableRandomSampler(dataset, generator) if shuffle else None
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
