"""Rename the template's package, distribution and commands in one step: `make rename NAME=my_project`.

`python scripts/rename_project.py my_project` renames the package folder `src/<old>/` to `src/my_project/`
and rewrites every mention of the old names in the files git knows about: imports, the `_target_` and
`pkg://<old>.conf` strings of the configs, `pyproject.toml` (distribution `my-project`, package list,
package-dir, console scripts), uv.lock, the Makefile, tests, scripts, CI files and the README title. The commands
`<old prefix>-train`, `-eval`, ... become `my-project-train`, `my-project-eval`, ... (the distribution name,
then the module each one runs). It runs only on a clean git tree, so `git diff` shows the whole rename and
`git checkout -- . && git clean -fd` undoes it. Running it again with the same name changes nothing.
Standard library only: it runs before anything is installed. Where ruff is installed (on PATH or in .venv),
it re-sorts the imports and reformats the files it changed, since the new name may sort or wrap differently;
and it uninstalls the old distribution from a pip-made .venv, whose old commands would point at nothing.
"""

from __future__ import annotations

import argparse
import keyword
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXIT_BAD_INPUT = 2
# Top-level modules the project imports: a package with one of these names would hide the real one.
DEPENDENCIES = {
    "conf",
    "hydra",
    "lightning",
    "hydra_plugins",
    "joblib",
    "lightning_fabric",
    "matplotlib",
    "mypy",
    "numpy",
    "omegaconf",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "optuna",
    "pytest",
    "rich",
    "scripts",
    "sqlalchemy",
    "submitit",
    "tensorboard",
    "tests",
    "torch",
    "torchmetrics",
    "torchvision",
}


class RenameError(Exception):
    """A reason not to rename; its message says what to do instead."""


@dataclass(frozen=True)
class Names:
    """The three spellings of a project name that its files use."""

    module: str  # my_project: the import name, folder and config targets
    distribution: str  # my-project: pyproject's [project] name, pip's name, the README title
    scripts: dict[str, str]  # console script -> the same script under the new name
    submodules: tuple[str, ...] = ()  # what `module.` may be followed by in code: train, data, conf, ...


def check_name(name: str) -> None:
    """Refuse names that cannot be imported, or that would hide the standard library or a dependency."""
    allowed = (
        "Use lowercase letters, digits and underscores, starting with a letter (PEP 8), e.g. `my_project`."
    )
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or not name.isidentifier():
        raise RenameError(f"{name!r} is not a valid Python package name. {allowed}")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise RenameError(f"{name!r} is a Python keyword, so `import {name}` would not parse. {allowed}")
    if name in sys.stdlib_module_names:
        raise RenameError(
            f"{name!r} is a standard-library module: the package would hide it. Pick another name."
        )
    if name in DEPENDENCIES:
        raise RenameError(
            f"{name!r} is a module this project imports: the package would hide it. Pick another name."
        )


def current_module(root: Path) -> str:
    """The package under src/ (the one folder there with an __init__.py)."""
    packages = sorted(p.parent.name for p in (root / "src").glob("*/__init__.py"))
    if len(packages) != 1:
        raise RenameError(
            f"Expected exactly one package folder under {root / 'src'}, found {packages or 'none'}."
        )
    return packages[0]


def script_names(pyproject: str, old_module: str, new_distribution: str) -> dict[str, str]:
    """Map each console script that runs the package (`ab-train = "pkg.train:main"`) to `<new>-train`."""
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", pyproject, flags=re.M | re.S)
    if section is None:
        return {}
    entries = re.findall(
        rf'^([\w.-]+)\s*=\s*"{re.escape(old_module)}\.([\w.]+):', section.group(1), flags=re.M
    )
    return {script: f"{new_distribution}-{target.rsplit('.', 1)[-1]}" for script, target in entries}


def git(root: Path, *args: str) -> str:
    """Run git in `root`; a missing git or a folder outside any repository becomes a RenameError."""
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise RenameError("git is not installed: the rename needs it to list the project's files.") from exc
    if result.returncode != 0:
        raise RenameError(
            f"{root} is not a git repository (`git {' '.join(args)}`: {result.stderr.strip()}). "
            "Run `git init && git add -A && git commit -m template` first, so the rename can be reviewed and undone."
        )
    return result.stdout


def check_clean(root: Path) -> None:
    """Refuse to mix the rename with uncommitted work."""
    changes = git(root, "status", "--porcelain").splitlines()
    if changes:
        shown = ", ".join(line[3:] for line in changes[:5]) + (", ..." if len(changes) > 5 else "")
        raise RenameError(
            f"The git tree has {len(changes)} uncommitted change(s) ({shown}). Commit or stash them first, so "
            "that `git diff` shows only the rename and `git checkout -- . && git clean -fd` undoes it."
        )


def module_pattern(old: Names) -> str:
    """Where the module name is code, not prose or a variable (a package may be named after a common word)."""
    m, parts = re.escape(old.module), "|".join(map(re.escape, old.submodules))
    return (
        rf"(?<![\w.-]){m}(?=\\?\.(?:{parts})\b|\s+import\b)"  # pkg.train, pkg\.train (a regex), from pkg import
        rf"|(?<=src/){m}(?![\w-])"  # src/pkg/ (other folders may share the name)
        rf"|(?<=import ){m}(?![\w.-])|(?<=-m ){m}(?![\w.-])"  # import pkg, python -m pkg
        rf"|(?<=[\"'`]){m}(?=[\"'`])"  # "pkg", `pkg`
    )


