"""doit on a synthetic tree: base -> child1 -> grand, base -> child2, and an unrelated root solo.

Every test runs doit in a subprocess, as a user would; each mutating test builds its own tree.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic import (
    BASE,
    DOIT,
    FAMILY,
    converted,
    doit,
    doit_env,
    executed,
    tree_on_path,
    up_to_date,
    write_modular,
    write_tree,
)

from modbuild import doit_run, tasks
from modbuild.atomic import atomic_write
from modbuild.header import is_hand_edited
from modbuild.project import Project

DESCENDANTS = {"base": {"base", "child1", "grand", "child2"}, "child1": {"child1", "grand"}, "grand": {"grand"}}


def gen(root: Path, model: str, kind: str = "modeling") -> Path:
    return root / "generated" / model / f"{kind}_{model}.py"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def modular(root: Path, model: str) -> Path:
    return root / "modular" / model / f"modular_{model}.py"


def generated_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "generated").rglob("*.py"))}


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in (root / "generated").rglob("*.py")}


def assert_ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"doit failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def tree(tmp_path) -> Path:
    """A fresh, unbuilt tree."""
    return write_tree(tmp_path / "tree", FAMILY)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> tuple[Path, Path]:
    """(where, saved): a tree built once at `where`, and a copy of it (mtimes too) in `saved`.

    doit's dep DB records absolute paths, so a built tree is only valid where it was built: `built`
    restores the copy to that same place, which is the state right after the build.
    """
    where = write_tree(tmp_path_factory.mktemp("built") / "tree", FAMILY)
    result = assert_ok(doit(where, "convert"))
    assert converted(result.stdout) == set(FAMILY)
    saved = tmp_path_factory.mktemp("snapshot") / "tree"
    shutil.copytree(where, saved)
    return where, saved


@pytest.fixture
def built(snapshot) -> Path:
    """A freshly built tree, for tests that change it."""
    where, saved = snapshot
    shutil.rmtree(where)
    shutil.copytree(saved, where)
    return where


@pytest.fixture(scope="module")
def reference(snapshot) -> Path:
    """A built tree that tests only read."""
    return snapshot[1]


# --- a full build -----------------------------------------------------------------------------------------------


def test_full_build_writes_every_target(reference):
    project = Project(reference)
    for model in FAMILY:
        on_disk = {p for p in (reference / "generated" / model).iterdir()}
        assert on_disk == set(project.outputs(model)), model
    # configuration_<m>.py: own Config class (base, child1, grand), inherited through BaseModel (child2), none (solo)
    assert [m for m in sorted(FAMILY) if project.has_config(m)] == ["base", "child1", "child2", "grand"]
    assert not any(p.name.endswith(".tmp") for p in (reference / "generated").rglob("*"))


def test_project_outputs_match_the_converter(reference):
    from modbuild.convert import convert_file

    project = Project(reference)
    for model in FAMILY:
        outputs = convert_file(project.modular_file(model), project.layout)
        assert set(outputs) | {reference / "generated" / model / "__init__.py"} == set(project.outputs(model))


def test_generated_modules_import_and_work(reference):
    with tree_on_path(reference):
        mods = {m: importlib.import_module(f"generated.{m}.modeling_{m}") for m in FAMILY}
        configs = {m: importlib.import_module(f"generated.{m}.configuration_{m}") for m in ("base", "child1", "grand")}
        child2_config = importlib.import_module("generated.child2.configuration_child2")
    for mod in mods.values():
        assert Path(mod.__file__).is_relative_to(reference)
    run = {
        "base": mods["base"].BaseModel(configs["base"].BaseConfig()),
        "child1": mods["child1"].Child1Model(configs["child1"].Child1Config()),
        "grand": mods["grand"].GrandModel(configs["grand"].GrandConfig(scale=3)),
        "child2": mods["child2"].Child2Model(child2_config.Child2Config()),
    }
    # forward(3): attention then MLP
    assert {m: model.forward(3) for m, model in run.items()} == {"base": 8, "child1": 108, "grand": 2106, "child2": 4}
    assert mods["solo"].SoloModel().forward(3) == -3
    assert configs["grand"].GrandConfig.model_type == "grand" and child2_config.Child2Config.model_type == "child2"
    assert isinstance(run["grand"].mlp, mods["grand"].GrandMLP)  # renamed all the way down
    assert not any("Base" in name or "Child1" in name for name in vars(mods["grand"]))
    # generated code imports nothing from other models
    for model, mod in mods.items():
        text = Path(mod.__file__).read_text()
        assert "generated." not in text and "from .." not in text, model


# --- incremental builds ------------------------------------------------------------------------------------------


def test_second_run_does_nothing(built):
    result = assert_ok(doit(built, "convert"))
    assert executed(result.stdout) == []
    assert sorted(up_to_date(result.stdout)) == sorted(f"convert:{m}" for m in FAMILY)


def test_touch_without_change_does_nothing(built):
    os.utime(modular(built, "base"))  # newer mtime, same content: doit's md5 check keeps it up to date
    assert executed(assert_ok(doit(built, "convert")).stdout) == []


@pytest.mark.parametrize(
    "model, old, new",
    [
        ("grand", "return x + 1000", "return x + 2000"),  # a leaf
        ("child1", "return base_helper(x) + 100", "return base_helper(x) + 200"),  # a middle node
        ("base", "return x + 1\n", "return x + 3\n"),  # the root
    ],
)
def test_edit_rebuilds_the_model_and_its_descendants(built, model, old, new):
    before = generated_files(built)
    edit(modular(built, model), old, new)
    result = assert_ok(doit(built, "convert"))
    assert converted(result.stdout) == DESCENDANTS[model]
    after = generated_files(built)
    changed = {path.split("/")[1] for path in after if after[path] != before[path]}
    assert model in changed and changed <= DESCENDANTS[model]
    assert executed(assert_ok(doit(built, "convert")).stdout) == []


def test_byte_identical_parent_does_not_rebuild_children(built):
    before, stamps = generated_files(built), mtimes(built)
    # an extra blank line inside a class: ruff formats it away, so base's output is unchanged
    edit(
        modular(built, "base"),
        "        self.config = config\n\n    def forward",
        "        self.config = config\n\n\n    def forward",
    )
    result = assert_ok(doit(built, "convert"))
    assert converted(result.stdout) == {"base"}
    assert generated_files(built) == before and mtimes(built) == stamps  # not even rewritten


def test_one_model_builds_only_what_it_needs(tree):
    result = assert_ok(doit(tree, "convert:grand"))
    assert executed(result.stdout) == ["convert:base", "convert:child1", "convert:grand"]
    assert not (tree / "generated" / "child2").exists()


def test_parallel_build_from_scratch(tree, reference):
    result = assert_ok(doit(tree, "-n", "2", "convert"))
    assert converted(result.stdout) == set(FAMILY)
    assert generated_files(tree) == generated_files(reference)
    assert executed(assert_ok(doit(tree, "convert")).stdout) == []


def test_converter_change_rebuilds_everything(built, monkeypatch):
    # the converter's own sources are file_dep of every model
    project = Project(built)
    deps = {t["name"]: set(t["file_dep"]) for t in tasks.convert_tasks(project)}
    for name, dep in deps.items():
        assert set(tasks.CONVERTER_SOURCES) <= dep, name
    assert any(p.endswith("convert/merge.py") for p in tasks.CONVERTER_SOURCES)
    assert any(p.endswith("naming.py") for p in tasks.CONVERTER_SOURCES)
    # and a parent's outputs are its children's
    assert str(gen(built, "base", "configuration")) in deps["child2"]
    assert str(gen(built, "child1")) in deps["grand"] and str(gen(built, "base")) not in deps["grand"]


# --- hand edits --------------------------------------------------------------------------------------------------


def test_hand_edit_fails_the_build_and_keeps_children(built):
    hand = gen(built, "child1")
    edit(hand, "return child1_helper(x) + 100", "return child1_helper(x) + 7")
    edit(modular(built, "child1"), "+ 100", "+ 200")  # grand now needs a rebuild...
    grand_before = gen(built, "grand").read_text()
    result = doit(built, "--continue", "convert")
    assert result.returncode != 0
    assert f"{hand}: edited by hand" in result.stderr
    assert "convert:child1" in executed(result.stdout) and "convert:grand" not in executed(result.stdout)
    assert gen(built, "grand").read_text() == grand_before  # ... but is not built from the edited copy
    assert "+ 7" in hand.read_text()  # the edit is kept

    result = assert_ok(doit(built, "convert", "--force"))
    assert converted(result.stdout) == {"child1", "grand"}
    assert f"{hand}: overwriting a hand edit" in result.stderr
    assert "+ 200" in hand.read_text() and not is_hand_edited(hand.read_text())
    assert executed(assert_ok(doit(built, "convert")).stdout) == []


def test_hand_edit_alone_is_detected_and_force_by_environment(built):
    before = generated_files(built)
    hand = gen(built, "base", "configuration")
    edit(hand, "def __init__(self, scale=1)", "def __init__(self, scale=2)")
    result = doit(built, "convert")
    assert result.returncode != 0 and str(hand) in result.stderr
    assert converted(result.stdout) == {"base"}  # its children wait for it
    result = assert_ok(doit(built, "convert", env={"MODBUILD_FORCE": "1"}))
    # doit reruns the children of a task that failed; the regenerated tree is the original.
    assert "base" in converted(result.stdout) and generated_files(built) == before


# --- doit check --------------------------------------------------------------------------------------------------


def test_check_passes_on_a_clean_tree_and_writes_nothing(built):
    stamps = mtimes(built)
    assert_ok(doit(built, "check"))
    assert mtimes(built) == stamps


def test_check_names_hand_edited_and_stale_files(built):
    hand = gen(built, "child2")
    edit(hand, "return x - 1", "return x - 2")
    edit(modular(built, "grand"), "return x + 1000", "return x + 2000")  # grand's generated file is now stale
    stamps = mtimes(built)
    result = doit(built, "check")
    assert result.returncode != 0
    assert f"{hand}: edited by hand" in result.stderr
    assert f"{gen(built, 'grand')}: stale" in result.stderr
    assert str(gen(built, "child1")) not in result.stderr
    assert mtimes(built) == stamps


def test_check_fails_when_the_converter_fails(built):
    # valid Python that the converter rejects: the failure names the modular file and line
    edit(modular(built, "child2"), "        return x - 1\n", "        return x if x else super().forward(x)\n")
    result = doit(built, "check")
    assert result.returncode != 0
    assert f"{modular(built, 'child2')}:6:" in result.stderr
    result = doit(built, "convert")
    assert result.returncode != 0 and f"{modular(built, 'child2')}:6:" in result.stderr


def test_syntax_error_fails_that_model_and_the_others_still_build(built):
    modular(built, "child2").write_text(FAMILY["child2"] + "\n\nclass Broken(\n")
    modular(built, "solo").write_text(modular(built, "solo").read_text() + "\n# touched\n")
    where = f"{modular(built, 'child2')}:13: syntax error"
    result = doit(built, "convert")
    assert result.returncode != 0 and where in result.stderr and "Traceback" not in result.stderr
    assert "solo" in converted(result.stdout)  # an independent model still converts
    result = doit(built, "check")
    assert result.returncode != 0 and where in result.stderr
    assert_ok(doit(built, "list"))


def test_import_cycle_fails_cleanly(built):
    write_modular(built, "base", "from generated.grand.modeling_grand import GrandMLP\n\n" + BASE)
    result = doit(built, "convert")
    assert result.returncode == 3 and "ERROR: import cycle: " in result.stderr and "Traceback" not in result.stderr


# --- configuration outputs ---------------------------------------------------------------------------------------

CHILD3 = """\
from generated.base.modeling_base import BaseMLP


