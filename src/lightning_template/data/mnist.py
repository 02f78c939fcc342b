"""MNISTDataModule: an MNIST-family dataset in memory as uint8, split, standardized and batched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, default_convert
from torchvision.datasets import KMNIST, MNIST, FashionMNIST
from torchvision.datasets.utils import extract_archive

from lightning_template.data.augment import RandomWarp
from lightning_template.errors import UserError

# torchvision's classes know each dataset's files, checksums and mirrors.
DATASETS = {"mnist": MNIST, "fashion_mnist": FashionMNIST, "kmnist": KMNIST}
NORMALIZE = ("global", "per_pixel", "none")


class InMemoryDataset(TensorDataset):
    """Tensors in memory; the DataLoader gets a whole batch with one indexing op per tensor."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)  # indexing with a tensor is twice as fast as with a list
        return tuple(tensor[index] for tensor in self.tensors)


def val_size(val_split: float, total: int) -> int:
    """Keras' validation_split (a fraction of the training images), or a count of them."""
    size = round(val_split * total) if isinstance(val_split, float) and 0 < val_split < 1 else val_split
    if isinstance(val_split, bool) or not isinstance(size, int) or not 0 < size < total:
        raise UserError(
            f"data.val_split must be a fraction in (0, 1) or a count from 1 to {total - 1}, got {val_split!r}."
        )
    return size


def fit_standardization(images: torch.Tensor, normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (C, H, W) of uint8 images: one value for all pixels, per pixel, or [0, 1]."""
    shape = images.shape[1:]
    if normalize == "none":
        return torch.zeros(shape), torch.full(shape, 255.0)
    if normalize == "global":  # from a histogram of the 256 values: exact, and 8x faster than float sums
        counts = torch.bincount(images.flatten(), minlength=256).double()
        values = torch.arange(256, dtype=torch.float64)
        mean = counts @ values / counts.sum()
        std = (counts @ (values - mean) ** 2 / counts.sum()).sqrt()
    else:
        sums = torch.zeros(2, *shape, dtype=torch.float64)
        for chunk in images.split(4096):  # float64 slices: exact sums without a 350 MB copy
            chunk = chunk.double()
            sums += torch.stack([chunk.sum(0), chunk.square().sum(0)])
        mean = sums[0] / len(images)
        std = (sums[1] / len(images) - mean**2).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, 1.0)  # constant pixels are centred, not scaled (as in StandardScaler)
    return mean.float().expand(shape).clone(), std.float().expand(shape).clone()


class MNISTDataModule(L.LightningDataModule):
    """MNIST, Fashion-MNIST or KMNIST: a seeded validation split, the official test set, fast batches."""

    def __init__(
        self,
        data_dir: str | Path = "data",
        dataset: str = "mnist",
        val_split: float = 5000,
        batch_size: int = 128,
        eval_batch_size: int = 2500,
        normalize: str = "global",
        augment: RandomWarp | None = None,
        seed: int = 42,
        num_workers: int = 0,
        pin_memory: bool = False,
        on_device: bool = False,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise UserError(f"data.dataset must be one of {list(DATASETS)}, got {dataset!r}.")
        if normalize not in NORMALIZE:
            raise UserError(f"data.normalize must be one of {list(NORMALIZE)}, got {normalize!r}.")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"data.{key} must be a positive integer, got {value!r}.")
        self.data_dir, self.dataset, self.val_split = Path(data_dir), dataset, val_split
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.normalize, self.augment, self.seed = normalize, augment or RandomWarp(), seed
        self.num_workers, self.pin_memory, self.on_device = num_workers, pin_memory, on_device
        self.data_train: InMemoryDataset | None = None

    def load(self, train: bool) -> Any:
        """torchvision's dataset, from the unpacked files; downloaded when neither they nor the .gz are there."""
        for archive in (self.data_dir / DATASETS[self.dataset].__name__ / "raw").glob("*.gz"):
            if not archive.with_suffix("").exists():  # the repository's .gz are not torchvision's own bytes
                extract_archive(str(archive))
        try:
            return DATASETS[self.dataset](self.data_dir, train=train, download=True)
        except (RuntimeError, OSError) as exc:
            folder = self.data_dir / DATASETS[self.dataset].__name__ / "raw"
            reason = " ".join(str(exc).split())  # one paragraph: torchvision's message spans several lines
            raise UserError(
                f"data.dataset={self.dataset}: its files in {folder} could not be read or downloaded ({reason}). "
                "Put the four .gz files there, or point paths.data_dir at a folder that holds "
                f"{folder.parent.name}/raw/."
            ) from exc

    def prepare_data(self) -> None:
        # Once per machine, before any process's setup: unpack or download only what is missing.
        dataset = DATASETS[self.dataset]
        raw = self.data_dir / dataset.__name__ / "raw"
        if not all((raw / Path(url).stem).exists() for url, _ in dataset.resources):
            self.load(train=True)

    def setup(self, stage: str) -> None:
        if self.data_train is not None:
            return
        train, test = self.load(train=True), self.load(train=False)
        images, labels = train.data.unsqueeze(1), train.targets  # (N, 1, 28, 28) uint8
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        n_val = val_size(self.val_split, len(labels))
        val, fit = order[:n_val], order[n_val:]
        self.data_train = InMemoryDataset(images[fit], labels[fit])
        self.data_val = InMemoryDataset(images[val], labels[val])
        self.data_test = InMemoryDataset(test.data.unsqueeze(1), test.targets)
        self.mean, self.std = fit_standardization(self.data_train.tensors[0], self.normalize)
        if self.on_device and self.trainer is not None:  # no copy per batch: the data lives on the GPU
            device = self.trainer.strategy.root_device
            for data in (self.data_train, self.data_val, self.data_test):
                data.tensors = tuple(tensor.to(device) for tensor in data.tensors)

    def loader(self, data: InMemoryDataset, batch_size: int, shuffle: bool) -> DataLoader:
        """Each process gets its own shard. The training order depends only on seed and epoch (Lightning
        calls set_epoch), so a resumed run shuffles like an uninterrupted one; evaluation counts every
        image once, also when the processes do not divide the set."""
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler_class = DistributedSampler if shuffle else UnrepeatedDistributedSampler
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler_class(data, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed),
            collate_fn=default_convert,  # the batch is assembled already by __getitems__
            generator=torch.Generator(),  # leaves the global generator to dropout and augmentation
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and not self.on_device,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.data_train is not None, "setup() comes first"
        return self.loader(self.data_train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.data_val, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.data_test, self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, torch.Tensor) or not (
            self.augment.active and self.trainer and self.trainer.training
        ):
            return batch  # the model's example input (summary, graph) passes through here too
        images, labels = batch
        return self.augment(images.float()), labels
