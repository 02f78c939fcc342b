"""The in-memory pipeline: whole batches cut from uint8 tensors, converted on the device."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence, Sized
from typing import Any

import torch
import torch.nn.functional as F

NORMALIZE_MODES = ("global", "per_pixel", "none")


class TensorBatchDataset(torch.utils.data.Dataset):
    """Images and labels held in memory; the DataLoader fetches a whole batch with one indexing op."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels.")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # DataLoader calls this with the sampler's whole batch of indices (any sampler, DDP's included).
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.labels[index]


class ResumableRandomSampler(torch.utils.data.RandomSampler):
    """The DataLoader's usual shuffle, able to restart part-way into an epoch after a resume.

    It draws from the DataLoader's own generator exactly as `shuffle=True` does, so a fresh run's order is
    unchanged; `position` and `restart_from` carry that generator through a checkpoint. Under DDP,
    Lightning swaps it for a DistributedSampler, which reshuffles per epoch but restarts epochs from
    their beginning.
    """

    def __init__(self, data_source: Sized, generator: torch.Generator) -> None:
        super().__init__(data_source, generator=generator)
        self.generator: torch.Generator = generator
        self._epoch_state: torch.Tensor | None = None  # the generator when this epoch's order was drawn
        self._restart: tuple[torch.Tensor, int] | None = None

    def __iter__(self) -> Iterator[int]:
        skip = 0
        if self._restart is not None:
            state, skip = self._restart
            self._restart = None
            self.generator.set_state(state)
        self._epoch_state = self.generator.get_state()
        return itertools.islice(super().__iter__(), skip, None)

    def position(self, samples_done: int, epoch_finished: bool) -> dict[str, Any]:
        """Where a resumed run must pick up: a generator state and how many of its samples were trained on."""
        if self._epoch_state is None:
            return {}
        if not epoch_finished:
            return {"generator_state": self._epoch_state, "samples_done": samples_done}
        following = torch.Generator()
        following.set_state(self.generator.get_state())
        # A DataLoader draws one int64 from its generator (its base seed) before each epoch's order.
        torch.empty((), dtype=torch.int64).random_(generator=following)
        return {"generator_state": following.get_state(), "samples_done": 0}

    def restart_from(self, position: dict[str, Any]) -> None:
        """Make the next epoch continue from a saved `position` instead of drawing a fresh order."""
        if position:
            self._restart = (position["generator_state"], int(position["samples_done"]))


def keep_batch(batch: Any) -> Any:
    """Collate function for batches that `__getitems__` already assembled."""
    return batch


