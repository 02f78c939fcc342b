"""The tutorial's multilayer perceptron: a plain nn.Module with its sizes as arguments."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lightning_template.errors import UserError


def check_layers(hidden_sizes: Sequence[int], dropout: float) -> None:
    """Refuse sizes and dropout rates that would build a broken network."""
    if not hidden_sizes or any(not isinstance(h, int) or h < 1 for h in hidden_sizes):
        raise UserError(
            f"model.net.hidden_sizes must be a non-empty list of positive integers, got {hidden_sizes!r}."
        )
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model.net.dropout must be in [0, 1), got {dropout!r}.")


class MLP(nn.Module):
    """Dense layers over flattened images: the Keras tutorial's `Sequential` of `Dense` layers."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[int] = (64, 32),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        """`input_shape` (C, H, W) and `num_classes` come from the data, the rest from the config."""
        super().__init__()
        check_layers(list(hidden_sizes), dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden_sizes:
            layers.append(nn.Linear(width, size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of standardized images."""
        return self.layers(x)
