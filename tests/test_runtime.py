"""The glue: checkpoint loading errors, clear exits, run directories that never collide."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import InstantiationException

from lightning_template.errors import UserInputError
from lightning_template.runtime import exit_on_user_error, final_metrics, load_classifier


class Payload:
    """Stands in for any pickled object that a checkpoint from a stranger could carry."""


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: None, "No checkpoint given"),
        (lambda d: d / "missing.ckpt", "does not exist"),
        (lambda d: d, "does not exist or is not a file"),
        (
            lambda d: (d / "notes.ckpt").write_text("hello") and d / "notes.ckpt",
            "not a file written by torch.save",
        ),
        (
            lambda d: torch.save({"weights": torch.zeros(2)}, d / "w.pt") or d / "w.pt",
            "not a checkpoint of this",
        ),
        # An arbitrary Python object inside: refused by the weights_only unpickler, never executed.
        (
            lambda d: torch.save({"x": Payload()}, d / "evil.ckpt") or d / "evil.ckpt",
            "Python objects",
        ),
    ],
)
def test_load_classifier_explains_bad_paths(tmp_path: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match=needle):
        load_classifier(make(tmp_path))


def test_final_metrics_are_floats_without_step_values() -> None:
    metrics = final_metrics({"val/acc": torch.tensor(0.5), "train/loss_step": torch.tensor(1.0), "n": 3})
    assert metrics == {"n": 3.0, "val/acc": 0.5}


def _fail_like_hydra_instantiate() -> None:
    try:
        raise ValueError("data.batch_size must be a positive integer, got 0.")
    except ValueError as cause:
        raise InstantiationException("Error in call to target ...") from cause


def test_user_errors_exit_2_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        _fail_like_hydra_instantiate()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "data.batch_size must be a positive integer, got 0." in err
    assert "HYDRA_FULL_ERROR=1" in err


def test_other_errors_keep_their_traceback() -> None:
    with pytest.raises(KeyError), exit_on_user_error():
        raise KeyError("a bug, not a user error")


def test_run_directories_of_jobs_started_in_the_same_second_differ() -> None:
    with initialize_config_module("lightning_template.conf", version_base="1.3"):
        dirs = {compose("train", return_hydra_config=True).hydra.run.dir for _ in range(3)}
    assert len(dirs) == 3
    assert all(Path(d).parent.as_posix().endswith("logs/train/runs") for d in dirs)
