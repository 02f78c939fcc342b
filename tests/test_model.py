"""The networks and the ClassifierModule: shapes, checks on their settings, checkpoints that stand alone."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_template.checkpoints import load_checkpoint
from lightning_template.errors import UserError
from lightning_template.models.classifier import ClassifierModule
from lightning_template.models.cnn import CNN
from lightning_template.models.mlp import MLP

from tests.conftest import MNIST_SPEC

MLP_CONFIG = {"_target_": "lightning_template.models.mlp.MLP", "hidden_sizes": [64, 32]}


def test_mlp_is_the_tutorials_784_64_32_10() -> None:
    net = MLP(input_shape=[1, 28, 28], num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    wide = MLP([3, 48, 40], 3, hidden_sizes=[128, 64, 32], dropout=0.2, batch_norm=True)
    assert wide(torch.randn(5, 3, 48, 40)).shape == (5, 3)  # any C x H x W, flattened


def test_cnn_takes_images_and_gives_logits() -> None:
    assert CNN([1, 28, 28], 10)(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert CNN([3, 48, 36], 4)(torch.randn(2, 3, 48, 36)).shape == (2, 4)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"hidden_sizes": []}, "model.net.hidden_sizes"),
        ({"hidden_sizes": [64, 0]}, "model.net.hidden_sizes"),
        ({"dropout": 1.5}, "model.net.dropout"),
    ],
)
def test_bad_network_settings_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        MLP([1, 28, 28], 10, **kwargs)


def test_module_standardizes_raw_pixels_with_its_own_buffers() -> None:
    model = ClassifierModule(MLP_CONFIG, spec=MNIST_SPEC).eval()
    model.mean.fill_(33.0)
    model.std.fill_(78.0)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.allclose(model(images), model.net((images.float() - 33.0) / 78.0))


def test_checkpoint_alone_rebuilds_the_model_without_unpickling_code(tmp_path: Path) -> None:
    model = ClassifierModule(MLP_CONFIG, spec=MNIST_SPEC, optimizer=partial(torch.optim.Adam, lr=1e-3)).eval()
    model.mean.fill_(33.0)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    torch.save(checkpoint, tmp_path / "model.ckpt")
    assert torch.load(tmp_path / "model.ckpt", weights_only=True)["hyper_parameters"]["net"] == MLP_CONFIG
    loaded = load_checkpoint(tmp_path / "model.ckpt").eval()
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(loaded(images), model(images))


def test_bad_checkpoints_get_one_paragraph(tmp_path: Path) -> None:
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.ckpt")
    torch.save({"hyper_parameters": {"net": MLP_CONFIG}, "code": partial(print)}, tmp_path / "pickled.ckpt")
    for name, message in (
        ("missing.ckpt", "is not a file"),
        ("corrupt.ckpt", "damaged or not a PyTorch checkpoint"),
        ("foreign.ckpt", "not written by this template"),
        ("pickled.ckpt", "holds Python objects besides tensors"),
    ):
        with pytest.raises(UserError, match=message):
            load_checkpoint(tmp_path / name)
    with pytest.raises(UserError, match=r"ckpt_path=None is not a file: pass ckpt_path=<run dir>"):
        load_checkpoint(None)


def test_the_network_target_must_be_a_module() -> None:
    with pytest.raises(UserError, match=r"model\.net\._target_"):
        ClassifierModule({"_target_": "os.system", "command": "echo hacked"})


@pytest.mark.parametrize("lr", [0, -1.0, "fast"])
def test_a_bad_learning_rate_fails_before_any_data_is_read(lr: object) -> None:
    with pytest.raises(UserError, match=r"optimizer\.lr"):
        ClassifierModule(MLP_CONFIG, spec=MNIST_SPEC, optimizer=partial(torch.optim.Adam, lr=lr))


def test_label_smoothing_is_checked() -> None:
    with pytest.raises(UserError, match=r"model\.label_smoothing"):
        ClassifierModule(MLP_CONFIG, spec=MNIST_SPEC, label_smoothing=1.0)
