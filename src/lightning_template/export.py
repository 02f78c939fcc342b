"""Export a checkpoint for deployment: `python -m lightning_template.export ckpt_path=... format=onnx|torchscript`."""

import logging
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from lightning_template.checkpoints import load_checkpoint
from lightning_template.errors import UserError, report_user_errors
from lightning_template.models.classifier import ClassifierModule

FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
INPUT_NAMES = {"image": "images", "table": "features"}  # the ONNX input, by the kind of data


def export_onnx(model: ClassifierModule, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """Write raw inputs -> probabilities as ONNX, any batch size; return the file as onnxruntime runs it."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (what torch.onnx exports with)
    except ImportError as exc:
        message = f'format=onnx needs {exc.name}: pip install -e ".[export]", or use format=torchscript.'
        raise UserError(message) from exc
    for logger in ("onnxscript", "onnx_ir"):  # their INFO lines narrate each graph optimization pass
        logging.getLogger(logger).setLevel(logging.WARNING)
    name = INPUT_NAMES[model.hparams["spec"]["kind"]]
    torch.onnx.export(
        nn.Sequential(model, nn.Softmax(dim=1)).eval(),
        (model.example_input_array,),  # two inputs: a batch of one would be fixed as a constant
        path,
        input_names=[name],
        dynamic_shapes=[{0: torch.export.Dim("batch")}],
        external_data=False,  # one self-contained file
        dynamo=True,
        verbose=False,
    )
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda inputs: torch.from_numpy(session.run(None, {name: inputs.numpy()})[0])


def export_torchscript(model: ClassifierModule, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """Write raw inputs -> probabilities as TorchScript, for LibTorch; return the file as loaded back."""
    traced = model.to_torchscript(method="trace")  # deprecated upstream, yet what LibTorch loads
    assert isinstance(traced, torch.jit.ScriptModule)  # one module, not a dict of them
    torch.jit.save(torch.jit.script(nn.Sequential(traced, nn.Softmax(dim=1)).eval()), path)
    return torch.jit.load(path)


def export(cfg: DictConfig) -> Path:
    """Write the checkpoint's model in `format`; only a file that computes what PyTorch computes is kept."""
    if cfg.format not in FILE_NAMES:
        raise UserError(f"format={cfg.format} is not supported: use one of {', '.join(FILE_NAMES)}.")
    model = load_checkpoint(cfg.get("ckpt_path")).eval()
    spec = model.hparams["spec"]
    path = Path(cfg.output_file or Path(cfg.paths.output_dir) / FILE_NAMES[cfg.format])
    path.parent.mkdir(parents=True, exist_ok=True)
    run = export_onnx(model, path) if cfg.format == "onnx" else export_torchscript(model, path)
    # Inputs like those the model will see: around the data's mean, with its spread, in its dtype.
    noise = torch.randn(cfg.parity_inputs, *model.mean.shape, generator=torch.Generator().manual_seed(0))
    inputs = model.mean + model.std * noise  # float32, as a table's features are
    if spec["dtype"] == "uint8":
        inputs = inputs.round().clamp(0, 255).to(torch.uint8)
    with torch.inference_mode():
        expected = model(inputs).softmax(dim=1)
        exported = torch.cat([run(inputs[:1]), run(inputs[1:])])  # two batch sizes: the batch is dynamic
    difference = float((exported - expected).abs().max())
    if not difference < cfg.parity_tolerance:  # NaN fails too
        path.unlink()
        raise UserError(
            f"The {cfg.format} file computed other probabilities than PyTorch ({difference:.3g} apart, more than "
            f"parity_tolerance={cfg.parity_tolerance:g}), so it was deleted; try the other format."
        )
    print(
        f"Exported {path} ({spec['dtype']} {spec['kind']} inputs); it matches PyTorch to {difference:.2g} on "
        f"{len(inputs)} inputs drawn from the training data's mean and standard deviation."
    )
    return path


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Command-line entry point."""
    with report_user_errors():
        export(cfg)


if __name__ == "__main__":
    main()
