"""The network and the LightningModule: shapes, gradients, validation, checkpoints without pickles."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_template.models.classifier import ClassifierModule, build_network, network_config
from lightning_template.models.mlp import MLP


def test_mlp_forward_backward_and_size() -> None:
    net = MLP()
    x = torch.randn(8, 1, 28, 28)
    logits = net(x)
    assert logits.shape == (8, 10)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    # The tutorial's 784-64-32-10: (784*64 + 64) + (64*32 + 32) + (32*10 + 10) parameters.
    assert sum(p.numel() for p in net.parameters()) == 52_650


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_mlp_options(activation: str) -> None:
    net = MLP(hidden_sizes=[32, 16, 8], activation=activation, dropout=0.3, batch_norm=True)
    net.train()
    assert net(torch.randn(4, 784)).shape == (4, 10)
    assert any(isinstance(m, torch.nn.Dropout) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"hidden_sizes": []}, "hidden_sizes"),
        ({"hidden_sizes": [64, 0]}, "hidden_sizes"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"activation": "swish2"}, "activation"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        MLP(**kwargs)


def test_network_config_round_trip_and_refuses_non_modules() -> None:
    net = MLP(hidden_sizes=[16], activation="tanh")
    config = network_config(net)
    assert config["_target_"] == "lightning_template.models.mlp.MLP"
    rebuilt = build_network(config)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(3, 784)
    assert torch.equal(rebuilt(x), net(x))
    with pytest.raises(ValueError, match=r"not an nn\.Module"):
        build_network({"_target_": "os.system", "command": "echo unsafe"})


def _random_batches(n: int = 4, batch: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(n)
    data = TensorDataset(
        torch.randn(n * batch, 1, 28, 28, generator=g), torch.randint(0, 10, (n * batch,), generator=g)
    )
    return DataLoader(data, batch_size=batch)


@pytest.mark.parametrize(
    "scheduler",
    [
        None,
        {
            "scheduler": functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=2),
            "interval": "epoch",
        },
        {
            "scheduler": functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01),
            "interval": "step",
        },
        {
            "scheduler": functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=1),
            "interval": "epoch",
            "monitor": "val/loss",
        },
    ],
)
def test_module_trains_and_checkpoint_loads_with_weights_only(tmp_path: Path, scheduler: dict | None) -> None:
    module = ClassifierModule(
        MLP(hidden_sizes=[16]), optimizer=functools.partial(torch.optim.Adam, lr=1e-3), scheduler=scheduler
    )
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=_random_batches(), val_dataloaders=_random_batches(2))
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"} <= set(trainer.callback_metrics)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    # Safe to load: nothing but tensors and plain data inside (torch's weights_only unpickler).
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["net"]["_target_"] == "lightning_template.models.mlp.MLP"
    restored = ClassifierModule.load_from_checkpoint(path, weights_only=True)
    x = torch.randn(5, 1, 28, 28)
    module.eval()
    restored.eval()
    assert torch.equal(restored(x), module(x))


@pytest.mark.parametrize("smoothing", [1.0, -0.1])
def test_module_rejects_bad_label_smoothing(smoothing: float) -> None:
    with pytest.raises(ValueError, match=r"model\.label_smoothing must be in \[0, 1\), got "):
        ClassifierModule(MLP(), label_smoothing=smoothing)


def test_module_needs_a_network_that_describes_itself() -> None:
    with pytest.raises(TypeError, match=r"Linear has no `config` dict of its constructor arguments"):
        ClassifierModule(torch.nn.Linear(784, 10))


def test_module_without_optimizer_explains_itself() -> None:
    module = ClassifierModule(MLP())
    with pytest.raises(RuntimeError, match="optimizer"):
        module.configure_optimizers()
