"""Predict digits in image files: `python -m lightning_template.predict ckpt_path=... inputs=...` or `lt-predict`."""

from __future__ import annotations

import csv
import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lightning_template.data.batches import Standardizer
from lightning_template.data.digit_images import UnreadableImageError, read_digit
from lightning_template.errors import UserInputError
from lightning_template.runtime import (
    exit_on_user_error,
    load_classifier,
    load_standardizer,
    silence_known_noise,
)


@dataclass
class Prediction:
    """One input file's result: the digit and every class probability, or why the file was skipped."""

    path: str
    digit: int | None = None
    probabilities: list[float] | None = None
    error: str | None = None


def predict(cfg: DictConfig) -> list[Prediction]:
    """Classify every image that `cfg.inputs` names, with the checkpoint's network and standardization."""
    ckpt_path = None if OmegaConf.is_missing(cfg, "ckpt_path") else cfg.ckpt_path
    model = load_classifier(ckpt_path).eval()
    standardizer = load_standardizer(cfg.ckpt_path)  # present: load_classifier checked it
    if OmegaConf.is_missing(cfg, "inputs"):
        raise UserInputError("No inputs given: pass inputs=<image file, folder or glob like 'digits/*.png'>.")
    batch_size = _whole_number("batch_size", cfg.batch_size, minimum=1)
    table_rows = _whole_number("table_rows", cfg.table_rows, minimum=0)
    files = find_inputs(cfg.inputs)
    predictions: list[Prediction] = []
    for start in range(0, len(files), batch_size):
        predictions += predict_files(model, standardizer, files[start : start + batch_size])
    csv_path = Path(cfg.output_csv)
    write_csv(predictions, csv_path, num_classes=model.hparams["net"]["num_classes"])
    print_predictions(predictions, csv_path, table_rows)
    return predictions


def _whole_number(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return value


def find_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """Files named by a path, a folder (its files) or a glob pattern, or a list of these; in a stable order."""
    patterns = list(inputs) if isinstance(inputs, (list, tuple, ListConfig)) else [inputs]
    files: dict[Path, None] = {}  # keeps the order, drops duplicates
    for pattern in map(str, patterns):
        path = Path(pattern)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        files.update(dict.fromkeys(found))
    if not files:
        raise UserInputError(
            f"inputs={patterns if len(patterns) > 1 else patterns[0]} matched no files. Pass an image file, a "
            "folder of images, or a glob pattern in quotes (inputs='digits/*.png', or 'digits/**/*.jpg' for "
            "subfolders too); relative paths start from the current folder."
        )
    return list(files)


def predict_files(
    model: torch.nn.Module, standardizer: Standardizer, files: Sequence[Path]
) -> list[Prediction]:
    """Read and classify one batch of files; an unreadable file gets an error instead of a digit."""
    results, digits = [], []
    for path in files:
        try:
            digits.append(read_digit(path))
            results.append(Prediction(str(path)))
        except UnreadableImageError as exc:
            results.append(Prediction(str(path), error=exc.reason))
    if digits:
        with torch.inference_mode():
            inputs = standardizer(torch.stack(digits).unsqueeze(1).float())
            probabilities = torch.softmax(model(inputs), dim=1)
        readable = (result for result in results if result.error is None)
        for result, row in zip(readable, probabilities, strict=True):
            result.digit = int(row.argmax())
            result.probabilities = row.tolist()
    return results


def write_csv(predictions: Sequence[Prediction], path: Path, num_classes: int) -> None:
    """One row per file: path, digit, prob_0 ... prob_<n-1>, error (empty where the file was read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "digit", *(f"prob_{i}" for i in range(num_classes)), "error"])
        for p in predictions:
            probabilities = [f"{q:.6f}" for q in p.probabilities] if p.probabilities else [""] * num_classes
            writer.writerow([p.path, "" if p.digit is None else p.digit, *probabilities, p.error or ""])


def print_predictions(predictions: Sequence[Prediction], csv_path: Path, max_rows: int) -> None:
    """A table of the first `max_rows` results (the CSV has every probability), then counts and the CSV path."""
    table = Table(title="Predictions", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("digit", justify="right", style="bold")
    table.add_column("probability", justify="right")
    table.add_column("next best", justify="right")
    for p in predictions[:max_rows]:
        if p.probabilities is None:
            table.add_row(f"{escape(p.path)}\n[red]{escape(p.error or '')}[/red]", "[red]-[/red]")
            continue
        (best, p_best), (second, p_second) = sorted(
            enumerate(p.probabilities), key=lambda item: item[1], reverse=True
        )[:2]
        table.add_row(escape(p.path), str(best), f"{p_best:.3f}", f"{second} ({p_second:.3f})")
    console = Console()
    console.print(table)
    if len(predictions) > max_rows:
        console.print(f"... and {len(predictions) - max_rows} more rows in the CSV.")
    failed = sum(p.error is not None for p in predictions)
    console.print(
        f"[bold]Predicted:[/bold] {len(predictions) - failed} images; [bold]unreadable:[/bold] {failed}"
    )
    console.print(f"[bold]CSV:[/bold] {escape(str(csv_path))}", soft_wrap=True)


@hydra.main(version_base="1.3", config_path="pkg://lightning_template.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Command-line entry point."""
    silence_known_noise()
    with exit_on_user_error():
        predict(cfg)


if __name__ == "__main__":
    main()
