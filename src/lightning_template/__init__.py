"""A PyTorch Lightning + Hydra project template: an MNIST MLP classifier driven by config."""