class Child3MLP(BaseMLP):
    def forward(self, x):
        return x
"""


def test_inherited_config_that_is_not_generated_is_an_error(tmp_path):
    # child3 inherits base's Config but uses nothing that needs it, so the converter writes no
    # configuration_child3.py although the build declares it: fail clearly rather than rebuild forever
    root = write_tree(tmp_path, {"base": BASE, "child3": CHILD3})
    result = doit(root, "convert")
    assert result.returncode != 0
    assert f"{modular(root, 'child3')}: child3 inherits a *Config class but uses none" in result.stderr
    write_modular(
        root,
        "child3",
        "from generated.base.configuration_base import BaseConfig\n"
        + CHILD3
        + '\n\nclass Child3Config(BaseConfig):\n    model_type = "child3"\n',
    )
    assert converted(assert_ok(doit(root, "convert")).stdout) == {"child3"}
    assert gen(root, "child3", "configuration").exists()
    assert executed(assert_ok(doit(root, "convert")).stdout) == []


# --- interruptions and concurrency -------------------------------------------------------------------------------


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "modeling_x.py"
    atomic_write(target, "old\n")

    def crash(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write(target, "new\n" * 10000)
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["modeling_x.py"]  # no temporary file left
    monkeypatch.undo()
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n" and len(list(target.parent.iterdir())) == 1


def test_interrupt_inside_write_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "modeling_x.py"
    target.write_text("old\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["modeling_x.py"]


HOLD_LOCK = """
import sys, time
from pathlib import Path
from modbuild.lock import hold_project_lock
hold_project_lock(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_second_run_waits_for_the_first(built):
    holder = subprocess.Popen(
        # held long enough for doit to start and ask for the lock on a loaded machine (1 s was flaky there)
        [sys.executable, "-c", HOLD_LOCK, str(built), "4.0"],
        stdout=subprocess.PIPE,
        text=True,
        env=doit_env(),
    )
    try:
        assert holder.stdout.readline() == "held\n"
        result = assert_ok(doit(built, "convert"))
        assert holder.poll() is not None, "doit finished while another process held the lock"
    finally:
        holder.kill()
        holder.wait()
    assert "another doit run holds" in result.stderr and "waiting for it to finish" in result.stderr
    assert executed(result.stdout) == []


def test_listing_tasks_neither_waits_nor_locks(built):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(built), "30"], stdout=subprocess.PIPE, text=True, env=doit_env()
    )
    try:
        assert holder.stdout.readline() == "held\n"
        result = assert_ok(doit(built, "list", timeout=20))
        assert holder.poll() is None, "the lock holder was meant to outlive `doit list`"
    finally:
        holder.kill()
        holder.wait()
    assert "waiting" not in result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["check", "convert", "render_graph"]