class Standardizer:
    """StandardScaler for uint8 images, fitted once on the training split and applied on the device."""

    def __init__(self, mode: str = "global") -> None:
        if mode not in NORMALIZE_MODES:
            raise ValueError(f"data.normalize must be one of {list(NORMALIZE_MODES)}, got {mode!r}.")
        self.mode = mode
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self._per_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def fit(self, images: torch.Tensor, chunk: int = 8192) -> Standardizer:
        """Compute the statistics from raw uint8 images (N, ...) exactly, in float64."""
        if self.mode == "none":  # only rescale to [0, 1]
            self._set(torch.tensor(0.0), torch.tensor(255.0))
            return self
        n = len(images)
        if self.mode == "global":
            # A histogram of the 256 possible values gives the exact moments at a fraction of the cost.
            counts = torch.bincount(images.reshape(-1), minlength=256).double()
            values = torch.arange(256, dtype=torch.float64)
            total = counts.sum()
            mean = (counts * values).sum() / total
            std = ((counts * (values - mean) ** 2).sum() / total).sqrt()
            self._set(mean.float(), (std if std > 0 else torch.tensor(1.0)).float())
            return self
        flat = images.reshape(n, -1)
        total = torch.zeros(flat.shape[1], dtype=torch.float64)
        total_sq = torch.zeros(flat.shape[1], dtype=torch.float64)
        for start in range(0, n, chunk):
            part = flat[start : start + chunk].double()
            total += part.sum(0)
            total_sq += part.square().sum(0)
        mean = total / n
        std = (total_sq / n - mean**2).clamp_min(0.0).sqrt()
        std[std < 1e-8] = 1.0  # like StandardScaler: constant pixels are centred, not scaled
        self._set(mean.reshape(images.shape[1:]).float(), std.reshape(images.shape[1:]).float())
        return self

    def _set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean, self.std = mean, std
        self._per_device.clear()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Standardize a float or uint8 batch (B, *image_shape) on whatever device it is on."""
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardizer.fit (or load_state_dict) must run before it is applied.")
        stats = self._per_device.get(images.device)
        if stats is None:
            stats = (
                self.mean.to(images.device),
                self.std.reciprocal().to(images.device),
            )
            self._per_device[images.device] = stats
        mean, inv_std = stats
        return (images.float() - mean) * inv_std

    def state_dict(self) -> dict[str, Any]:
        return {"normalize": self.mode, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("normalize") not in NORMALIZE_MODES:
            raise ValueError(f"Checkpoint holds unknown normalization {state.get('normalize')!r}.")
        self.mode = state["normalize"]
        self._set(state["mean"], state["std"])


class RandomDistortion:
    """Batched on-device augmentation: a random affine map (and optional elastic warp) per image."""

    def __init__(
        self,
        rotate_degrees: float = 0.0,
        translate_px: float = 0.0,
        scale: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
    ) -> None:
        if not 0 <= rotate_degrees <= 180:
            raise ValueError(f"data.augment.rotate_degrees must be in [0, 180], got {rotate_degrees!r}.")
        if translate_px < 0:
            raise ValueError(f"data.augment.translate_px must be >= 0, got {translate_px!r}.")
        if not 0 <= scale < 1:
            raise ValueError(f"data.augment.scale must be in [0, 1), got {scale!r}.")
        if elastic_alpha < 0 or elastic_sigma <= 0:
            raise ValueError(
                f"data.augment.elastic_alpha must be >= 0 and elastic_sigma > 0, got {elastic_alpha!r} "
                f"and {elastic_sigma!r}."
            )
        self.rotate = math.radians(float(rotate_degrees))
        self.translate_px = float(translate_px)
        self.scale = float(scale)
        self.elastic_alpha = float(elastic_alpha)
        self.elastic_sigma = float(elastic_sigma)

    @property
    def active(self) -> bool:
        return bool(self.rotate or self.translate_px or self.scale or self.elastic_alpha)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Warp raw float images (B, C, H, W); uncovered pixels become 0, the background."""
        b, _, h, w = images.shape
        rand = torch.rand(b, 4, device=images.device) * 2 - 1
        angle = rand[:, 0] * self.rotate
        zoom = 1 + rand[:, 1] * self.scale
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # affine_grid works in [-1, 1] coordinates, where one pixel is 2 / size.
        tx = rand[:, 2] * self.translate_px * 2 / w
        ty = rand[:, 3] * self.translate_px * 2 / h
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        if self.elastic_alpha:
            grid = grid + self._elastic_field(b, h, w, images.device)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _elastic_field(self, b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Smooth random displacements (elastic distortion, Simard et al. 2003), in grid coordinates.

        Random offsets at control points about 2 * elastic_sigma pixels apart, spread over the image
        with Gaussian weights of width elastic_sigma and scaled so the largest is elastic_alpha pixels:
        Gaussian-smoothed noise, computed with two small matrix products instead of a convolution.
        """
        points = max(2, round(max(h, w) / (2 * self.elastic_sigma)) + 1)
        coarse = torch.rand(b, 2, points, points, device=device) * 2 - 1
        rows, cols = self._spread(h, points, device), self._spread(w, points, device)
        field = rows @ coarse @ cols.T  # (b, 2, h, w)
        field = field / field.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        scale = torch.tensor([2 / w, 2 / h], device=device) * self.elastic_alpha
        return field.permute(0, 2, 3, 1) * scale

    def _spread(self, size: int, points: int, device: torch.device) -> torch.Tensor:
        """(size, points) Gaussian weights from evenly spaced control points to every pixel."""
        pixel = torch.arange(size, device=device, dtype=torch.float32).unsqueeze(1)
        centre = torch.linspace(0, size - 1, points, device=device).unsqueeze(0)
        return torch.exp(-((pixel - centre) ** 2) / (2 * self.elastic_sigma**2))
