#!/usr/bin/env python
"""How close the template's training loop is to a plain PyTorch loop on the same data, model and batch.

Every row trains the same network on the same in-memory tensors with the same optimizer and batch
size. Each template epoch is followed by one epoch of a plain PyTorch loop written below (the floor
on this machine), so the two alternate (A B A B ...) and share whatever the machine is doing. The
rows add the template's features one at a time, so the table shows where the difference goes.

    make bench                                   # default config, batch 128, CPU
    python scripts/benchmark.py --batch-size 256 --model 256,128 --epochs 5
    python scripts/benchmark.py --device cuda    # when a GPU is present
"""

from __future__ import annotations

import os
import time


def _process_start() -> float:
    """Wall-clock time this process started (Linux: from /proc), else now."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return time.time()


PROCESS_START = _process_start()

import argparse  # noqa: E402  (imports are part of the start-up being measured)
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lightning_template.data.mnist import TRAIN_SIZE, MNISTDataModule, resolve_val_split  # noqa: E402
from lightning_template.runtime import silence_known_noise  # noqa: E402
from lightning_template.train import build_run  # noqa: E402


class PlainLoop:
    """The floor: a hand-written loop over the datamodule's own tensors, with the template's network,
    optimizer, batch size, device transfer and standardization."""

    def __init__(self, cfg: DictConfig, datamodule: MNISTDataModule, device: torch.device) -> None:
        assert datamodule.data_train is not None
        self.images = datamodule.data_train.images
        self.labels = datamodule.data_train.labels
        self.standardize = datamodule.standardizer
        self.batch_size = int(cfg.data.batch_size)
        self.device = device
        self.net = instantiate(cfg.model.net).to(device)
        self.optimizer = instantiate(cfg.optimizer)(self.net.parameters())
        self.generator = torch.Generator().manual_seed(0)

    def epoch(self, limit_batches: int | None = None) -> float:
        start = time.perf_counter()
        self.net.train()
        order = torch.randperm(len(self.labels), generator=self.generator)
        for index in order.split(self.batch_size)[:limit_batches]:
            x = self.images[index].to(self.device, non_blocking=True)
            y = self.labels[index].to(self.device, non_blocking=True)
            loss = F.cross_entropy(self.net(self.standardize(x.float())), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        _sync(self.device)
        return time.perf_counter() - start


class BareModule(L.LightningModule):
    """Lightning with nothing on top: no metrics, no self.log."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.net = instantiate(cfg.model.net)
        self.optimizer_factory = instantiate(cfg.optimizer)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())


@dataclass
class Measurements:
    template: list[float] = field(default_factory=list)  # training batches of an epoch
    plain: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    first_step_at: float | None = None


class Clock(L.Callback):
    """Times each epoch's training batches and validation pass, then runs one plain epoch."""

    def __init__(self, out: Measurements, device: torch.device, limit: int | None) -> None:
        self.out, self.device, self.limit = out, device, limit
        self.plain: PlainLoop | None = None  # set once the run's datamodule holds its tensors
        self.batch_start = self.last_end = self.val_start = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            _sync(self.device)
            self.batch_start = time.perf_counter()
            if self.out.first_step_at is None:
                self.out.first_step_at = time.time()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.last_end = time.perf_counter()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.device)
        self.val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.device)
        if not trainer.sanity_checking:
            self.out.validation.append(time.perf_counter() - self.val_start)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.device)
        self.out.template.append(self.last_end - self.batch_start)
        assert self.plain is not None
        self.out.plain.append(self.plain.epoch(self.limit))


