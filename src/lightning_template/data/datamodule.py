"""InMemoryDataModule: labelled images in memory as uint8, split, standardized and batched, from any source."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, default_convert

from lightning_template.data.augment import RandomWarp
from lightning_template.errors import UserError

NORMALIZE = ("global", "per_pixel", "none")
Images = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W) and integer labels (N,)


class InMemoryDataset(TensorDataset):
    """Tensors in memory; the DataLoader gets a whole batch with one indexing op per tensor."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)  # indexing with a tensor is twice as fast as with a list
        return tuple(tensor[index] for tensor in self.tensors)


def split_size(split: float, total: int, key: str) -> int:
    """A fraction of `total` like Keras' validation_split, or a count."""
    size = round(split * total) if isinstance(split, float) and 0 < split < 1 else split
    if isinstance(split, bool) or not isinstance(size, int) or not 0 < size < total:
        raise UserError(
            f"{key} must be a fraction in (0, 1) or a count from 1 to {total - 1}, got {split!r}."
        )
    return size


def random_split(
    data: Images, split: float, key: str, seed: int, folds: int | None = None, fold: int = 0
) -> tuple[Images, Images]:
    """A seeded split of images and labels into (the rest, a part): `split` of them (a fraction or a count),
    or with `folds`, part number `fold` of that many (k-fold cross-validation)."""
    order = torch.randperm(len(data[1]), generator=torch.Generator().manual_seed(seed))
    if folds and folds > len(order):  # or a fold would be empty
        raise UserError(f"data.folds={folds} is more than the {len(order)} training images to split.")
    part = order.tensor_split(folds)[fold] if folds else order[: split_size(split, len(order), key)]
    rest = order[~torch.isin(order, part)]  # in the order drawn
    return (data[0][rest], data[1][rest]), (data[0][part], data[1][part])


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


class InMemoryDataModule(L.LightningDataModule):
    """Splits, standardization, batches and augmentation shared by every source, which implements `load()`."""

    classes: list[str]  # one name per label, in label order
    input_shape: list[int]  # (C, H, W) of one image, set by setup(): the network is built for it

    def __init__(
        self,
        val_split: float = 5000,
        folds: int | None = None,
        fold: int = 0,
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
        if normalize not in NORMALIZE:
            raise UserError(f"data.normalize must be one of {list(NORMALIZE)}, got {normalize!r}.")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"data.{key} must be a positive integer, got {value!r}.")
        valid_folds = type(folds) is int and type(fold) is int and folds >= 2 and 0 <= fold < folds
        if (folds is not None or fold) and not valid_folds:  # data.fold alone, or data.folds=0, is no k-fold
            raise UserError(
                f"data.folds must be >= 2 and data.fold in [0, data.folds), got {folds!r} and {fold!r}."
            )
        self.val_split, self.batch_size, self.eval_batch_size = val_split, batch_size, eval_batch_size
        self.folds, self.fold = folds, fold
        self.normalize, self.augment, self.seed = normalize, augment or RandomWarp(), seed
        self.num_workers, self.pin_memory, self.on_device = num_workers, pin_memory, on_device
        self.data_train: InMemoryDataset | None = None

    def load(self) -> tuple[Images, Images]:
        """The training and test images with their labels; sets `classes`."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if self.data_train is None:
            train, test = self.load()
            fit, val = random_split(train, self.val_split, "data.val_split", self.seed, self.folds, self.fold)
            self.data_train, self.data_val, self.data_test = (
                InMemoryDataset(*part) for part in (fit, val, test)
            )
            self.mean, self.std = fit_standardization(fit[0], self.normalize)  # the training split only
            self.input_shape = list(fit[0].shape[1:])
        if self.on_device and self.trainer is not None:  # no copy per batch: the data lives on the GPU
            device = self.trainer.strategy.root_device
            for data in (self.data_train, self.data_val, self.data_test):
                data.tensors = tuple(tensor.to(device) for tensor in data.tensors)

    def loader(self, data: InMemoryDataset, batch_size: int, shuffle: bool) -> DataLoader:
        """A shard per process, in an order set by seed and epoch only (a resumed run shuffles the same)."""
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
