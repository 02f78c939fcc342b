"""model=cnn: a second network in the same ClassifierModule, trained, checkpointed and evaluated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from lightning_template.eval import evaluate
from lightning_template.models.classifier import build_network, network_config
from lightning_template.models.cnn import CNN
from lightning_template.train import train


def test_cnn_forward_backward_and_size() -> None:
    net = CNN()
    logits = net(torch.randn(8, 1, 28, 28))
    assert logits.shape == (8, 10)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    # conv 1->6 and 6->16 (5x5), then 16*7*7 -> 120 -> 84 -> 10.
    expected = (25 * 6 + 6) + (6 * 25 * 16 + 16) + (784 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_cnn_sizes_are_arguments() -> None:
    net = CNN(in_channels=3, image_size=32, channels=[8, 16, 32], kernel_size=3, hidden_sizes=[], dropout=0.5)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)] == [8, 16, 32]
    assert CNN(hidden_sizes=[64], dropout=0.2, num_classes=26)(torch.randn(1, 1, 28, 28)).shape == (1, 26)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"channels": []}, "channels"),
        ({"channels": [6, 0]}, "channels"),
        ({"channels": [4] * 6}, r"6 2x2 poolings, which a 28-pixel image cannot take: use at most 4"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"hidden_sizes": [0]}, "hidden_sizes"),
        ({"dropout": 1.0}, "dropout"),
        ({"activation": "swish2"}, "activation"),
        ({"num_classes": 1}, "num_classes"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_cnn_rejects_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        CNN(**kwargs)


def test_cnn_is_rebuilt_from_its_config() -> None:
    net = CNN(channels=[4, 8], hidden_sizes=[16], activation="gelu")
    config = network_config(net)
    assert config["_target_"] == "lightning_template.models.cnn.CNN"
    rebuilt = build_network(config)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(rebuilt(x), net(x))


def test_model_cnn_trains_and_eval_reproduces_it_from_the_checkpoint(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg(
        "train",
        [
            "debug=fast",
            "model=cnn",
            "model.net.channels=[4,8]",
            "logger=none",
            "trainer.limit_test_batches=1.0",
        ],
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    checkpoint_path = tmp_path / "checkpoints" / "epoch_000.ckpt"
    saved = torch.load(checkpoint_path, weights_only=True)["hyper_parameters"]["net"]
    assert saved["_target_"] == "lightning_template.models.cnn.CNN" and saved["channels"] == [4, 8]

    eval_cfg = make_cfg("eval", [f"ckpt_path={checkpoint_path}", "logger=none"])
    assert evaluate(eval_cfg)["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-7)