class TestClock(L.Callback):
    """Times the test loop (batches and metrics), and separately the figures drawn after it."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.figure_seconds: list[float] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()
        self.seconds.append(self.end - self.start)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the template's callbacks (extra callbacks come last): their confusion matrix and
        # mistakes grid are drawn by now.
        self.figure_seconds.append(time.perf_counter() - self.end)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Each row: (name, config overrides, use BareModule). The first row is the template's default
# config; it runs first so that its first step also gives the start-up time.
QUIET = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]
# The default callbacks that only draw and time (TensorBoard images and graph, curves.png, epoch speed).
STORY_CALLBACKS = (
    "epoch_speed",
    "learning_curves",
    "validation_predictions",
    "test_mistakes",
    "confusion_matrix",
    "model_graph",
)
ROWS: list[tuple[str, list[str], bool]] = [
    ("template, default config (+ TensorBoard images, graph, curves.png, epoch speed)", [], False),
    (
        "Lightning, bare loop",
        ["logger=none", "callbacks=none", "+trainer.enable_checkpointing=false", *QUIET],
        True,
    ),
    (
        "+ ClassifierModule metrics/logging",
        ["logger=none", "callbacks=none", "+trainer.enable_checkpointing=false", *QUIET],
        False,
    ),
    ("+ TensorBoard logger", ["callbacks=none", "+trainer.enable_checkpointing=false", *QUIET], False),
    (
        "+ rich progress bar",
        [
            "callbacks=none",
            "+callbacks.rich_progress_bar._target_=lightning.pytorch.callbacks.RichProgressBar",
            "+callbacks.rich_progress_bar.refresh_rate=10",
            "+trainer.enable_checkpointing=false",
            "+trainer.enable_model_summary=false",
        ],
        False,
    ),
    (
        "+ checkpointing, model summary, LR monitor, interrupt/RNG state",
        [f"callbacks.{name}=null" for name in STORY_CALLBACKS],
        False,
    ),
]


def compose_cfg(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


def run_row(
    name: str, overrides: list[str], bare: bool, args: argparse.Namespace, workdir: Path
) -> tuple[Measurements, DictConfig, TestClock]:
    device = torch.device(args.device)
    common = [
        f"trainer.max_epochs={args.epochs}",
        f"data.batch_size={args.batch_size}",
        f"model.net.hidden_sizes=[{args.model}]",
        f"paths.data_dir={args.data_dir}",
        "trainer.accelerator=" + ("gpu" if device.type == "cuda" else "cpu"),
        "data.pin_memory=" + ("true" if device.type == "cuda" else "false"),
    ]
    if args.limit_batches:
        common += [
            f"+trainer.limit_train_batches={args.limit_batches}",
            f"+trainer.limit_val_batches={args.limit_batches}",
        ]
    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    cfg = compose_cfg([*common, *overrides], workdir / slug)
    out = Measurements()
    clock, tests = Clock(out, device, args.limit_batches), TestClock()
    run = build_run(cfg, extra_callbacks=[clock, tests])
    datamodule = run.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")  # fit() reuses these tensors, so both loops train on the same ones
    clock.plain = PlainLoop(cfg, datamodule, device)
    model = BareModule(cfg) if bare else run.model
    if bare:
        run.trainer.limit_val_batches = 0
    run.trainer.fit(model, datamodule=datamodule)
    if not bare and name.startswith("template"):
        run.trainer.test(model, datamodule=datamodule, verbose=False)
    return out, cfg, tests


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# Runs the entry point in a fresh interpreter and reports that process's own peak RSS (VmHWM), which,
# unlike getrusage(RUSAGE_CHILDREN), does not count the pages of this benchmark process it forked from.
_FULL_RUN = """
import atexit, runpy, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    print(f"PEAK_RSS_KB {kb}", file=sys.stderr)
atexit.register(_peak)
sys.argv = ["lightning_template.train", *sys.argv[1:]]
runpy.run_module("lightning_template.train", run_name="__main__")
"""


def full_run(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """The default `make train` (10 epochs + test) in a fresh process: wall time and peak RSS."""
    command = [
        sys.executable,
        "-c",
        _FULL_RUN,
        f"paths.data_dir={args.data_dir}",
        f"hydra.run.dir={workdir / 'full_run'}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    peak = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return {"wall_s": wall, "peak_rss_mb": int(peak[-1]) / 1024 if peak else float("nan")}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per row, each followed by a plain epoch (>= 3)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="64,32", help="hidden sizes of the MLP, comma separated")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw/")
    parser.add_argument("--out", default="logs/bench", help="where the JSON report goes")
    parser.add_argument("--no-full-run", action="store_true", help="skip the timed `make train` subprocess")
    parser.add_argument(
        "--limit-batches", type=int, default=None, help="train only this many batches per epoch (smoke test)"
    )
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error(f"--epochs {args.epochs}: need at least 3 epochs for a median and a range")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible")
    silence_known_noise()
    MNISTDataModule(data_dir=args.data_dir).prepare_data()

    results: dict[str, Any] = {"rows": []}
    with tempfile.TemporaryDirectory(prefix="lt-bench-") as tmp:
        workdir = Path(tmp)
        all_plain: list[float] = []
        for name, overrides, bare in ROWS:
            out, cfg, tests = run_row(name, overrides, bare, args, workdir)
            all_plain += out.plain
            row: dict[str, Any] = {
                "name": name,
                "epoch_s": summarize(out.template),
                "plain_epoch_s": summarize(out.plain),
                "ratio": statistics.median(out.template) / statistics.median(out.plain),
                "samples_per_s": samples_per_epoch(cfg, args.limit_batches) / statistics.median(out.template),
            }
            if out.validation:
                row["validation_s"] = summarize(out.validation)
            if tests.seconds:
                row["test_s"] = min(tests.seconds)
                row["test_figures_s"] = min(tests.figure_seconds)
            if out.first_step_at is not None and name.startswith("template"):
                results["startup_to_first_step_s"] = out.first_step_at - PROCESS_START
            results["rows"].append(row)
        results["plain"] = summarize(all_plain)
        results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if not args.no_full_run:
            results["full_default_run"] = full_run(args, workdir)
    results["setup"] = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "model": f"784-{args.model.replace(',', '-')}-10",
        "epochs_per_row": args.epochs,
        "limit_batches": args.limit_batches,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "cpu_count": os.cpu_count(),
    }
    report(results)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    path.write_text(json.dumps(results, indent=2))
    _console().print(f"Written to {path}", soft_wrap=True)
    return results


def samples_per_epoch(cfg: DictConfig, limit_batches: int | None) -> int:
    samples = TRAIN_SIZE - resolve_val_split(cfg.data.val_split)
    return min(samples, limit_batches * int(cfg.data.batch_size)) if limit_batches else samples


def _console() -> Console:
    """A console wide enough for the table even when the output goes to a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=150)