def rewrite(text: str, old: Names, new: Names) -> str:
    """Replace the old script, distribution and module names where they are names, not prose."""
    for before, after in old.scripts.items():
        # Not inside a longer name: `ab-train` but not `cab-train` or `ab-train-x`.
        text = re.sub(rf"(?<![\w-]){re.escape(before)}(?![\w-])", after, text)
    distribution = re.escape(old.distribution)
    for pattern in (
        rf'(?<=name = "){distribution}(?=")',  # pyproject's [project] name, uv.lock's entries
        rf'(?<="){distribution}(?=\[)',  # "name[dev]": the project's own extras
        rf"(?m)(?<=^# ){distribution}(?=[ \t]*$)",  # the README title
    ):
        text = re.sub(pattern, new.distribution, text)
    return re.sub(module_pattern(old), new.module, text)


def plan(root: Path, new_module: str) -> tuple[Names, Names]:
    """The project's current names and the ones `new_module` gives it."""
    check_name(new_module)
    old_module = current_module(root)
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^name\s*=\s*"([^"]+)"', pyproject, flags=re.M)
    new_distribution = new_module.replace("_", "-")
    package = root / "src" / old_module
    if new_module != old_module and (root / "src" / new_module).exists():
        raise RenameError(
            f"{root / 'src' / new_module} exists already: move it away or pick another name, so the package "
            "folder can take its place."
        )
    submodules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    submodules |= {p.parent.name for p in package.glob("*/__init__.py")}
    submodules |= set(re.findall(rf'"{re.escape(old_module)}\.(\w+)', pyproject))  # pkg.conf, entry points
    old = Names(
        old_module,
        match.group(1) if match else old_module.replace("_", "-"),
        script_names(pyproject, old_module, new_distribution),
        tuple(sorted(submodules, key=len, reverse=True)),
    )
    return old, Names(new_module, new_distribution, {})


def rename(root: Path, old: Names, new: Names) -> list[Path]:
    """Rewrite every text file git knows about, then move the package folder; return the changed files."""
    old_package, new_package = root / "src" / old.module, root / "src" / new.module
    check_clean(root)
    changed = []
    for name in git(root, "ls-files", "-z").split("\0"):
        path = root / name
        if not name or not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (the bundled data archives)
        updated = rewrite(text, old, new)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(path)
    old_package.rename(new_package)
    shutil.rmtree(root / "src" / f"{old.module}.egg-info", ignore_errors=True)  # stale build metadata
    return [new_package / p.relative_to(old_package) if p.is_relative_to(old_package) else p for p in changed]


def find_ruff(root: Path) -> str | None:
    """The ruff of the project's .venv, else the one next to this Python, else the one on PATH, else None."""
    for candidate in (root / ".venv" / "bin" / "ruff", Path(sys.executable).parent / "ruff"):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("ruff")


def tidy(root: Path, changed: list[Path]) -> bool:
    """Re-sort imports and reformat the changed Python files with ruff; False where ruff is missing."""
    ruff = find_ruff(root)
    python = [str(p.relative_to(root)) for p in changed if p.suffix == ".py" and p.is_file()]
    if ruff is None:
        return False
    if python:
        for args in (["check", "--select", "I", "--fix", "--quiet"], ["format", "--quiet"]):
            subprocess.run([ruff, *args, *python], cwd=root, capture_output=True, check=False)
    return True


def uninstall_old(root: Path, old: Names) -> bool:
    """Remove the old distribution from the project's pip-made .venv: its commands would point at nothing."""
    python = root / ".venv" / "bin" / "python"
    if not python.is_file() or not (root / ".venv" / "bin" / "pip").is_file():
        return False  # no .venv, or uv's (`uv sync` removes the old package itself)
    result = subprocess.run(
        [str(python), "-m", "pip", "uninstall", "-y", "-q", old.distribution],
        capture_output=True,
        check=False,
    )
    (root / ".venv" / ".installed").unlink(missing_ok=True)  # the Makefile's stamp: reinstall on next use
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    """Command line: one argument, the new package name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "name", help="the new package name, e.g. my_project (commands become my-project-train, ...)"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the project to rename (default: this one)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        old, new = plan(root, args.name)
        if old.module == new.module:
            print(f"The package is already named {new.module!r}: nothing to do.")
            return 0
        changed = rename(root, old, new)
        tidied = tidy(root, changed)
        uninstalled = uninstall_old(root, old)
    except RenameError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"Renamed {old.module} -> {new.module}: moved src/{new.module}/, rewrote {len(changed)} files.")
    print(f"Distribution: {old.distribution} -> {new.distribution}")
    if old.scripts:
        print("Commands: " + ", ".join(f"{before} -> {after}" for before, after in old.scripts.items()))
    if not tidied:
        print(
            "ruff is not installed: after `make install`, run `make format` in case imports now sort differently."
        )
    if uninstalled:
        print(
            f"Uninstalled {old.distribution} from .venv; `make install` (or any make target) installs {new.distribution}."
        )
    print(
        "Next: review with `git status` and `git diff`, reinstall (`make install`, or `uv sync`: uv.lock is "
        "renamed too), run `make test`, and commit."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
