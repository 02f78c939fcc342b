"""scripts/rename_project.py: a renamed copy of the project installs, trains and passes its tests."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "rename_project.py"
GIT_USER = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
CURRENT = next(p.parent.name for p in (REPO / "src").glob("*/__init__.py"))
# The miniature project's name: a common word. Names below are derived from CURRENT where they must differ
# from it, because renaming this project also rewrites the quoted names in this file.
WORD = "digits" if CURRENT != "digits" else "letters"
# What the slow test renames a copy of this repository to.
TARGET = "digits" if CURRENT != "digits" else f"{CURRENT}_renamed"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the rename needs git")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rename_project", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def rename(root: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), name, "--root", str(root)], capture_output=True, text=True, timeout=120
    )


def commit_all(root: Path) -> None:
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", *GIT_USER, "commit", "-q", "-m", "template"], cwd=root, check=True)


def git_status(root: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout


def small_files(word: str) -> dict[str, str]:
    """A miniature of the template's layout, its package named `word`."""
    return {
        f"src/{word}/__init__.py": '"""The package."""\n',
        f"src/{word}/models.py": "class Net: ...\n",
        f"src/{word}/train.py": train_py(word),
        "conf/model.yaml": f"_target_: {word}.models.Net\npath: pkg://{word}.conf\n",
        "pyproject.toml": (
            f'[project]\nname = "{word}"\n[project.optional-dependencies]\ndev = ["{word}[export]"]\n'
            f'[project.scripts]\n{word}-train = "{word}.train:main"\n{word}-eval = "{word}.eval:main"\n'
            f'[tool.setuptools]\npackage-dir = {{ "" = "src", "{word}.conf" = "conf" }}\npackages = ["{word}"]\n'
        ),
        "Makefile": f"train:\n\tpython -m {word}.train $(ARGS)\n",
        "README.md": readme(word, word),
    }


def train_py(module: str) -> str:
    """Imports of the package, next to a variable and a module that only share its name."""
    return f"import {WORD}_extra\n\nfrom {module}.models import Net\n\n{WORD} = []\n{WORD}.append(Net)\n"


def readme(title: str, module: str) -> str:
    command = module.replace("_", "-")
    return (
        f"# {title}\n\nReads handwritten {WORD}: `{command}-train` or `python -m {module}.train`, "
        f"not pre{WORD}-train; writes {WORD}/ and {WORD}.pt.\n"
    )


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    """The miniature project in its own git repository, with a binary file that mentions the name."""
    root = tmp_path / "project"
    for name, text in small_files(WORD).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "data.gz").write_bytes(b"\x1f\x8b\xff " + f"{WORD}.train".encode() + b" \xfe")
    commit_all(root)
    return root


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("my-project", "not a valid Python package name"),
        ("MyProject", "not a valid Python package name"),
        ("2fast", "not a valid Python package name"),
        ("", "not a valid Python package name"),
        ("class", "is a Python keyword"),
        ("match", "is a Python keyword"),
        ("json", "is a standard-library module"),
        ("torch", "is a module this project imports"),
    ],
)
def test_bad_names_are_refused_before_anything_changes(small_project: Path, name: str, needle: str) -> None:
    result = rename(small_project, name)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert git_status(small_project) == ""


def test_a_dirty_tree_is_refused(small_project: Path) -> None:
    (small_project / "notes.txt").write_text("work in progress\n")
    result = rename(small_project, "new_pkg")
    assert result.returncode == 2
    assert "uncommitted change(s) (notes.txt)" in result.stderr and "Commit or stash them" in result.stderr
    assert (small_project / "src" / WORD).is_dir()
    assert (small_project / "conf" / "model.yaml").read_text().startswith(f"_target_: {WORD}.models")


def test_a_folder_outside_git_is_refused(tmp_path: Path) -> None:
    for name, text in small_files(WORD).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result = rename(tmp_path, "new_pkg")
    assert result.returncode == 2
    assert "is not a git repository" in result.stderr and "git init" in result.stderr
    assert (tmp_path / "src" / WORD).is_dir()