def report(results: dict[str, Any]) -> None:
    setup = results["setup"]
    table = Table(
        title=f"Training epoch, {setup['model']} MLP, batch {setup['batch_size']}, {setup['device']}, "
        f"{setup['torch_threads']} torch threads (median \\[min-max] of {setup['epochs_per_row']} epochs)",
        title_justify="left",
    )
    for column in ("loop", "epoch s", "x plain", "samples/s", "validation s", "test s"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    fmt: Callable[[dict[str, float]], str] = lambda s: f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]"  # noqa: E731
    table.add_row("plain PyTorch loop (floor)", fmt(results["plain"]), "1.00", "", "", "")
    for row in results["rows"][1:] + results["rows"][:1]:
        table.add_row(
            row["name"],
            fmt(row["epoch_s"]),
            f"{row['ratio']:.2f}",
            f"{row['samples_per_s']:,.0f}",
            f"{row['validation_s']['median']:.3f}" if "validation_s" in row else "",
            f"{row['test_s']:.3f}" if "test_s" in row else "",
        )
    console = _console()
    console.print(table)
    console.print(
        f"start-up to first training step: {results.get('startup_to_first_step_s', float('nan')):.2f} s"
    )
    default = results["rows"][0]
    if "test_figures_s" in default:
        console.print(
            f"test-time figures after the test loop (confusion matrix, mistakes grid): "
            f"{default['test_figures_s']:.3f} s"
        )
    console.print(f"peak RSS of this benchmark process: {results['peak_rss_mb']:.0f} MB")
    if "full_default_run" in results:
        full = results["full_default_run"]
        console.print(
            f"default run (10 epochs + test, fresh process): {full['wall_s']:.1f} s wall, "
            f"peak RSS {full['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
