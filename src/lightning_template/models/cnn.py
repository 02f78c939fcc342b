"""A small LeNet-style convolutional net: the second network of the `model` group (`model=cnn`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_template.models.mlp import ACTIVATIONS


class CNN(nn.Module):
    """Blocks of convolution, activation and 2x2 max-pooling, then dense layers: LeNet-5 by default."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        channels: Sequence[int] = (6, 16),
        kernel_size: int = 5,
        hidden_sizes: Sequence[int] = (120, 84),
        num_classes: int = 10,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        conv = [int(c) for c in channels]
        hidden = [int(h) for h in hidden_sizes]
        if int(in_channels) < 1 or int(image_size) < 1:
            raise ValueError(
                f"CNN in_channels and image_size must be positive integers, got {in_channels!r} and {image_size!r}."
            )
        if not conv or any(c < 1 for c in conv):
            raise ValueError(
                f"CNN channels must be a non-empty list of positive integers, got {list(channels)!r}."
            )
        if int(image_size) >> len(conv) < 1:
            raise ValueError(
                f"CNN channels={conv} asks for {len(conv)} 2x2 poolings, which a {image_size}-pixel image cannot "
                f"take: use at most {int(image_size).bit_length() - 1} entries."
            )
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"CNN kernel_size must be an odd positive integer, got {kernel_size!r}.")
        if any(h < 1 for h in hidden):
            raise ValueError(f"CNN hidden_sizes must be positive integers, got {list(hidden_sizes)!r}.")
        if int(num_classes) < 2:
            raise ValueError(f"CNN num_classes must be at least 2, got {num_classes!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"CNN activation {activation!r} is not one of {sorted(ACTIVATIONS)}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"CNN dropout must be in [0, 1), got {dropout!r}.")

        # Plain values only: ClassifierModule stores this in checkpoints to rebuild the network.
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "image_size": int(image_size),
            "channels": conv,
            "kernel_size": int(kernel_size),
            "hidden_sizes": hidden,
            "num_classes": int(num_classes),
            "activation": str(activation),
            "dropout": float(dropout),
        }
        layers: list[nn.Module] = []
        width, size = int(in_channels), int(image_size)
        for out in conv:
            # "Same" padding, so only the poolings shrink the image.
            layers += [nn.Conv2d(width, out, int(kernel_size), padding=int(kernel_size) // 2)]
            layers += [ACTIVATIONS[activation](), nn.MaxPool2d(2)]
            width, size = out, size // 2
        layers.append(nn.Flatten())
        features = width * size * size
        for units in hidden:
            layers += [nn.Linear(features, units), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            features = units
        layers.append(nn.Linear(features, int(num_classes)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch of images (N, in_channels, image_size, image_size) to class logits."""
        return self.layers(x)
