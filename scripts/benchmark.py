#!/usr/bin/env python
"""How close the template's training loop is to Lightning's bare loop and to a plain PyTorch loop.

Every row trains the same network with the same optimizer and batch size on the datamodule's own
tensors. After each of a row's epochs, one epoch of the plain PyTorch loop below runs (A B A B ...),
so each row has its own floor, measured in the same minutes. Since the machine's speed drifts, a
row's ratio to the bare Lightning loop is taken between the two rows' ratios to their plain epochs.

Start-up (process start to the first training step, against a bare `import lightning`) and the
full default run (`python -m lightning_template.train`: 10 epochs + test) are timed in fresh processes.

    make bench                                   # default config, batch 128
    python scripts/benchmark.py --batch-size 256 --epochs 5
    python scripts/benchmark.py --device cuda    # when a GPU is present
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table

import lightning_template.train as template
from lightning_template.data.mnist import MNISTDataModule


def now(device: torch.device) -> float:
    """perf_counter once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class PlainLoop:
    """The floor: a hand-written loop with the config's network, optimizer and batch size, over the
    datamodule's tensors, standardized with its mean and std."""

    def __init__(self, cfg: DictConfig, datamodule: Any, device: torch.device, limit: int | None) -> None:
        self.images, self.labels = datamodule.data_train.tensors
        self.mean, self.std = datamodule.mean.to(device), datamodule.std.to(device)
        self.net = instantiate(cfg.model.net).to(device)
        self.optimizer = instantiate(cfg.optimizer)(self.net.parameters())
        self.batch_size, self.device, self.limit = int(cfg.data.batch_size), device, limit
        self.generator = torch.Generator().manual_seed(0)

    def epoch(self) -> float:
        start = now(self.device)
        order = torch.randperm(len(self.labels), generator=self.generator)
        for index in order.split(self.batch_size)[: self.limit]:
            images = self.images[index].to(self.device, non_blocking=True)
            labels = self.labels[index].to(self.device, non_blocking=True)
            loss = F.cross_entropy(self.net((images.float() - self.mean) / self.std), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return now(self.device) - start


class BareModule(L.LightningModule):
    """Lightning with nothing on top: the same network, standardization and optimizer; no metrics, no logging."""

    def __init__(self, cfg: DictConfig, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net, self.optimizer_factory = instantiate(cfg.model.net), instantiate(cfg.optimizer)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self.net((images.float() - self.mean) / self.std), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())


class Clock(L.Callback):
    """Times each epoch's training batches, then runs one plain epoch; times each validation and test pass."""

    def __init__(self, cfg: DictConfig, device: torch.device, limit: int | None) -> None:
        self.cfg, self.device, self.limit = cfg, device, limit
        self.seconds: dict[str, list[float]] = {"epoch": [], "plain": [], "validation": [], "test": []}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # after the datamodule's setup: its tensors are there
            self.plain = PlainLoop(self.cfg, trainer.datamodule, self.device, self.limit)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if args[-1] == 0:  # batch_idx
            self.start = now(self.device)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if args[-1] + 1 == trainer.num_training_batches:  # the last one: validation comes next
            self.seconds["epoch"].append(now(self.device) - self.start)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds["plain"].append(self.plain.epoch())

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pass_start = now(self.device)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # before the checkpoint is saved (checkpoint callbacks go last)
            self.seconds["validation"].append(now(self.device) - self.pass_start)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pass_start = now(self.device)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds["test"].append(now(self.device) - self.pass_start)


QUIET = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
# name: (module, keep the logger, keep the callbacks)
ROWS = {
    "Lightning, bare loop": ("bare", False, False),
    "+ ClassifierModule (metrics, logging)": ("template", False, False),
    "+ TensorBoard logger": ("template", True, False),
    "template, default config": ("template", True, True),
}


def run_row(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, list[float]]:
    module, keep_logger, keep_callbacks = ROWS[name]
    device = torch.device(args.device)
    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    overrides = [
        f"paths.output_dir={workdir / slug}",
        f"paths.log_dir={workdir / 'logs'}",
        f"paths.data_dir={args.data_dir}",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"data.batch_size={args.batch_size}",
        f"data.pin_memory={str(device.type == 'cuda').lower()}",
    ]
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        if args.limit_batches:  # a smoke test: a few batches of --batch-size images in every loop
            for stage in ("train", "val", "test"):
                cfg.trainer[f"limit_{stage}_batches"] = args.limit_batches
            cfg.data.eval_batch_size = args.batch_size
        if not keep_logger:
            cfg.logger = None
        if not keep_callbacks:  # whatever entries the config has today
            cfg.callbacks = dict.fromkeys(cfg.get("callbacks") or {})
            cfg.trainer.update(QUIET)
            cfg.test = False
    clock = Clock(cfg, device, args.limit_batches)
    if module == "bare":
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        trainer = template.build_trainer(cfg, callbacks=[clock], limit_val_batches=0)
        trainer.fit(BareModule(cfg, datamodule.mean, datamodule.std), datamodule=datamodule)
        return clock.seconds
    trainers, build = [], template.build_trainer

    def with_clock(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
        trainers.append(build(cfg, **{**kwargs, "callbacks": [*kwargs.get("callbacks", []), clock]}))
        return trainers[-1]

    with mock.patch.object(template, "build_trainer", with_clock):
        template.train(cfg)  # test included when the config says so
    for _ in range(args.epochs - 1 if cfg.test else 0):  # more test passes, for a median
        trainers[0].test(trainers[0].lightning_module, datamodule=trainers[0].datamodule, verbose=False)
    return clock.seconds


# A fresh interpreter: `import lightning` alone, or `python -m lightning_template.train` that reports
# its first training step (and stops there with --first-step), or its peak RSS (VmHWM) when it ends.
CHILD = """
import os, sys, time
mode = sys.argv[1]
def since_start():
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # start time, clock ticks since boot
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
if mode == "--import":
    import lightning
    print("BENCH", since_start())
    sys.exit()
import runpy
import lightning as L
class FirstStep(L.Callback):
    def on_train_batch_start(self, *args):
        print("BENCH", since_start(), flush=True)
        if mode == "--first-step": os._exit(0)
sys.argv = ["lightning_template.train", *sys.argv[2:], "+callbacks.bench_first_step._target_=__main__.FirstStep"]
try:
    runpy.run_module("lightning_template.train", run_name="__main__")
finally:
    with open("/proc/self/status") as f:
        print("BENCH", next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024)
"""


def child(mode: str, args: argparse.Namespace, workdir: Path) -> tuple[float, list[float]]:
    """Run CHILD in `mode`: its wall seconds and the numbers it printed."""
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    overrides = [
        f"paths.data_dir={args.data_dir}",
        f"paths.log_dir={workdir / 'logs'}",
        f"trainer.accelerator={accelerator}",
    ]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, mode, *overrides], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"{mode} run failed:\n{result.stderr[-3000:]}")
    return wall, [float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("BENCH")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per row, each followed by a plain one")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw/")
    parser.add_argument("--out", default="logs/bench", help="where the JSON report goes")
    parser.add_argument("--no-full-run", action="store_true", help="skip the timed default run")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timing (6 processes)")
    parser.add_argument(
        "--limit-batches",
        type=int,
        help="batches per epoch and per pass, eval batches of --batch-size (smoke test)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error("--epochs: at least 3, for a median")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible")
    MNISTDataModule(data_dir=args.data_dir).prepare_data()

    results: dict[str, Any] = {"rows": {}}
    with tempfile.TemporaryDirectory(prefix="lt-bench-") as tmp:
        for name in ROWS:
            seconds = run_row(name, args, Path(tmp))
            ratios = [epoch / plain for epoch, plain in zip(seconds["epoch"], seconds["plain"], strict=True)]
            results["rows"][name] = {**seconds, "x_plain": statistics.median(ratios)}
        if not args.no_startup:
            startup: dict[str, list[float]] = {"import lightning": [], "first training step": []}
            for _ in range(3):
                startup["import lightning"] += child("--import", args, Path(tmp))[1]
                startup["first training step"] += child("--first-step", args, Path(tmp))[1]
            results["startup_s"] = startup
        if not args.no_full_run:
            wall, (_, peak_mb) = child("--full", args, Path(tmp))
            results["full_run"] = {"wall_s": wall, "peak_rss_mb": peak_mb}
    bare = results["rows"]["Lightning, bare loop"]["x_plain"]
    for row in results["rows"].values():
        row["x_bare"] = row["x_plain"] / bare
    device = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    results["setup"] = {
        **vars(args),
        "device_name": device,
        "torch": torch.__version__,
        "lightning": L.__version__,
    }
    report(results)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"bench_{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    path.write_text(json.dumps(results, indent=2))
    console().print(f"Written to {path}", soft_wrap=True)
    return results