def test_an_existing_folder_of_the_new_name_is_refused(small_project: Path) -> None:
    (small_project / "src" / "new_pkg").mkdir()
    (small_project / "src" / "new_pkg" / "notes.md").write_text("mine\n")
    commit_all(small_project)
    result = rename(small_project, "new_pkg")
    assert result.returncode == 2 and "exists already" in result.stderr
    assert git_status(small_project) == ""


def test_names_are_renamed_where_they_are_code_and_only_there(small_project: Path) -> None:
    result = rename(small_project, "new_pkg")
    assert result.returncode == 0, result.stderr
    assert f"{WORD}-train -> new-pkg-train" in result.stdout
    assert not (small_project / "src" / WORD).exists()
    # The import changes; a variable and a module that share the name do not.
    assert (small_project / "src" / "new_pkg" / "train.py").read_text() == train_py("new_pkg")
    assert (small_project / "conf" / "model.yaml").read_text() == (
        "_target_: new_pkg.models.Net\npath: pkg://new_pkg.conf\n"
    )
    assert (small_project / "pyproject.toml").read_text() == (
        '[project]\nname = "new-pkg"\n[project.optional-dependencies]\ndev = ["new-pkg[export]"]\n'
        '[project.scripts]\nnew-pkg-train = "new_pkg.train:main"\nnew-pkg-eval = "new_pkg.eval:main"\n'
        '[tool.setuptools]\npackage-dir = { "" = "src", "new_pkg.conf" = "conf" }\npackages = ["new_pkg"]\n'
    )
    assert (small_project / "Makefile").read_text() == "train:\n\tpython -m new_pkg.train $(ARGS)\n"
    # Prose, other folders and binary files keep the word.
    assert (small_project / "README.md").read_text() == readme("new-pkg", "new_pkg")
    assert f" {WORD}.train ".encode() in (small_project / "data.gz").read_bytes()


def test_running_it_again_with_the_same_name_changes_nothing(small_project: Path) -> None:
    assert rename(small_project, "new_pkg").returncode == 0
    before = {p: p.read_bytes() for p in small_project.rglob("*") if p.is_file() and ".git" not in p.parts}
    status = git_status(small_project)
    again = rename(small_project, "new_pkg")
    assert again.returncode == 0 and "already named 'new_pkg': nothing to do" in again.stdout
    assert git_status(small_project) == status
    assert {p: p.read_bytes() for p in small_project.rglob("*") if p.is_file() and ".git" not in p.parts} == (
        before
    )


def test_a_renamed_project_can_be_renamed_again(small_project: Path) -> None:
    assert rename(small_project, "new_pkg").returncode == 0
    commit_all(small_project)
    result = rename(small_project, "other_pkg")
    assert result.returncode == 0, result.stderr
    assert "new-pkg-train -> other-pkg-train" in result.stdout
    assert (small_project / "src" / "other_pkg" / "train.py").read_text() == train_py("other_pkg")
    assert (small_project / "README.md").read_text() == readme("other-pkg", "other_pkg")


def test_this_repository_is_planned_completely() -> None:
    """The rename's view of the real project: its commands, and no code reference left after rewriting."""
    script = load_script()
    target = "my_project" if CURRENT != "my_project" else "other_project"  # also in a copy renamed so
    old, new = script.plan(REPO, target)
    assert old.module == CURRENT and new.module == target
    pyproject = (REPO / "pyproject.toml").read_text()
    commands = re.findall(rf'^([\w-]+) = "{CURRENT}\.(\w+):main"', pyproject, flags=re.M)
    assert commands, "pyproject.toml lists no console scripts"
    assert old.scripts == {command: f"{new.distribution}-{module}" for command, module in commands}
    assert {"train", "eval", "conf", "models", "data"} <= set(old.submodules)

    code_reference = re.compile(
        rf"(?:import|from|-m) {CURRENT}\b|\b{CURRENT}(?:\\)?\.(?:{'|'.join(old.submodules)})\b|src/{CURRENT}\b"
        rf'|"{CURRENT}"|"{re.escape(old.distribution)}[\["]'
    )
    for path in project_files(REPO):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        rewritten = script.rewrite(text, old, new)
        assert not code_reference.search(rewritten), f"{path} would still use {CURRENT}"
        for command in old.scripts:
            assert not re.search(rf"(?<![\w-]){command}(?![\w-])", rewritten), f"{path} still says {command}"


