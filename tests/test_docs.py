"""Every command in the README and docs/ is checked: the template's commands compose as written, make targets
exist, and what needs a GPU, a cluster or the network says so. A new kind of command fails until covered."""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Commands of other tools, run as their own documentation says; each with why it is not run here.
OTHERS = {
    "pip install": "installs an extra (the suite runs with every extra installed)",
    "uv ": "uv's own commands (make install runs uv sync --locked)",
    "pre-commit ": "runs make lint's checks",
    "source .venv/bin/activate": "a shell builtin",
    "git diff": "git",
    "sbatch ": "needs a SLURM cluster (tests/test_slurm.py submits jobs to a local one)",
    "apt-get install": "installs SLURM (.ci/run does)",
    "scripts/slurm_local.sh": "make test-slurm runs it",
    ".venv/bin/tensorboard": "tests/test_output.py starts TensorBoard as the train command prints it",
    ".venv/bin/python scripts/benchmark.py": "make bench; tests/test_benchmark.py runs it on a few batches",
    "for s in 1 2 3": "three trainings of 35 epochs, timed",
}
# What a command needs beyond this CPU, and the word its comment must say it with.
NEEDS = {
    r"trainer=(gpu|ddp)\b(?!_)": "GPU",
    r"hydra/launcher=slurm": "SLURM",
    r"data=(fashion_mnist|kmnist)": "download",
}


def commands() -> list[tuple[str, str, str]]:
    """(file, command, its comment) of every line of every bash block, continuations joined."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command, _, comment = line.partition(" # ")
                if command.strip():
                    found.append((doc.name, command.strip(), comment))
    return found


def first_value(override: str) -> str | None:
    """A sweep override (`a=1,2`, `choice(...)`) as its first value; None for a search range (`interval`)."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return override
    values = list(parsed.sweep_string_iterator()) if parsed.is_discrete_sweep() else []
    return f"{parsed.get_key_element()}={values[0]}" if values else None


@pytest.mark.parametrize(("doc", "command", "comment"), commands())
def test_every_documented_command_is_checked(doc: str, command: str, comment: str) -> None:
    for pattern, word in NEEDS.items():
        if re.search(pattern, command):
            assert word.lower() in comment.lower(), f"{doc}: say that `{command}` needs a {word}"
    words = shlex.split(command)
    if words[0] == "make":
        targets = re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), flags=re.M)
        assert words[1] in targets, f"{doc}: make {words[1]} is no target"
    elif words[:2] == ["python", "-m"] and words[2].endswith((".train", ".eval", ".predict", ".export")):
        given = shlex.split(re.sub(r"<[^>]*>", "x", command))[3:]  # <run>, <file.ckpt>: any path composes
        for flag in ("--cfg", "--package"):  # Hydra's flags and their values, not overrides
            if flag in given:
                del given[given.index(flag) : given.index(flag) + 2]
        overrides = [first_value(word) for word in given if word != "-m"]
        config = words[2].rpartition(".")[2]
        with initialize_config_module("lightning_template.conf", version_base="1.3"):
            compose(config, [override for override in overrides if override], return_hydra_config=True)
    else:
        assert any(command.startswith(prefix) for prefix in OTHERS), f"{doc}: `{command}` is not checked"


# Messages troubleshooting.md quotes that come from other tools, not from src/.
NOT_OURS = ("is not in struct", "zsh: no matches found", "You're resuming from a checkpoint")


def test_the_messages_troubleshooting_quotes_are_the_ones_the_code_prints() -> None:
    code = "".join(path.read_text() for path in (REPO / "src").rglob("*.py"))
    rows = re.findall(r"^\| [^|]*?`([^`]+)`", (REPO / "docs" / "troubleshooting.md").read_text(), flags=re.M)
    for quoted in (row for row in rows if not any(part in row for part in NOT_OURS)):
        # The words between the values (`key=...`, paths, <placeholders>, N) are the code's literal text.
        runs = re.split(r"\S*(?:=|/|\.\.\.|<[^>]*>|\bN\b)\S*", quoted)
        assert max(runs, key=len).strip() in code, (
            f"troubleshooting.md quotes `{quoted}`, which no code prints"
        )


def test_the_line_counts_the_readme_gives_are_the_files_lengths() -> None:
    for name, lines in re.findall(
        r"`([\w/.]+\.(?:py|yaml))` \((\d+) lines", (REPO / "README.md").read_text()
    ):
        (path,) = [REPO / name] if (REPO / name).is_file() else (REPO / "src").rglob(name)
        assert len(path.read_text().splitlines()) == int(lines), f"README: {name} has other lines"
