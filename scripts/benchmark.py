#!/usr/bin/env python
"""The template's training loop against Lightning's bare loop and a plain PyTorch loop; start-up.

Every row trains the same network, optimizer and batch size on the datamodule's tensors. Each of its
epochs is followed by one of a plain PyTorch loop (A B A B ...): a floor measured in the same minutes.
The machine's speed drifts, so rows are compared by their ratios to their own plain epochs. Start-up
and the full default run (`python -m lightning_template.train`) are timed in fresh processes.

    make bench                                   # default config, batch 128
    python scripts/benchmark.py --batch-size 256 --epochs 5 --no-full-run
    python scripts/benchmark.py --device cuda    # when a GPU is present
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import ArgumentParser, RawDescriptionHelpFormatter
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


def now(device: torch.device) -> float:
    """perf_counter once the device has done its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class BareModule(L.LightningModule):
    """Lightning with nothing on top: the same network, standardization and optimizer."""

    def __init__(self, cfg: DictConfig, datamodule: Any) -> None:
        super().__init__()
        self.net = instantiate(cfg.model.net, input_shape=datamodule.spec.shape, num_classes=10)
        self.optimizer_factory = instantiate(cfg.optimizer)
        self.register_buffer("mean", datamodule.spec.mean)
        self.register_buffer("std", datamodule.spec.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images.float() - self.mean) / self.std)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self(images), labels)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self(batch[0])  # the network alone: Lightning's floor for a validation or test pass

    test_step = validation_step

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())


