"""The hooks of `.pre-commit-hooks.yaml`, run by the real pre-commit in a temporary git repository.

The hook repository is a snapshot of this tree committed in a temporary git repository: the test sees
uncommitted changes and does not need this tree to be a git checkout. pre-commit installs it (core
dependencies only) once per module, into a temporary PRE_COMMIT_HOME. The repository the hooks run in
is a small copy of this project: modular/ and generated/ for llama and qwen2 (no modbuild/).
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pre_commit")
if shutil.which("git") is None:
    pytest.skip("git is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# What `pip install .` of the hook repository needs (pyproject.toml packages modbuild* and generated*).
HOOK_REPO_FILES = ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "modbuild", "generated")
MODELS = ("llama", "qwen2")
QWEN2_CONFIG = "generated/qwen2/configuration_qwen2.py"
QWEN2_MODELING = "generated/qwen2/modeling_qwen2.py"
LLAMA_MODELING = "generated/llama/modeling_llama.py"


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, ignore=IGNORE)
    else:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A clean environment: no user git config or GIT_* variables (as inside a git hook), no PYTHONPATH (the
    hooks must run what pre-commit installed), and one PRE_COMMIT_HOME for the module."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT")) and k != "PYTHONPATH"}
    clean.pop("SKIP", None)
    clean.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
        PRE_COMMIT_HOME=str(tmp_path_factory.mktemp("pre-commit-home")),
    )
    return clean


def git(repo: Path, env: dict, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def pre_commit(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory, env):
    """(path, sha): this tree's hook definitions and package, committed."""
    repo = tmp_path_factory.mktemp("hook-repo")
    for name in HOOK_REPO_FILES:
        _copy(ROOT / name, repo / name)
    git(repo, env, "init", "-q")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "snapshot")
    return repo, git(repo, env, "rev-parse", "HEAD").strip()


def make_repo(path: Path, hook_repo: tuple[Path, str], env: dict) -> Path:
    """A git repository laid out like this project, with both hooks configured, everything committed. It has no
    modbuild/ (the hook installs it), so a clean check also shows the output does not depend on where it runs."""
    for model in MODELS:
        _copy(ROOT / "modular" / model, path / "modular" / model)
        _copy(ROOT / "generated" / model, path / "generated" / model)
    _copy(ROOT / "generated" / "__init__.py", path / "generated" / "__init__.py")
    url, sha = hook_repo
    (path / ".pre-commit-config.yaml").write_text(
        "repos:\n"
        f"  - repo: {url}\n"
        f"    rev: {sha}\n"
        "    hooks:\n"
        "      - id: modbuild-convert\n"
        "      - id: modbuild-check\n"
    )
    git(path, env, "init", "-q")
    git(path, env, "add", "-A")
    git(path, env, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory, hook_repo, env):
    """Install the hook environment once (pip install of the snapshot, core dependencies only)."""
    repo = make_repo(tmp_path_factory.mktemp("install"), hook_repo, env)
    start = time.perf_counter()
    result = pre_commit(repo, env, "install-hooks")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"\npre-commit install-hooks: {time.perf_counter() - start:.1f} s")


@pytest.fixture
def repo(tmp_path, hook_repo, env, installed):
    return make_repo(tmp_path / "repo", hook_repo, env)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def hook_status(result: subprocess.CompletedProcess, hook: str) -> str:
    """`Passed` / `Failed` / `Skipped` of one hook in pre-commit's summary lines (on stderr under `git commit`)."""
    names = {"modbuild-check": "modbuild check", "modbuild-convert": "modbuild convert"}
    lines = [line for line in output(result).splitlines() if line.startswith(names[hook] + " (")]
    assert len(lines) == 1, output(result)
    return lines[0].rsplit(".", 1)[-1].strip()


def changed(repo: Path, env: dict) -> list[str]:
    """Files that differ from the index (what a hook wrote)."""
    return git(repo, env, "diff", "--name-only").split()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} not found once"
    path.write_text(text.replace(old, new))


def test_clean_tree_passes_both_hooks(repo, env):
    start = time.perf_counter()
    result = pre_commit(repo, env, "run", "--all-files")
    print(f"\nboth hooks on a clean tree: {time.perf_counter() - start:.1f} s")
    assert result.returncode == 0, output(result)
    assert hook_status(result, "modbuild-check") == "Passed"
    assert hook_status(result, "modbuild-convert") == "Passed"
    assert changed(repo, env) == []


