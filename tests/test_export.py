"""Export: ONNX and TorchScript files that take raw pixels and compute what the checkpoint computes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from lightning_template.checkpoints import load_checkpoint
from lightning_template.errors import UserError
from lightning_template.export import export
from lightning_template.train import train

from tests.conftest import FAST, read_mnist

pytestmark = pytest.mark.xdist_group("test_export")  # one worker trains the module's checkpoint once


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A checkpoint as `train` writes it, trained once for this file."""
    run_dir = tmp_path_factory.mktemp("train")
    overrides = [f"paths.output_dir={run_dir}", f"paths.data_dir={mnist_dir}", "logger=none", "test=false"]
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        train(compose("train", [*overrides, *FAST]))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def check(checkpoint: Path, mnist_dir: Path) -> Callable[[Callable[[torch.Tensor], torch.Tensor]], None]:
    """Assert that a loaded export gives the checkpoint's probabilities for one image and for several."""
    model = load_checkpoint(checkpoint).eval()
    images = read_mnist(mnist_dir)[1][0][5000:5007]

    def assert_matches(run: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for batch in (images[:1], images):
            with torch.inference_mode():
                difference = (run(batch) - model(batch).softmax(dim=1)).abs().max()
            assert difference < 1e-5

    return assert_matches


def test_onnx_file_takes_uint8_batches_of_any_size(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, check: Callable, tmp_path: Path
) -> None:
    import onnxruntime

    path = export(make_cfg("export", [f"ckpt_path={checkpoint}", "format=onnx"]))
    assert path == tmp_path / "model.onnx"
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    check(lambda images: torch.from_numpy(session.run(None, {"images": images.numpy()})[0]))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # what deployments still load
def test_torchscript_file_goes_where_output_file_says(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, check: Callable, tmp_path: Path
) -> None:
    target = tmp_path / "deploy" / "digits.pt"
    path = export(
        make_cfg("export", [f"ckpt_path={checkpoint}", "format=torchscript", f"output_file={target}"])
    )
    assert path == target
    check(torch.jit.load(target))


def test_an_export_that_differs_from_pytorch_is_deleted(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, tmp_path: Path
) -> None:
    cfg = make_cfg("export", [f"ckpt_path={checkpoint}", "format=torchscript", "parity_tolerance=0"])
    with pytest.raises(UserError, match=r"computed other probabilities than PyTorch .* so it was deleted"):
        export(cfg)
    assert not (tmp_path / "model.torchscript.pt").exists()


def test_unknown_formats_and_missing_packages_say_what_to_do(
    make_cfg: Callable[..., DictConfig], checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match=r"format=tflite is not supported: use one of onnx, torchscript"):
        export(make_cfg("export", [f"ckpt_path={checkpoint}", "format=tflite"]))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(
        UserError, match=r'needs onnxruntime: pip install -e "\.\[export\]", or use format=torch'
    ):
        export(make_cfg("export", [f"ckpt_path={checkpoint}", "format=onnx"]))