class Clock(L.Callback):
    """Times each epoch's training batches, then runs one epoch of the floor: a plain PyTorch loop with
    the config's network and optimizer on the datamodule's tensors. Times each validation and test pass."""

    def __init__(self, cfg: DictConfig, args: argparse.Namespace) -> None:
        self.cfg, self.device, self.limit = cfg, torch.device(args.device), args.limit_batches
        self.seconds: dict[str, list[float]] = {"epoch": [], "plain": [], "validation": [], "test": []}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # the datamodule's setup has run: its tensors are there
            datamodule, spec = trainer.datamodule, trainer.datamodule.spec
            train = datamodule.data_train
            self.images, self.labels = train.inputs[train.indices], train.labels[train.indices]
            self.mean, self.std = spec.mean.to(self.device), spec.std.to(self.device)
            net = instantiate(self.cfg.model.net, input_shape=spec.shape, num_classes=10)
            self.net = net.to(self.device)
            self.optimizer = instantiate(self.cfg.optimizer)(self.net.parameters())

    def plain_epoch(self) -> float:
        start = now(self.device)
        order = torch.randperm(len(self.labels), generator=torch.Generator())  # not the global generator
        for index in order.split(self.cfg.data.batch_size)[: self.limit]:
            images = self.images[index].to(self.device, non_blocking=True)
            labels = self.labels[index].to(self.device, non_blocking=True)
            loss = F.cross_entropy(self.net((images.float() - self.mean) / self.std), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return now(self.device) - start

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if args[-1] == 0:  # batch_idx
            self.start = now(self.device)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if args[-1] + 1 == trainer.num_training_batches:  # the last one: validation comes next
            self.seconds["epoch"].append(now(self.device) - self.start)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds["plain"].append(self.plain_epoch())

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pass_start = now(self.device)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the other callbacks' hooks, before the checkpoint is saved (checkpoint callbacks go last).
        if not trainer.sanity_checking:
            stage = "test" if trainer.testing else "validation"
            self.seconds[stage].append(now(self.device) - self.pass_start)

    on_test_start, on_test_end = on_validation_start, on_validation_end


ROWS = {  # name: (module, keep the logger, keep the callbacks)
    "Lightning, bare loop": ("bare", False, False),
    "+ ClassifierModule (metrics, logging)": ("template", False, False),
    "+ TensorBoard logger": ("template", True, False),
    "template, default config": ("template", True, True),
}


def run_row(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, list[float]]:
    module, keep_logger, keep_callbacks = ROWS[name]
    overrides = [
        f"paths.output_dir={workdir / ''.join(c if c.isalnum() else '_' for c in name)}",
        f"paths.log_dir={workdir / 'logs'}",
        f"paths.data_dir={args.data_dir}",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.accelerator={args.accelerator}",
        f"data.batch_size={args.batch_size}",
    ]
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        if args.limit_batches:  # a smoke test: a few batches of --batch-size images in every loop
            cfg.trainer.update(
                {f"limit_{stage}_batches": args.limit_batches for stage in ("train", "val", "test")}
            )
            cfg.data.eval_batch_size = args.batch_size
        if not keep_logger:
            cfg.logger = None
        if not keep_callbacks:  # whichever entries the config has today
            cfg.callbacks = dict.fromkeys(cfg.get("callbacks") or {})
            cfg.trainer.update(
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
            )
            cfg.test = False
    clock = Clock(cfg, args)
    if module == "bare":
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")  # BareModule is built for its shape and statistics
        trainer, bare = template.build_trainer(cfg, callbacks=[clock]), BareModule(cfg, datamodule)
        trainer.fit(bare, datamodule=datamodule)
        for _ in range(args.epochs):
            trainer.test(bare, datamodule=datamodule, verbose=False)
        return clock.seconds
    trainers, build = [], template.build_trainer

    def with_clock(cfg: DictConfig, **kwargs: Any) -> L.Trainer:  # train() builds its Trainer with this
        trainers.append(build(cfg, **{**kwargs, "callbacks": [*kwargs.get("callbacks", []), clock]}))
        return trainers[-1]

    with mock.patch.object(template, "build_trainer", with_clock):
        template.train(cfg)  # as `python -m lightning_template.train` does: fit, then test if cfg.test
    for _ in range(args.epochs - 1 if cfg.test else 0):  # more test passes, for a median
        trainers[0].test(trainers[0].lightning_module, datamodule=trainers[0].datamodule, verbose=False)
    return clock.seconds


# A fresh interpreter printing "BENCH <number>" lines: seconds from process start to `import lightning`
# done, then to Hydra starting a task that does nothing on the template's config (--hydra), or to
# `python -m lightning_template.train`'s first training step (--first-step stops there; --full goes on and
# prints its peak RSS in MB, VmHWM). Both times come from one process: the import's own swings cancel out.
CHILD = """
import os, sys, time
mode = sys.argv[1]
def since_start():  # the process started `ticks` clock ticks after boot
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
import lightning as L
print("BENCH", since_start(), flush=True)
if mode == "--hydra":
    import hydra, lightning_template.train  # the template's imports and its config's resolvers
    main = lambda cfg: print("BENCH", since_start())
    sys.argv = ["lightning_template.train", *sys.argv[2:]]
    hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="train")(main)()
    sys.exit()
import runpy
class FirstStep(L.Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == 0:
            print("BENCH", since_start(), flush=True)
        if mode == "--first-step": os._exit(0)
sys.argv = ["lightning_template.train", *sys.argv[2:], "+callbacks.bench_first_step._target_=__main__.FirstStep"]
try:
    runpy.run_module("lightning_template.train", run_name="__main__")
finally:
    print("BENCH", int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024)
"""


def child(mode: str, args: argparse.Namespace, workdir: Path) -> tuple[float, list[float]]:
    """Run CHILD: its wall seconds and the numbers it printed."""
    overrides = [f"paths.data_dir={args.data_dir}", f"paths.log_dir={workdir}"]
    command = [sys.executable, "-c", CHILD, mode, *overrides, f"trainer.accelerator={args.accelerator}"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"{mode} run failed:\n{result.stderr[-3000:]}")
    numbers = re.findall(r"BENCH (\S+)", result.stdout)  # tqdm's bar may come first on the line
    return wall, [float(number) for number in numbers]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per row, each followed by a plain one")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw/")
    parser.add_argument("--out", default="logs/bench", help="where the JSON report goes")
    parser.add_argument("--no-full-run", action="store_true", help="skip the timed default run")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timing (6 processes)")
    parser.add_argument("--limit-batches", type=int, help="smoke test: this many batches per loop")
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error("--epochs: at least 3, for a median")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible")
    args.accelerator = "gpu" if args.device == "cuda" else "cpu"

    results: dict[str, Any] = {"rows": {}}
    with tempfile.TemporaryDirectory(prefix="lt-bench-") as tmp:
        for name in ROWS:
            seconds = run_row(name, args, Path(tmp))
            pairs = zip(seconds["epoch"], seconds["plain"], strict=True)
            results["rows"][name] = {**seconds, "x_plain": statistics.median(a / b for a, b in pairs)}
        if not args.no_startup:
            startup: dict[str, list[float]] = {"import lightning": [], "first training step": [], "hydra": []}
            for _ in range(3):  # alternating
                for mode, key in (("--hydra", "hydra"), ("--first-step", "first training step")):
                    imported, then = child(mode, args, Path(tmp))[1]
                    startup["import lightning"].append(imported)
                    startup[key].append(then - imported)
            results["startup_s"] = startup  # import lightning: since the start; the others: after it
        if not args.no_full_run:
            wall, (*_, peak_mb) = child("--full", args, Path(tmp))
            results["full_run"] = {"wall_s": wall, "peak_rss_mb": peak_mb}
    bare = results["rows"]["Lightning, bare loop"]["x_plain"]
    for row in results["rows"].values():
        row["x_bare"] = row["x_plain"] / bare
    cpu = f"CPU, {torch.get_num_threads()} threads"
    args.hardware = torch.cuda.get_device_name() if args.device == "cuda" else cpu
    results["setup"] = {**vars(args), "torch": torch.__version__, "lightning": L.__version__}
    out = Console(width=None if sys.stdout.isatty() else 150)  # the table fits in a file or a pipe too
    report(results, out)
    path = Path(args.out) / f"bench_{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    out.print(f"Written to {path}", soft_wrap=True)
    return results