def test_hooks_skip_commits_without_model_files(repo, env):
    (repo / "notes.md").write_text("notes\n")
    git(repo, env, "add", "notes.md")
    result = pre_commit(repo, env, "run")
    assert result.returncode == 0, output(result)
    assert hook_status(result, "modbuild-check") == "(no files to check)Skipped"
    assert hook_status(result, "modbuild-convert") == "(no files to check)Skipped"


def test_hand_edit_of_a_staged_generated_file_fails_the_commit(repo, env):
    """Only the generated file is staged: both hooks still find the hand edit, name the file, and write nothing."""
    assert pre_commit(repo, env, "install").returncode == 0
    target = repo / QWEN2_MODELING
    edit(target, "x1, x2 = x.chunk(2, axis=-1)", "x1, x2 = x.chunk(2, axis=1)")
    edited = target.read_text()
    git(repo, env, "add", QWEN2_MODELING)
    head = git(repo, env, "rev-parse", "HEAD")

    start = time.perf_counter()
    result = subprocess.run(
        ["git", "commit", "-m", "edit"], cwd=repo, env=env, capture_output=True, text=True, check=False
    )
    print(f"\ngit commit with both hooks: {time.perf_counter() - start:.1f} s")
    assert result.returncode != 0, output(result)
    assert git(repo, env, "rev-parse", "HEAD") == head  # no commit
    assert hook_status(result, "modbuild-check") == "Failed"
    assert hook_status(result, "modbuild-convert") == "Failed"  # refuses to discard the edit
    assert f"{repo / QWEN2_MODELING}: edited by hand" in output(result)
    assert "generated/llama" not in output(result)
    assert target.read_text() == edited


def test_stale_generated_file_is_named_then_regenerated(repo, env):
    edit(repo / "modular/qwen2/modular_qwen2.py", "max_window_layers: int = 28,", "max_window_layers: int = 24,")
    git(repo, env, "add", "modular/qwen2/modular_qwen2.py")

    start = time.perf_counter()
    check = pre_commit(repo, env, "run", "modbuild-check")
    print(f"\nmodbuild-check, one stale file: {time.perf_counter() - start:.1f} s")
    assert check.returncode == 1, output(check)
    assert f"{repo / QWEN2_CONFIG}: stale" in output(check)
    assert QWEN2_MODELING not in output(check) and "generated/llama" not in output(check)
    assert changed(repo, env) == []  # the check writes nothing

    start = time.perf_counter()
    convert = pre_commit(repo, env, "run", "modbuild-convert")
    print(f"modbuild-convert, one stale model: {time.perf_counter() - start:.1f} s")
    # pre-commit's convention: a hook that modifies files fails the commit; the user adds them and commits again.
    assert convert.returncode == 1, output(convert)
    assert "files were modified by this hook" in convert.stdout
    assert changed(repo, env) == [QWEN2_CONFIG]
    assert "max_window_layers: int = 24," in (repo / QWEN2_CONFIG).read_text()

    git(repo, env, "add", QWEN2_CONFIG)
    again = pre_commit(repo, env, "run")
    assert again.returncode == 0, output(again)
    assert hook_status(again, "modbuild-check") == "Passed"
    assert hook_status(again, "modbuild-convert") == "Passed"


def test_parent_change_regenerates_children(repo, env):
    """Only modular/llama is staged, but qwen2 inherits the change: the hooks cover the whole tree."""
    edit(
        repo / "modular/llama/modular_llama.py",
        "hidden_size: int, eps: float = 1e-6)",
        "hidden_size: int, eps: float = 1e-5)",
    )
    git(repo, env, "add", "modular/llama/modular_llama.py")

    check = pre_commit(repo, env, "run", "modbuild-check")
    assert check.returncode == 1 and f"{repo / LLAMA_MODELING}: stale" in output(check), output(check)

    convert = pre_commit(repo, env, "run", "modbuild-convert")
    assert convert.returncode == 1, output(convert)
    assert changed(repo, env) == sorted([LLAMA_MODELING, QWEN2_MODELING])
    assert "eps: float = 1e-5)" in (repo / QWEN2_MODELING).read_text()
    git(repo, env, "add", "-A")
    assert pre_commit(repo, env, "run", "modbuild-check").returncode == 0
