"""The tutorial's multilayer perceptron, as a plain nn.Module with its sizes as arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Module):
    """Dense layers over flattened images: the Keras tutorial's `Sequential` of `Dense` layers."""

    def __init__(
        self,
        input_dim: int = 784,
        hidden_sizes: Sequence[int] = (64, 32),
        num_classes: int = 10,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden_sizes]
        if int(input_dim) < 1:
            raise ValueError(f"MLP input_dim must be a positive integer, got {input_dim!r}.")
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(
                f"MLP hidden_sizes must be a non-empty list of positive integers, got {list(hidden_sizes)!r}."
            )
        if int(num_classes) < 2:
            raise ValueError(f"MLP num_classes must be at least 2, got {num_classes!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP activation {activation!r} is not one of {sorted(ACTIVATIONS)}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MLP dropout must be in [0, 1), got {dropout!r}.")

        # Plain values only: ClassifierModule stores this in checkpoints to rebuild the network.
        self.config: dict[str, Any] = {
            "input_dim": int(input_dim),
            "hidden_sizes": hidden,
            "num_classes": int(num_classes),
            "activation": str(activation),
            "dropout": float(dropout),
            "batch_norm": bool(batch_norm),
        }
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(input_dim)
        for size in hidden:
            layers.append(nn.Linear(width, size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = size
        layers.append(nn.Linear(width, int(num_classes)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch of images (any shape after the batch dim) to class logits."""
        return self.layers(x)
