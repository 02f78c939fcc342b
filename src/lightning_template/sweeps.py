"""SweepSummary: every `-m` run ends with summary.csv at the sweep's root, also printed as a table."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table


def job_row(job: Path) -> dict[str, Any]:
    """A job's overrides, status (`ok`, or `failed: <first line of its message>`), final metrics and directory."""
    error, metrics = job / "error.txt", job / "metrics.json"
    reason = error.read_text().splitlines()[0] if error.is_file() else None
    status = "ok" if metrics.is_file() and reason is None else f"failed: {reason or 'no metrics.json'}"
    overrides = " ".join(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
    values = json.loads(metrics.read_text()) if status == "ok" else {}
    return {"job": job.name, "overrides": overrides, "status": status, **values, "run_dir": str(job)}


class SweepSummary(Callback):
    """Hydra callback: one row per job, best first by `optimized_metric`, then each metric's mean and
    standard deviation over the jobs that finished (k-fold: across folds). A failed job makes the
    sweep exit with code 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        rows = [job_row(path.parent) for path in sweep.glob("*/.hydra")]
        ok = [row for row in rows if row["status"] == "ok"]
        key, descending = config.get("optimized_metric"), config.hydra.sweeper.get("direction") != "minimize"
        ok.sort(key=lambda row: row.get(key, float("nan")), reverse=descending)
        failed = sorted((row for row in rows if row["status"] != "ok"), key=lambda row: row["job"])
        metrics = sorted({name for row in ok for name in row} - {"job", "overrides", "status", "run_dir"})
        spread: list[dict[str, Any]] = [{"job": "mean"}, {"job": "std"}]
        for name in metrics:
            values = [row[name] for row in ok if name in row]
            spread[0][name] = statistics.mean(values)
            spread[1][name] = statistics.stdev(values) if len(values) > 1 else 0.0
        with (sweep / "summary.csv").open("w", newline="") as file:
            writer = csv.DictWriter(file, ["job", "overrides", "status", *metrics, "run_dir"])
            writer.writeheader()
            writer.writerows([*ok, *failed, *spread])
        table = Table("job", "overrides", "status", key, title=f"Sweep summary: {sweep / 'summary.csv'}")
        shared = set.intersection(*(set(row["overrides"].split()) for row in rows)) if rows else set()
        for row in [*ok, *failed, *spread]:  # the table shows the overrides that tell the jobs apart
            varying = " ".join(o for o in row.get("overrides", "").split() if o not in shared)
            table.add_row(row["job"], varying, row.get("status", ""), f"{row[key]:.4f}" if key in row else "")
        Console().print(table)
        if failed:
            jobs = ", ".join(row["run_dir"] for row in failed)
            message = f"Error: {len(failed)} job(s) of this sweep failed ({jobs}); see their error.txt."
            print(message, file=sys.stderr)
            sys.exit(1)
