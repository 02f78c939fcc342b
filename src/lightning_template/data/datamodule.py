"""InMemoryDataModule: labelled images or table rows as tensors (in memory or mapped), split and batched."""

from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_convert

from lightning_template.data.augment import RandomWarp
from lightning_template.errors import UserError

NORMALIZE = {"image": ("global", "per_pixel", "none"), "table": ("per_feature", "none")}


@dataclass
class InputSpec:
    """The contract between data and model, saved in its checkpoint: eval, predict and export need no more."""

    kind: str  # image: uint8 pixels (C, H, W) | table: float32 features (F,)
    shape: list[int]
    dtype: str  # the inputs' torch dtype: uint8 | float32
    classes: list[str]  # one name per label, in label order
    features: list[str] | None = None  # a table's columns, in order
    mean: Tensor | None = None  # the standardization, fitted on the training split: (x - mean) / std
    std: Tensor | None = None

    def description(self) -> dict[str, Any]:
        """Everything but the statistics (which the model keeps as buffers): plain values for hparams."""
        return {key: value for key, value in asdict(self).items() if key not in ("mean", "std")}


class InMemoryDataset(Dataset):
    """A subset of examples by index; the DataLoader gets a whole batch with one indexing op per tensor."""

    def __init__(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> None:
        self.inputs, self.labels = inputs, labels
        self.indices = torch.arange(len(labels)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, indices: Tensor) -> "InMemoryDataset":
        """The same tensors, other examples: no copy."""
        return InMemoryDataset(self.inputs, self.labels, indices)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = self.indices[torch.as_tensor(indices, device=self.indices.device)]
        return self.inputs[index], self.labels[index]


def random_split(
    indices: Tensor, split: float, key: str, seed: int, folds: int | None = None, fold: int = 0
) -> tuple[Tensor, Tensor]:
    """A seeded split into (rest, part): a fraction of `indices` (like Keras' validation_split), a count, or a fold."""
    total = len(indices)
    order = indices[torch.randperm(total, generator=torch.Generator().manual_seed(seed))]
    size = round(split * total) if isinstance(split, float) and 0 < split < 1 else split
    if folds and folds > total:  # or a fold would be empty
        raise UserError(f"data.folds={folds} is more than the {total} training examples to split.")
    if not folds and (isinstance(split, bool) or not isinstance(size, int) or not 0 < size < total):
        raise UserError(f"{key} must be a fraction in (0, 1) or a count in [1, {total - 1}], got {split!r}.")
    part = order.tensor_split(folds)[fold] if folds else order[:size]
    return order[~torch.isin(order, part)], part  # the rest in the order drawn


def fit_standardization(inputs: Tensor, indices: Tensor, normalize: str) -> tuple[Tensor, Tensor]:
    """Mean and std of `inputs[indices]`: global, per pixel or feature, or none; read in 8 MB slices."""
    shape, pixels = inputs.shape[1:], inputs.dtype == torch.uint8
    if normalize == "none":
        return torch.zeros(shape), torch.full(shape, 255.0 if pixels else 1.0)
    sums = torch.zeros(2, *shape, dtype=torch.float64)
    counts = torch.zeros(256, dtype=torch.float64)
    for chunk in indices.sort().values.split(max(1, 2**23 // max(1, inputs[0].nbytes))):  # 8 MB at a time
        chunk = inputs[chunk]
        if normalize == "global":  # from a histogram of the 256 values: exact, and 8x faster than float sums
            counts += torch.bincount(chunk.flatten(), minlength=256)
        else:
            chunk = chunk.double()
            sums += torch.stack([chunk.sum(0), chunk.square().sum(0)])
    if normalize == "global":
        values = torch.arange(256, dtype=torch.float64)
        mean = counts @ values / counts.sum()
        std = (counts @ (values - mean) ** 2 / counts.sum()).sqrt()
    else:
        mean = sums[0] / len(indices)
        std = (sums[1] / len(indices) - mean**2).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, 1.0)  # constant inputs are centred, not scaled (as in StandardScaler)
    return mean.float().expand(shape).clone(), std.float().expand(shape).clone()


class InMemoryDataModule(L.LightningDataModule):
    """What every source shares; a source sets `kind` and implements `load()`, and setup() describes it in `spec`."""

    kind = "image"  # or "table": what the inputs are, so what normalization, augmentation and callbacks apply
    spec: InputSpec  # set by setup()

    def __init__(
        self,
        val_split: float = 5000,
        test_split: float = 0.2,
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
        # Saved in checkpoints by Lightning, with the class: eval tests on the same data (augment is for fitting).
        self.save_hyperparameters(ignore=["augment"], logger=False)
        self.hparams["_target_"] = f"{type(self).__module__}.{type(self).__qualname__}"
        if normalize not in NORMALIZE[self.kind]:
            raise UserError(f"data.normalize must be one of {list(NORMALIZE[self.kind])}, got {normalize!r}.")
        if augment is not None and augment.active and self.kind != "image":
            raise UserError(f"data.augment warps images; {self.kind} data takes none (data.augment=null).")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"data.{key} must be a positive integer, got {value!r}.")
        valid_folds = type(folds) is int and type(fold) is int and folds >= 2 and 0 <= fold < folds
        if (folds is not None or fold) and not valid_folds:  # data.fold alone, or data.folds=0, is no k-fold
            raise UserError(f"data.folds must be >= 2 and data.fold in [0, folds), got {folds!r}, {fold!r}.")
        self.val_split, self.test_split, self.folds, self.fold = val_split, test_split, folds, fold
        self.batch_size, self.eval_batch_size, self.normalize = batch_size, eval_batch_size, normalize
        self.augment, self.seed = augment or RandomWarp(), seed
        self.num_workers, self.pin_memory, self.on_device = num_workers, pin_memory, on_device
        self.data_train: InMemoryDataset | None = None

    def load(self) -> tuple[InMemoryDataset, InMemoryDataset | None, list[str], list[str] | None]:
        """Training and test examples (None: split from training), class and feature names; prepare_data has run."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if self.data_train is None:
            train, test, classes, features = self.load()
            if test is None:  # no test set of its own: a seeded split, drawn before validation's
                rest, part = random_split(train.indices, self.test_split, "data.test_split", self.seed)
                train, test = train.subset(rest), train.subset(part)
            fit, val = random_split(
                train.indices, self.val_split, "data.val_split", self.seed, self.folds, self.fold
            )
            self.data_train, self.data_val, self.data_test = train.subset(fit), train.subset(val), test
            mean, std = fit_standardization(train.inputs, fit, self.normalize)  # on the training split only
            shape, dtype = list(train.inputs.shape[1:]), str(train.inputs.dtype).removeprefix("torch.")
            self.spec = InputSpec(self.kind, shape, dtype, classes, features, mean, std)
        if self.on_device and self.trainer is not None:  # no copy per batch: the data lives on the GPU
            device = self.trainer.strategy.root_device
            to_device = cache(lambda tensor: tensor.to(device))  # the splits share tensors: each moves once
            for data in (self.data_train, self.data_val, self.data_test):
                data.inputs, data.labels, data.indices = map(
                    to_device, (data.inputs, data.labels, data.indices)
                )

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
        if isinstance(batch, Tensor) or not (self.augment.active and self.trainer and self.trainer.training):
            return batch  # the model's example input (summary, graph) passes through here too
        images, labels = batch
        return self.augment(images.float()), labels
