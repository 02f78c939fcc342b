"""Data augmentation on the device: a different random warp for every image of a batch."""

import math

import torch
import torch.nn.functional as F

from lightning_template.errors import UserError


class RandomWarp:
    """Random rotation, shift, zoom and elastic warp per image (0 = off); torchvision draws one per batch."""

    def __init__(
        self,
        rotate_degrees: float = 0.0,
        translate_px: float = 0.0,
        scale: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
    ) -> None:
        if not (0 <= rotate_degrees <= 180 and translate_px >= 0 and 0 <= scale < 1 and elastic_alpha >= 0):
            raise UserError(
                "data.augment: rotate_degrees must be in [0, 180], translate_px >= 0, scale in [0, 1) and "
                f"elastic_alpha >= 0; got {rotate_degrees!r}, {translate_px!r}, {scale!r}, {elastic_alpha!r}."
            )
        self.rotate, self.translate_px, self.scale = math.radians(rotate_degrees), translate_px, scale
        self.elastic_alpha, self.elastic_sigma = elastic_alpha, elastic_sigma
        self.active = bool(rotate_degrees or translate_px or scale or elastic_alpha)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Warp float images (B, C, H, W); pixels uncovered by the warp become 0, the background."""
        b, _, h, w = images.shape
        rand = torch.rand(b, 4, device=images.device) * 2 - 1
        angle, zoom = rand[:, 0] * self.rotate, 1 + rand[:, 1] * self.scale
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        tx = rand[:, 2] * self.translate_px * 2 / w  # 1 px: 2/size
        ty = rand[:, 3] * self.translate_px * 2 / h
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        if self.elastic_alpha:
            grid = grid + self.elastic_field(b, h, w, images.device)
        return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)

    def elastic_field(self, b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Smooth displacements of up to elastic_alpha pixels (Simard et al., 2003), by two matrix products."""
        points = max(2, round(max(h, w) / (2 * self.elastic_sigma)) + 1)
        coarse = torch.rand(b, 2, points, points, device=device) * 2 - 1
        field = self.spread(h, points, device) @ coarse @ self.spread(w, points, device).T  # (b, 2, h, w)
        field = field / field.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        return field.permute(0, 2, 3, 1) * torch.tensor([2 / w, 2 / h], device=device) * self.elastic_alpha

    def spread(self, size: int, points: int, device: torch.device) -> torch.Tensor:
        """(size, points) Gaussian weights from evenly spaced control points to every pixel."""
        pixel = torch.arange(size, device=device, dtype=torch.float32).unsqueeze(1)
        centre = torch.linspace(0, size - 1, points, device=device).unsqueeze(0)
        return torch.exp(-((pixel - centre) ** 2) / (2 * self.elastic_sigma**2))
