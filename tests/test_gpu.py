"""The GPU path: `make test-gpu` on a machine with CUDA; every test here skips cleanly without one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from lightning_template.checkpoints import load_checkpoint
from lightning_template.eval import evaluate
from lightning_template.train import train

from tests.conftest import run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: make test-gpu runs these on one"),
]
ONE_EPOCH = ["trainer=gpu", "trainer.max_epochs=1", "logger=none", "callbacks.progress_bar=null"]


@pytest.mark.parametrize(
    "setting", ["trainer.precision=32-true", "trainer.precision=bf16-mixed", "data.on_device=true"]
)
def test_one_epoch_on_a_gpu_learns_evaluates_alike_and_predicts_on_a_cpu(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, setting: str
) -> None:
    metrics = train(make_cfg("train", [*ONE_EPOCH, setting]))
    assert metrics["test/acc"] > 0.9  # one epoch of the default MLP on MNIST, seed 42
    best = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    evaluated = evaluate(make_cfg("eval", [f"ckpt_path={best}", "trainer=gpu", "logger=none", setting]))
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    model = load_checkpoint(best).eval()  # on the CPU, from a checkpoint trained on the GPU
    images = torch.randint(0, 256, (64, *model.hparams["input_shape"]), dtype=torch.uint8)
    with torch.inference_mode():
        on_cpu, on_gpu = model(images), model.cuda()(images.cuda()).cpu()
    assert torch.allclose(on_cpu, on_gpu, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP on CUDA needs two GPUs")
def test_ddp_on_two_gpus_trains_and_tests(tmp_path: Path, mnist_dir: Path) -> None:
    args = ["trainer=ddp", "trainer.devices=2", "debug=fast", f"paths.data_dir={mnist_dir}"]
    result = run_cli("lightning_template.train", [*args, f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc" in result.stdout
