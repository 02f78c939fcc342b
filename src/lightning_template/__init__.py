"""A PyTorch Lightning + Hydra project template: an MNIST MLP classifier driven by config."""

__version__ = "0.1.0"