def test_sigterm_handler_raises_keyboard_interrupt():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(KeyboardInterrupt):
            doit_run.stop(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # a second SIGTERM cannot cut the DB save short
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_keeps_finished_work(tree):
    proc = subprocess.Popen(
        [*DOIT, "convert"],
        cwd=tree,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=doit_env({"PYTHONUNBUFFERED": "1"}),
    )
    started = []
    try:
        deadline = time.monotonic() + 30
        while len(started) < 2 and time.monotonic() < deadline:  # `convert x  written` is printed as x ends
            line = proc.stdout.readline()
            if not line:
                break
            started += executed(line)
        assert len(started) == 2, started
        proc.send_signal(signal.SIGTERM)  # the first task has finished, the second is running
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    assert not any(p.name.endswith(".tmp") for p in (tree / "generated").rglob("*"))
    result = assert_ok(doit(tree, "convert"))
    assert started[0] in up_to_date(result.stdout), (started, result.stdout, err)
    assert executed(result.stdout), "the SIGTERM came after the run had finished"
    assert executed(assert_ok(doit(tree, "convert")).stdout) == []


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    from modbuild.atomic import atomic_write

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "new.py", "x = 1\n")
        assert (tmp_path / "new.py").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
        (tmp_path / "new.py").chmod(0o664)
        atomic_write(tmp_path / "new.py", "x = 2\n")
        assert (tmp_path / "new.py").stat().st_mode & 0o777 == 0o664  # a replaced file keeps its mode
    finally:
        os.umask(umask)


