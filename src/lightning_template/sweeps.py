"""SweepSummary: every `-m` run ends with summary.csv at the sweep's root, also printed as a table."""

import atexit
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

KILLED = "failed: no metrics.json (killed or crashed)"  # the status of a job that ended without a word


def job_row(job: Path) -> dict[str, Any]:
    """A job's overrides, status (by the file it left: error.txt, metrics.json, interrupted.txt), metrics."""
    status = KILLED
    if (job / "error.txt").is_file():
        status = "failed: " + (job / "error.txt").read_text().partition("\n")[0]
    elif (job / "metrics.json").is_file():  # also after an interrupted.txt: a requeued job that finished
        status = "ok"
    elif (job / "interrupted.txt").is_file():
        status = "interrupted"
    overrides = " ".join(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
    values = json.loads((job / "metrics.json").read_text()) if status == "ok" else {}
    return {"job": job.name, "overrides": overrides, "status": status, **values, "run_dir": str(job)}


class SweepSummary(Callback):
    """One row per job, best first, then each metric's mean and std (k-fold: across folds); 1 on failures."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra calls no callback when a sweep stops early (a job's SystemExit, a dead worker): write at exit.
        atexit.register(self.summarize, config, stopped=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self.summarize)
        if self.summarize(config):
            sys.exit(1)

    def summarize(self, config: DictConfig, stopped: bool = False) -> bool:
        """Write and print summary.csv, name failed jobs, tell how to resume; whether a job did not finish."""
        sweep = Path(config.hydra.sweep.dir)
        if not sweep.is_dir():  # the sweep stopped before its first job
            return False
        rows = [job_row(path.parent) for path in sweep.glob("*/.hydra")]
        ok = [row for row in rows if row["status"] == "ok"]
        key, descending = config.get("optimized_metric"), config.hydra.sweeper.get("direction") != "minimize"
        ok.sort(key=lambda row: row.get(key, float("nan")), reverse=descending)
        others = [row for row in rows if row["status"] != "ok"]
        others.sort(key=lambda row: (len(row["job"]), row["job"]))  # job 2 before job 10
        metrics = sorted({name for row in ok for name in row} - {"job", "overrides", "status", "run_dir"})
        spread: list[dict[str, Any]] = [{"job": "mean"}, {"job": "std"}]
        for name in metrics:
            values = [row[name] for row in ok if name in row]
            spread[0][name] = statistics.mean(values)
            spread[1][name] = statistics.stdev(values) if len(values) > 1 else 0.0
        with (sweep / "summary.csv").open("w", newline="") as file:
            writer = csv.DictWriter(file, ["job", "overrides", "status", *metrics, "run_dir"])
            writer.writeheader()
            writer.writerows([*ok, *others, *spread])
        table = Table("job", "overrides", "status", key, title=f"Sweep summary: {sweep / 'summary.csv'}")
        shared = set.intersection(*(set(row["overrides"].split()) for row in rows)) if rows else set()
        for row in [*ok, *others, *spread]:  # the table shows the overrides that tell the jobs apart
            varying = " ".join(o for o in row.get("overrides", "").split() if o not in shared)
            table.add_row(row["job"], varying, row.get("status", ""), f"{row[key]:.4f}" if key in row else "")
        Console().print(table)
        failed = [row["run_dir"] for row in others if row["status"] != "interrupted"]
        unfinished = [row["job"] for row in others if row["status"] in ("interrupted", KILLED)]
        if failed:  # a job without error.txt was killed or crashed
            print(f"Error: {len(failed)} job(s) of this sweep failed ({', '.join(failed)}).", file=sys.stderr)
        storage = config.hydra.sweeper.get("storage")  # Hydra cannot resume a sweep; a stored study goes on
        if stopped and unfinished:
            print(
                f"The same command goes on with the study in {storage}: {config.hydra.sweeper.n_trials} trials."
                if storage
                else f"The sweep stopped early: job(s) {', '.join(unfinished)} did not finish; Hydra cannot resume it.",
                file=sys.stderr,
            )
        return bool(others)