def test_imports_are_sorted_again_where_ruff_is_installed(small_project: Path) -> None:
    """A new name can sort after another first-party module: ruff re-sorts what the rename changed."""
    script = load_script()
    if script.find_ruff(small_project) is None:
        pytest.skip("ruff is not installed")
    (small_project / "src" / WORD / "cli.py").write_text(
        f"from {WORD}.models import Net\nfrom {WORD}.train import main\nfrom tests import helpers\n"
    )
    (small_project / "tests").mkdir()
    (small_project / "tests" / "__init__.py").write_text("")
    (small_project / "tests" / "helpers.py").write_text("")
    (small_project / "pyproject.toml").write_text(
        (small_project / "pyproject.toml").read_text() + '[tool.ruff]\nsrc = ["src", "."]\n'
    )
    commit_all(small_project)
    assert rename(small_project, "zz_pkg").returncode == 0
    assert (small_project / "src" / "zz_pkg" / "cli.py").read_text() == (
        "from tests import helpers\nfrom zz_pkg.models import Net\nfrom zz_pkg.train import main\n"
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_rename_without_a_name_shows_the_usage() -> None:
    result = subprocess.run(["make", "-s", "rename"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "usage: make rename NAME=my_project" in result.stderr


def project_files(root: Path) -> list[Path]:
    """The files a clone plus the uncommitted work would have: tracked and untracked, not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip("not running from a git checkout")
    return [root / name for name in filter(None, listed.stdout.split("\0")) if (root / name).is_file()]


def venv_on_this_environment(venv: Path) -> Path:
    """A bare venv that sees this environment's libraries (torch, ...) but not its installed packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A path in a .pth file joins sys.path, but the .pth files inside it (editable installs) are not run.
    libraries = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_libraries.pth").write_text("".join(f"{p}\n" for p in sorted(libraries)))
    return python


@pytest.mark.slow
def test_renamed_copy_installs_and_trains(tmp_path: Path, mnist_dir: Path) -> None:
    start = time.monotonic()
    copy = tmp_path / "copy"
    for source in project_files(REPO):
        (copy / source.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy / source.relative_to(REPO))
    commit_all(copy)

    result = rename(copy, TARGET)
    assert result.returncode == 0, result.stderr
    assert (copy / "src" / TARGET / "train.py").is_file() and not (copy / "src" / CURRENT).exists()
    assert rename(copy, TARGET).stdout.endswith("nothing to do.\n")

    python = venv_on_this_environment(tmp_path / "venv")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(copy)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    hidden = subprocess.run([str(python), "-c", f"import {CURRENT}"], capture_output=True, text=True)
    assert hidden.returncode != 0, f"the venv still imports {CURRENT}: the test would prove nothing"

    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}
    for name in ("PROJECT_ROOT", "PYTHONPATH", "HYDRA_FULL_ERROR"):  # the tests check the short messages
        env.pop(name, None)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    command = python.parent / f"{TARGET.replace('_', '-')}-train"
    trained = subprocess.run(
        [str(command), "debug=fast", "logger=none", f"paths.data_dir={mnist_dir}"],
        cwd=run_dir,
        env={**env, "HYDRA_FULL_ERROR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run,) = (run_dir / "logs" / "debug" / "runs").iterdir()
    config = (run / ".hydra" / "config.yaml").read_text()
    assert f"_target_: {TARGET}.models.classifier.ClassifierModule" in config
    assert (run / "checkpoints" / "last.ckpt").is_file()

    print(f"renamed copy: installed and trained in {time.monotonic() - start:.0f} s")
