"""What doit says: an interrupted run (Ctrl-C, SIGTERM), a model converted again to the same bytes, a modular
file no model reads, a generated directory no model generates. Every test runs doit in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from synthetic import DOIT, FAMILY, doit, doit_env, executed, up_to_date, write_tree

ROOT = Path(__file__).resolve().parents[1]
# committed models, converted from scratch: about 3 s of work after the first one ends, so a signal sent then
# always lands in the middle of the run
REAL = ("bert", "gemma", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The synthetic family, converted once (tests that change it take a copy)."""
    root = write_tree(tmp_path_factory.mktemp("built") / "tree", FAMILY)
    result = doit(root, "convert")
    assert result.returncode == 0, result.stderr
    return root


def copy_of(built: Path, tmp_path: Path) -> Path:
    """A copy at a new place: doit's dep DB holds absolute paths, so the copy converts everything once more."""
    root = tmp_path / "tree"
    shutil.copytree(built, root, ignore=shutil.ignore_patterns(".doit.db*"))
    return root


@pytest.mark.parametrize(
    ("sig", "options", "code"),
    [
        (signal.SIGINT, ["-n", "2"], 130),  # Ctrl-C in a terminal: the whole process group, workers too
        (signal.SIGTERM, [], 143),
    ],
)
def test_an_interrupted_run_says_one_line_and_keeps_finished_work(tmp_path, sig, options, code):
    root = write_tree(tmp_path / "tree", {})
    for model in REAL:
        shutil.copytree(ROOT / "modular" / model, root / "modular" / model)
    proc = subprocess.Popen(
        [*DOIT, *options, "convert"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=doit_env({"PYTHONUNBUFFERED": "1"}),
        start_new_session=True,  # its own process group, as a shell gives a job
    )
    try:
        first = proc.stdout.readline()
        assert executed(first), first + proc.stderr.read()
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code, (out, err)
    assert err.startswith("interrupted: stopped cleanly, the tree is consistent") and err.count("\n") == 1, err
    assert not any(p.name.endswith(".tmp") for p in (root / "generated").rglob("*"))
    done = executed(first + out)
    again = doit(root, "convert", timeout=120)
    assert again.returncode == 0, again.stderr
    assert set(done) <= set(up_to_date(again.stdout)), (done, again.stdout)  # the dep DB was saved
    assert executed(again.stdout), "the signal came after the run had finished"


def test_a_model_converted_to_the_same_bytes_is_unchanged_not_written(built, tmp_path):
    root = copy_of(built, tmp_path)
    assert doit(root, "convert").returncode == 0  # the copy's new dep DB
    modular = root / "modular" / "base" / "modular_base.py"
    # an extra blank line inside a class: ruff formats it away, so base's output is the same
    modular.write_text(
        modular.read_text().replace("self.config = config\n\n    def", "self.config = config\n\n\n    def", 1)
    )
    before = {p: p.read_bytes() for p in (root / "generated").rglob("*.py")}
    result = doit(root, "convert")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^convert base +unchanged$", result.stdout, re.MULTILINE), result.stdout
    assert not re.search(r"written", result.stdout), result.stdout
    assert {p: p.read_bytes() for p in (root / "generated").rglob("*.py")} == before


def test_a_modular_file_no_model_reads_is_named(built, tmp_path):
    root = copy_of(built, tmp_path)
    stray = root / "modular" / "extra" / "modular_other.py"
    stray.parent.mkdir()
    stray.write_text((root / "modular" / "solo" / "modular_solo.py").read_text())
    second = root / "modular" / "solo" / "modular_solo2.py"
    second.write_text("x = 1\n")
    for command in ("list", "convert"):
        result = doit(root, command)
        assert result.returncode == 0, result.stderr
        assert f"warning: {stray}: ignored: the directory names the model, so its modular file is " in result.stderr
        assert f"warning: {second}: ignored: the model solo is read from modular_solo.py alone" in result.stderr
    check = doit(root, "check")
    assert check.returncode == 1 and f"\n{stray}: ignored: " in check.stderr, check.stderr


def test_a_generated_directory_without_its_modular_file_fails_check(built, tmp_path):
    root = copy_of(built, tmp_path)
    assert doit(root, "check").returncode == 0
    shutil.rmtree(root / "modular" / "grand")
    check = doit(root, "check")
    message = f"{root / 'generated' / 'grand'}/: no {root / 'modular' / 'grand' / 'modular_grand.py'} generates it"
    assert check.returncode == 1 and f"\n{message}" in check.stderr, check.stderr
    result = doit(root, "convert")
    assert result.returncode == 0 and f"warning: {message}" in result.stderr, result.stderr
    assert (root / "generated" / "grand" / "modeling_grand.py").is_file()  # reported, never deleted


def test_a_hand_edit_names_a_doit_command_that_overwrites_it(built, tmp_path):
    root = copy_of(built, tmp_path)
    assert doit(root, "convert").returncode == 0
    edited = root / "generated" / "child1" / "modeling_child1.py"
    edited.write_text(edited.read_text() + "# a hand edit\n")
    result = doit(root, "convert")
    assert result.returncode != 0
    line = next(line for line in result.stderr.splitlines() if line.startswith(f"{edited}: edited by hand"))
    assert line.endswith("`doit convert --force` (this model only: `MODBUILD_FORCE=1 doit convert:child1`)"), line
    command = line.rsplit("`", 2)[-2].split()  # the one-model command, as printed
    env = dict(item.split("=", 1) for item in command if "=" in item)
    forced = doit(root, *command[len(env) + 1 :], env=env)
    assert forced.returncode == 0, forced.stderr
    assert "a hand edit" not in edited.read_text()
