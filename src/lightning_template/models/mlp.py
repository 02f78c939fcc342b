"""The tutorial's multilayer perceptron: a plain nn.Module with its sizes as arguments."""

import math
from collections.abc import Sequence

import torch
from torch import nn

from lightning_template.errors import UserError


def dense_layers(
    width: int, hidden_sizes: Sequence[int], num_classes: int, dropout: float, batch_norm: bool = False
) -> nn.Sequential:
    """Flatten, Linear (BatchNorm), ReLU and Dropout per hidden size, then the logits; refuses bad sizes."""
    if not hidden_sizes or any(not isinstance(h, int) or h < 1 for h in hidden_sizes):
        raise UserError(f"model.net.hidden_sizes must be positive integers, got {list(hidden_sizes)}.")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model.net.dropout must be in [0, 1), got {dropout!r}.")
    layers: list[nn.Module] = [nn.Flatten()]
    for size in hidden_sizes:
        layers.append(nn.Linear(width, size, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers += [nn.ReLU(), nn.Dropout(dropout)]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


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
        self.layers = dense_layers(math.prod(input_shape), hidden_sizes, num_classes, dropout, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of standardized images."""
        return self.layers(x)
