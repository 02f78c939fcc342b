"""Other trackers, offline: MLflow into the run directory, Weights & Biases offline, several loggers at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from lightning_template.errors import UserError, user_error_in
from lightning_template.train import train

from tests.conftest import FAST

pytestmark = pytest.mark.xdist_group("test_loggers")  # wandb and mlflow start slowly: one worker


@pytest.mark.parametrize(("logger", "written"), [("mlflow", "mlruns"), ("wandb", "wandb"), ("many", "csv")])
def test_each_logger_completes_a_short_run_offline(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logger: str,
    written: str,
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # wandb keeps a little state outside the run directory
    metrics = train(make_cfg("train", [*FAST, f"logger={logger}"]))
    assert metrics["test/acc"] >= 0
    assert any((tmp_path / written).rglob("*"))  # the tracker wrote into the run directory


class NeedsAPackage:
    """A logger whose package is not installed, as Lightning's MLFlowLogger says it."""

    def __init__(self) -> None:
        raise ModuleNotFoundError("Requirement 'mlflow>=1.0.0' not met.")


def test_a_logger_without_its_package_names_the_extra(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg(
        "train", [*FAST, "logger=none", "+logger.mlflow._target_=tests.test_loggers.NeedsAPackage"]
    )
    with pytest.raises(Exception) as error:  # noqa: PT011 (Hydra may wrap it: user_error_in unwraps)
        train(cfg)
    user_error = user_error_in(error.value)
    assert isinstance(user_error, UserError) and 'pip install -e ".[mlflow]"' in str(user_error)