def report(results: dict[str, Any], out: Console) -> None:
    setup, rows, median = results["setup"], results["rows"], statistics.median
    table = Table(
        title=f"Training epoch (validation excluded), batch {setup['batch_size']}, {setup['hardware']}: "
        f"median \\[min-max] of {setup['epochs']} epochs",
        title_justify="left",
    )
    for column in ("loop", "epoch s", "x bare", "x plain", "validation s", "test s"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    span = lambda s: f"{median(s):.3f} [{min(s):.3f}-{max(s):.3f}]" if s else ""  # noqa: E731
    plain, bare = [s for row in rows.values() for s in row["plain"]], rows["Lightning, bare loop"]["x_plain"]
    table.add_row("plain PyTorch loop (floor)", span(plain), f"{1 / bare:.2f}", "1.00", "", "")
    for name, row in rows.items():
        ratios = f"{row['x_bare']:.2f}", f"{row['x_plain']:.2f}"
        table.add_row(name, span(row["epoch"]), *ratios, span(row["validation"]), span(row["test"]))
    out.print(table)
    default = rows["template, default config"]
    out.print(f"default config / bare Lightning loop: {default['x_bare']:.2f} (target <= 1.25)")
    val, test = median(default["validation"]), median(default["test"])
    out.print(f"default config: validation pass {val:.3f} s, test pass {test:.3f} s (target <= 0.05 s each)")
    if "startup_s" in results:
        imported, first, hydra = (median(seconds) for seconds in results["startup_s"].values())
        out.print(
            f"start-up, fresh processes (medians): `import lightning` {imported:.2f} s, then {first:.2f} s to "
            f"the first training step (target <= 0.5 s), of which {hydra:.2f} s to import the template "
            "and start a Hydra task that does nothing"
        )
    if "full_run" in results:
        wall, peak = results["full_run"].values()
        out.print(
            f"full default run (10 epochs + test, fresh process): {wall:.1f} s wall (target <= 25 s), "
            f"peak RSS {peak:.0f} MB (target < 1024 MB)"
        )


if __name__ == "__main__":
    main()
