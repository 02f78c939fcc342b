"""A LeNet-style convolutional net, the second option of the `model` group (`model=cnn`)."""

from collections.abc import Sequence

import torch
from torch import nn

from lightning_template.errors import UserError
from lightning_template.models.mlp import dense_layers


class CNN(nn.Module):
    """Blocks of 5x5 convolution, ReLU and 2x2 max-pooling, then dense layers: LeNet-5 by default."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (6, 16),
        hidden_sizes: Sequence[int] = (120, 84),
        dropout: float = 0.0,
    ) -> None:
        """`input_shape` (C, H, W) and `num_classes` come from the data, the rest from the config."""
        super().__init__()
        if len(input_shape) != 3:
            raise UserError(f"model=cnn needs images (C, H, W); these inputs have shape {list(input_shape)}.")
        layers: list[nn.Module] = []
        depth, height, width = input_shape
        for out in channels:
            layers += [nn.Conv2d(depth, out, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
            depth, height, width = out, height // 2, width // 2
        layers += dense_layers(depth * height * width, hidden_sizes, num_classes, dropout)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of standardized images (N, C, H, W)."""
        return self.layers(x)
