#!/usr/bin/env python
"""Training on a large folder of JPEG images: the template (data=image_folder) against a plain torchvision loop.

The folder is made once and reused: <folder>/train/<class>/NNNNN.jpg, --images JPEGs of 128x128 RGB in 10
classes (about 4 KB each: a smooth gradient, a few filled shapes of the class's hue and form, some noise),
written in parallel on every core. A marker file records what was asked for; an unfinished folder is
completed, one made for another --images is made again. Every row is one epoch in a fresh process:

- baseline: torchvision's ImageFolder(transform=PILToTensor()) and a DataLoader (batch 128, shuffled,
  --workers worker processes that decode as training goes) feeding a plain PyTorch loop: the template's
  default network (MLP, hidden sizes [64, 32]) on (x - 128) / 64, Adam (lr 1e-3, fused as the template's),
  cross-entropy; every image is a training image.
- template, first start / second start: the template's own train(cfg), config composed by Hydra with
  data=image_folder, 5% validation and 5% test split off (so 90% of the images train; test=false: no test),
  no logger; the default callbacks (checkpoints, progress bar, ...) plus this script's BenchClock. It runs
  twice in a row, so the second start may reuse what the first left: a decoded cache, in paths.data_dir (a new
  temporary folder, shared by the two starts only) or in the image folder, where everything beside train/ and
  the marker is deleted before the first start. Extra overrides for these rows go after `--`.

Times are seconds since the process started (the parent's clock just before it starts the child, passed in
LT_BENCH_T0; CLOCK_MONOTONIC is one clock for all processes): imports done; ready (data and network built:
the baseline's DataLoader, the template's fit setup); first step (batch 0 starts, after it was loaded); the
epoch, from batch 0's start to the last training batch's end (validation excluded); the process's wall time,
and the CPU time of it and its descendants (getrusage): less sensitive than the others to a busy machine.
Memory: every ~50 ms the parent reads RssAnon (anonymous resident memory) from /proc/<pid>/status for the
child and all its descendants (/proc/<pid>/task/<tid>/children): the main process's peak, the peak of the
largest other process (DataLoader or decoder workers) and the peak of their sum. A forked worker's RssAnon
also counts the pages it still shares with its parent, so a tree's sum can exceed the memory it really uses;
file-backed pages (a memory-mapped cache file, like any file read) are not in RssAnon at all.

    python scripts/benchmark_images.py      # (make bench) 50,000 images in <tmp>/lt-bench-images-50000, kept
    python scripts/benchmark_images.py --images 3000 --workers 2 --markdown bench.md
    python scripts/benchmark_images.py --smoke --clean        # 200 images, the folder deleted afterwards
    python scripts/benchmark_images.py -- data.num_workers=2  # overrides for the template's rows
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from collections.abc import Sequence
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

SIZE, CLASSES = 128, 10  # images are SIZE x SIZE RGB, in CLASSES class folders
MARKER = ".lt-bench-images.json"  # what the folder holds, and whether it is complete
T0_ENV = "LT_BENCH_T0"  # the parent's CLOCK_MONOTONIC just before it starts a child
SAMPLE_S = 0.05  # how often the parent reads the child's memory
BASELINE, FIRST, SECOND = (
    "baseline: ImageFolder + DataLoader",
    "template, first start",
    "template, second start",
)


# ---- the folder of images


def image_path(folder: Path, index: int) -> Path:
    return folder / "train" / f"class_{index % CLASSES}" / f"{index:05d}.jpg"


def draw_image(index: int) -> Image.Image:
    """Image number `index`, always the same: its class (index % CLASSES) sets the gradient's direction and
    the shapes' hue and form (ellipses, rectangles or triangles); their places, sizes and the noise are random."""
    label, rng = index % CLASSES, np.random.default_rng(index)
    angle = 2 * np.pi * label / CLASSES + rng.normal(0, 0.3)
    y, x = np.mgrid[:SIZE, :SIZE] / (SIZE - 1) - 0.5
    along = (np.cos(angle) * x + np.sin(angle) * y + 0.71) / 1.42  # 0 to 1 across the image
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    image = Image.fromarray((start + (end - start) * along[..., None]).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        left, top, width, height = (int(v) for v in (*rng.integers(-16, SIZE, 2), *rng.integers(16, 56, 2)))
        right, bottom = left + width, top + height
        hue = (36 * label + rng.integers(-12, 13)) % 360
        colour = f"hsv({hue},{rng.integers(60, 100)}%,{rng.integers(50, 100)}%)"
        if label % 3 == 0:
            draw.ellipse((left, top, right, bottom), fill=colour)
        elif label % 3 == 1:
            draw.rectangle((left, top, right, bottom), fill=colour)
        else:
            draw.polygon([(left, bottom), ((left + right) // 2, top), (right, bottom)], fill=colour)
    noise = rng.integers(-8, 9, (SIZE, SIZE, 3), dtype=np.int16)  # what makes it compress like a photo
    return Image.fromarray((np.asarray(image, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8))


def write_images(folder: Path, indices: Sequence[int]) -> None:
    """Write each image under a temporary name, then rename it: an interrupted run leaves no broken JPEG."""
    for index in indices:
        path = image_path(folder, index)
        part = path.with_name(f"{path.name}.part")
        draw_image(index).save(part, "JPEG", quality=90)
        os.replace(part, path)


def count_images(folder: Path) -> int:
    return sum(1 for _ in (folder / "train").glob("class_*/*.jpg"))


def prepare_folder(folder: Path, images: int, processes: int, out: Console) -> None:
    """Make the folder of `images` JPEGs, complete it, or reuse it when its marker says it is complete."""
    marker, recipe = folder / MARKER, {"version": 1, "images": images, "classes": CLASSES, "size": SIZE}
    if marker.is_file():
        found = json.loads(marker.read_text())
        same = {key: found.get(key) for key in recipe} == recipe
        if same and found.get("complete") and count_images(folder) == images:
            out.print(f"Reusing {images:,} images in {folder}")
            return
        if not same:  # made for another --images (or an older version of this script): start again
            shutil.rmtree(folder / "train", ignore_errors=True)
    elif folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} holds files this benchmark did not write: choose another --folder.")
    for label in range(CLASSES):
        (folder / "train" / f"class_{label}").mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**recipe, "complete": False}))
    missing = [index for index in range(images) if not image_path(folder, index).is_file()]
    out.print(f"Writing {len(missing):,} of {images:,} images to {folder} ({processes} processes)...")
    start = time.perf_counter()
    writers = [  # forked: they get their share of `missing` without pickling it
        get_context("fork").Process(target=write_images, args=(folder, missing[k::processes]))
        for k in range(processes)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    if count_images(folder) != images:
        raise RuntimeError(f"{folder}: {count_images(folder):,} images written, {images:,} expected")
    marker.write_text(json.dumps({**recipe, "complete": True}))
    size = sum(path.stat().st_size for path in (folder / "train").glob("class_*/*.jpg"))
    seconds = time.perf_counter() - start
    out.print(f"  {seconds:.1f} s, {size / images / 1024:.1f} KB an image, {size / 2**20:,.0f} MB in all")


def remove_caches(folder: Path, out: Console) -> None:
    """Delete what an earlier template run may have left beside train/ (a decoded cache)."""
    for path in folder.iterdir():
        if path.name not in ("train", MARKER):
            out.print(f"Removing {path} before the first start (left by an earlier run)")
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


# ---- the child's memory, from /proc


def rss_anon_kb(pid: int) -> int | None:
    """RssAnon of a process in kB; None once it has exited (a zombie has no RssAnon line)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def children(pid: int) -> list[int]:
    """The processes `pid` started, from every one of its threads' children lists."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as file:
                found += [int(child) for child in file.read().split()]
        except OSError:  # the thread has ended
            pass
    return found


class MemorySampler(threading.Thread):
    """Reads RssAnon of a process and all its descendants every SAMPLE_S seconds until stop()."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stopped = pid, threading.Event()
        self.main_kb = self.other_kb = self.tree_kb = self.samples = 0

    def sample(self) -> None:
        tree, pids = {}, [self.pid]
        while pids:
            pid = pids.pop()
            if pid not in tree and (kb := rss_anon_kb(pid)) is not None:
                tree[pid] = kb
                pids += children(pid)
        if tree:
            self.samples += 1
            self.main_kb = max(self.main_kb, tree.get(self.pid, 0))
            self.other_kb = max(self.other_kb, *(kb for pid, kb in tree.items() if pid != self.pid), 0)
            self.tree_kb = max(self.tree_kb, sum(tree.values()))

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> dict[str, float]:
        self.stopped.set()
        self.join()
        return {key: getattr(self, f"{key}_kb") / 1024 for key in ("main", "other", "tree")}


# ---- the children: what runs in each row's fresh process


def since_start() -> float:
    """Seconds since the parent started this process."""
    return time.monotonic() - float(os.environ[T0_ENV])


class BenchClock(L.Callback):
    """Added to the template's callbacks by the child: when its fit is set up, batch 0 starts, and the last
    training batch ends; how many images it trained on."""

    times: ClassVar[dict[str, float]] = {}  # read by the child once train() returns

    def __init__(self) -> None:
        self.start, self.images = 0.0, 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # the datamodule has loaded its images, the network is built
            self.times["ready"] = since_start()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        if i == 0 and "first_step" not in self.times:
            self.start = time.monotonic()
            self.times["first_step"] = since_start()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self.images += len(batch[-1])  # the labels
        if i + 1 == trainer.num_training_batches and "epoch" not in self.times:
            self.times.update(epoch=time.monotonic() - self.start, train_images=self.images)


def run_baseline(folder: Path, workers: int) -> dict[str, float]:
    """One epoch of a plain PyTorch loop over torchvision's ImageFolder: decoding happens in the workers."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import PILToTensor

    from lightning_template.models.mlp import MLP

    times = {"imports": since_start()}
    torch.manual_seed(42)
    data = ImageFolder(str(folder / "train"), transform=PILToTensor())
    loader = DataLoader(data, batch_size=128, shuffle=True, num_workers=workers)
    net = MLP(input_shape=[3, SIZE, SIZE], num_classes=len(data.classes), hidden_sizes=[64, 32])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    times["ready"], start, seen = since_start(), 0.0, 0
    for images, labels in loader:
        if not seen:
            start, times["first_step"] = time.monotonic(), since_start()
        loss = F.cross_entropy(net((images.float() - 128) / 64), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    return {**times, "epoch": time.monotonic() - start, "train_images": seen}


def run_template(folder: Path, workdir: Path, overrides: Sequence[str]) -> dict[str, float]:
    """One epoch of the template's own train(), with BenchClock among its callbacks."""
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from lightning_template.errors import report_user_errors
    from lightning_template.train import train

    times = {"imports": since_start()}
    overrides = [
        "data=image_folder",
        f"data.root={folder}",
        f"data.image_size=[{SIZE},{SIZE}]",
        "data.val_split=0.05",
        "data.test_split=0.05",
        "trainer.max_epochs=1",
        "test=false",
        "logger=none",
        "print_config=false",
        f"paths.output_dir={workdir / f'run-{os.getpid()}'}",  # each run its own checkpoints
        f"paths.log_dir={workdir / 'logs'}",
        f"paths.data_dir={workdir / 'data'}",  # shared by both starts
        *overrides,
    ]
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.callbacks.bench_clock = {"_target_": f"{BenchClock.__module__}.{BenchClock.__qualname__}"}
    with report_user_errors():  # what `python -m lightning_template.train` runs in: no library noise
        train(cfg)
    return {**times, **BenchClock.times}


def run_child(row: str, args: argparse.Namespace, workdir: Path, out: Console) -> dict[str, Any]:
    """Run `row` in a fresh process of this script, sampling its memory: its times, or its error."""
    name = "baseline" if row == BASELINE else "template"
    slug = "".join(c if c.isalnum() else "_" for c in row)
    result, log = workdir / f"{slug}.json", workdir / f"{slug}.log"
    command = [
        sys.executable,
        *(f"-W{option}" for option in sys.warnoptions),  # python -W error: the children too
        str(Path(__file__).resolve()),
        *("--child", name, "--child-out", str(result), "--workdir", str(workdir)),
        *("--folder", str(args.folder), "--workers", str(args.workers), "--", *args.overrides),
    ]
    out.print(f"Running {row}...")
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the processes waited for, their children too
    with log.open("w") as output:
        start = time.monotonic()
        env = {**os.environ, T0_ENV: repr(start)}
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        sampler = MemorySampler(process.pid)
        sampler.start()
        code = process.wait()
        wall = time.monotonic() - start
    memory, after = sampler.stop(), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    if code:
        tail = log.read_text()[-3000:]
        out.print(f"[red]{row} failed (exit {code}):[/red]\n{tail}", markup=True, highlight=False)
        return {"error": f"exit {code}", "log_tail": tail}
    return {
        **json.loads(result.read_text()),
        "wall": wall,
        "cpu": cpu_s,
        **memory,
        "samples": sampler.samples,
    }


# ---- the report


COLUMNS = {  # header: how a row's value is written
    "train images": lambda r: f"{r['train_images']:,}",
    "imports s": lambda r: f"{r['imports']:.2f}",
    "ready s": lambda r: f"{r['ready']:.2f}",
    "first step s": lambda r: f"{r['first_step']:.2f}",
    "epoch s": lambda r: f"{r['epoch']:.2f}",
    "images/s": lambda r: f"{r['train_images'] / r['epoch']:,.0f}",
    "wall s": lambda r: f"{r['wall']:.1f}",
    "CPU s": lambda r: f"{r['cpu']:.1f}",
    "main MiB": lambda r: f"{r['main']:,.0f}",
    "largest other MiB": lambda r: f"{r['other']:,.0f}",
    "tree MiB": lambda r: f"{r['tree']:,.0f}",
}


def ratios(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The acceptance's two ratios, where the rows they need ran."""
    lines = []
    template = [rows[row] for row in (FIRST, SECOND) if "error" not in rows[row]]
    if template and "error" not in rows[BASELINE]:
        peak = max(row["tree"] for row in template)
        lines.append(
            f"template peak tree RssAnon / baseline's: {peak:,.0f} / {rows[BASELINE]['tree']:,.0f} MiB = "
            f"{peak / rows[BASELINE]['tree']:.2f} (target <= 1.5)"
        )
    if len(template) == 2:
        first, second = (row["first_step"] for row in template)
        lines.append(
            f"template second start / first start, time to the first step: {second:.2f} / {first:.2f} s = "
            f"{second / first:.2f} (target <= 0.5)"
        )
    return lines


def report(results: dict[str, Any], out: Console, markdown: Path | None) -> None:
    setup, rows = results["setup"], results["rows"]
    title = (
        f"One epoch on {setup['images']:,} JPEGs ({SIZE}x{SIZE} RGB, {CLASSES} classes), batch 128, "
        f"CPU ({setup['cores']} cores), baseline with {setup['workers']} DataLoader worker(s), {setup['date']}"
    )
    if setup["overrides"]:
        title += f"; template with {' '.join(setup['overrides'])}"
    cells = {
        row: [f"failed ({r['error']})", *[""] * (len(COLUMNS) - 1)]
        if "error" in r
        else [write(r) for write in COLUMNS.values()]
        for row, r in rows.items()
    }
    table = Table(title=title, title_justify="left")
    for column in ("run", *COLUMNS):
        table.add_column(column, justify="left" if column == "run" else "right")
    for row, values in cells.items():
        table.add_row(row, *values)
    out.print(table)
    notes = [
        "Times in seconds since the process started, except the epoch (batch 0's start to the last "
        "training batch's end); memory: peak RssAnon, sampled every 50 ms.",
        *ratios(rows),
    ]
    for line in notes:
        out.print(line, soft_wrap=True)
    if markdown:
        lines = [f"\n### {title}\n", f"| run | {' | '.join(COLUMNS)} |", "|---" * (len(COLUMNS) + 1) + "|"]
        lines += [f"| {row} | {' | '.join(values)} |" for row, values in cells.items()]
        lines += ["", *notes, ""]
        with markdown.open("a") as file:
            file.write("\n".join(lines))
        out.print(f"Appended to {markdown}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, help="how many images (default 50,000; --smoke: 200)")
    parser.add_argument("--smoke", action="store_true", help="a quick run: 200 images unless --images")
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="the baseline's DataLoader workers (default: one a core)",
    )
    parser.add_argument("--folder", type=Path, help="where the images go (default <tmp>/lt-bench-images-N)")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help="keep the folder for the next run (the default)")
    keep.add_argument("--clean", action="store_true", help="delete the folder afterwards")
    parser.add_argument("--markdown", type=Path, help="append the table to this file, as markdown")
    parser.add_argument("overrides", nargs="*", help="config overrides for the template's rows")
    parser.add_argument("--child", choices=["baseline", "template"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images is None:
        args.images = 200 if args.smoke else 50_000
    if args.images < 2 * CLASSES or args.workers < 0:
        parser.error(f"--images: at least {2 * CLASSES}; --workers: 0 or more")
    if args.folder is None:
        args.folder = Path(tempfile.gettempdir(), f"lt-bench-images-{args.images}")

    if args.child:  # a row's fresh process, started by run_child
        if args.child == "baseline":
            times = run_baseline(args.folder, args.workers)
        else:
            times = run_template(args.folder, args.workdir, args.overrides)
        args.child_out.write_text(json.dumps(times))
        return times

    out = Console(width=None if sys.stdout.isatty() else 180)  # the table fits in a file or a pipe too
    prepare_folder(args.folder, args.images, len(os.sched_getaffinity(0)), out)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lt-bench-images-run-") as tmp:
        rows[BASELINE] = run_child(BASELINE, args, Path(tmp), out)
        remove_caches(args.folder, out)
        for row in (FIRST, SECOND):  # one paths.data_dir: the second start may reuse what the first left
            rows[row] = run_child(row, args, Path(tmp), out)
    setup = {
        "images": args.images,
        "workers": args.workers,
        "cores": len(os.sched_getaffinity(0)),
        "folder": str(args.folder),
        "overrides": args.overrides,
        "date": f"{datetime.now():%Y-%m-%d %H:%M}",
        "torch": torch.__version__,
        "lightning": L.__version__,
    }
    results = {"setup": setup, "rows": rows}
    report(results, out, args.markdown)
    if args.clean:
        shutil.rmtree(args.folder)
        out.print(f"Deleted {args.folder}")
    if any("error" in row for row in rows.values()):
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