def console() -> Console:
    """Wide enough for the table also when the output goes to a file or a pipe."""
    return Console() if Console().is_terminal else Console(width=150)


def report(results: dict[str, Any]) -> None:
    setup, rows, median = results["setup"], results["rows"], statistics.median
    table = Table(
        title=f"Training epoch (validation excluded), batch {setup['batch_size']}, {setup['device_name']}: "
        f"median \\[min-max] of {setup['epochs']} epochs",
        title_justify="left",
    )
    for column in ("loop", "epoch s", "x bare", "x plain", "validation s", "test s"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    plain = [s for row in rows.values() for s in row["plain"]]
    span = lambda s: f"{median(s):.3f} [{min(s):.3f}-{max(s):.3f}]" if s else ""  # noqa: E731
    bare = rows["Lightning, bare loop"]["x_plain"]
    table.add_row("plain PyTorch loop (floor)", span(plain), f"{1 / bare:.2f}", "1.00", "", "")
    for name, row in rows.items():
        ratios = f"{row['x_bare']:.2f}", f"{row['x_plain']:.2f}"
        table.add_row(name, span(row["epoch"]), *ratios, span(row["validation"]), span(row["test"]))
    out = console()
    out.print(table)
    default = rows["template, default config"]
    out.print(f"default config / bare Lightning loop: {default['x_bare']:.2f} (target <= 1.25)")
    out.print(
        f"default config: validation pass {median(default['validation']):.3f} s, test pass "
        f"{median(default['test']):.3f} s (median; target <= 0.05 s each)"
    )
    if "startup_s" in results:
        first, bare_import = (
            median(results["startup_s"][key]) for key in ("first training step", "import lightning")
        )
        out.print(
            f"start-up, fresh process: first training step {first:.2f} s, `import lightning` {bare_import:.2f} s, "
            f"difference {first - bare_import:.2f} s (target <= 0.5 s; medians of 3)"
        )
    if "full_run" in results:
        full = results["full_run"]
        out.print(
            f"full default run (10 epochs + test, fresh process): {full['wall_s']:.1f} s wall (target <= 25 s), "
            f"peak RSS {full['peak_rss_mb']:.0f} MB (target < 1024 MB)"
        )


if __name__ == "__main__":
    main()
