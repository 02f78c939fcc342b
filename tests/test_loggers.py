"""A tracker whose package is missing names the extra to install (tests/test_config.py runs each logger)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from omegaconf import DictConfig

from lightning_template.errors import UserError, user_error_in
from lightning_template.train import train

from tests.conftest import FAST


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