# --- bad modular input fails its model only, naming the file (issue 19) ------------------------------------------


def test_an_empty_modular_file_fails_and_deletes_nothing(built):
    config = gen(built, "child1", "configuration")
    before = generated_files(built)
    modular(built, "child1").write_text("# nothing here yet\n")
    result = doit(built, "convert")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{modular(built, 'child1')}:1: empty modular file: it defines no class or function" in result.stderr
    assert config.exists() and generated_files(built) == before  # nothing written, nothing deleted
    assert "convert:grand" not in executed(result.stdout)  # its child is not built from a broken parent


def test_a_byte_that_is_not_utf8_fails_only_its_model(built):
    path = modular(built, "child2")
    path.write_bytes(path.read_bytes().replace(b"return x - 1", b"return x - 1  # \xff"))
    where = f"{path}:6: not valid UTF-8 (byte 0xff at column 25); save the file as UTF-8"
    listing = assert_ok(doit(built, "list"))
    assert "convert" in listing.stdout
    modular(built, "solo").write_text(modular(built, "solo").read_text() + "\n# touched\n")
    result = doit(built, "convert")
    assert result.returncode != 0 and where in result.stderr and "Traceback" not in result.stderr
    assert "solo" in converted(result.stdout)
    result = doit(built, "check")
    assert result.returncode != 0 and where in result.stderr and "Traceback" not in result.stderr
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"  # \xff", b""))  # a BOM: Python accepts it
    assert_ok(doit(built, "convert"))
    assert not gen(built, "child2").read_bytes().startswith(b"\xef\xbb\xbf")
