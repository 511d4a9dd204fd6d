"""`doit verify` as a user drives it: a mistyped `--model` is an error, and a partial run updates only its own
rows of the committed reports (reports/verify.json, verify.md, train.md)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from synthetic import DODO, FAMILY, doit, write_tree

from modbuild.verify.record import Record
from modbuild.verify.report import save
from modbuild.verify.train_report import write as write_train

ROOT = Path(__file__).resolve().parents[1]

VERIFY_TASK = """

@task_params(tasks.VERIFY_PARAMS)
def task_verify(model, atol, rtol, trace, shard):
    yield from tasks.verify_tasks(PROJECT, model, atol, rtol, trace, shard)
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A synthetic family whose dodo.py has the repository's `verify` task (its checks are never run here)."""
    root = write_tree(tmp_path_factory.mktemp("verify_cli"), FAMILY)
    (root / "dodo.py").write_text(DODO + VERIFY_TASK)
    return root


@pytest.mark.parametrize(("given", "hint"), [("nosuch", ""), ("Child1", "did you mean 'child1'?")])
def test_unknown_model_is_an_error_listing_the_known_ones(tree, given, hint):
    result = doit(tree, "verify", "--model", given)
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"verify --model {given}: no such model" in result.stderr
    assert "known: base, child1, child2, grand, solo" in result.stderr and hint in result.stderr
    assert "Traceback" not in result.stderr and "verify " not in result.stdout  # no check ran
    assert not (tree / "reports").exists()


def test_known_model_selects_its_checks_only(tree):
    from modbuild.project import Project
    from modbuild.tasks import verify_tasks

    names = [task["name"] for task in verify_tasks(Project(tree), "child1")]
    assert names and all(name.startswith("child1:") for name in names)


@pytest.fixture
def project(tmp_path) -> Path:
    """The repository's modular/ (which models exist) and its committed reports and loss plots."""
    shutil.copytree(ROOT / "modular", tmp_path / "modular")
    (tmp_path / "reports").mkdir()
    for name in ("verify.json", "verify.md", "train.md"):
        shutil.copy(ROOT / "reports" / name, tmp_path / "reports" / name)
    shutil.copytree(ROOT / "reports" / "train", tmp_path / "reports" / "train")  # train.md links the plots there
    return tmp_path


def records(root: Path) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["check"]): r for r in json.loads((root / "reports" / "verify.json").read_text())["records"]}


def rerun(root: Path, model: str, check: str, **changes) -> Record:
    """What one check stores: its committed record, changed, saved as `run_check` saves it."""
    old = records(root)[(model, check)]
    names = {f.name for f in dataclasses.fields(Record)}
    record = Record(**{**{k: v for k, v in old.items() if k in names}, **changes})
    save(root, record)
    if check in ("train", "train-tp2"):
        write_train(root)
    return record


def table_rows(text: str) -> dict[str, str]:
    return {
        line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "---" not in line
    }


def test_one_check_updates_its_row_and_keeps_the_others(project):
    before = records(project)
    md_before = table_rows((project / "reports" / "verify.md").read_text())
    assert len({model for model, _ in before}) > 1
    new = rerun(project, "qwen2", "hf", metrics={**before[("qwen2", "hf")]["metrics"], "logits": 9.5e-6})
    after = records(project)
    assert after[("qwen2", "hf")] == new.to_json()
    assert {k: v for k, v in after.items() if k != ("qwen2", "hf")} == {
        k: v for k, v in before.items() if k != ("qwen2", "hf")
    }
    md_after = table_rows((project / "reports" / "verify.md").read_text())
    assert md_after.keys() == md_before.keys()
    assert {k: v for k, v in md_after.items() if k != "qwen2"} == {k: v for k, v in md_before.items() if k != "qwen2"}
    assert "9.5e-06" in md_after["qwen2"] and "9.5e-06" not in md_before["qwen2"]


def test_one_train_check_keeps_the_other_models_in_train_md(project):
    write_train(project)  # train.md as the committed verify.json's train rows give it
    before = (project / "reports" / "train.md").read_text()
    trained = {model for model, check in records(project) if check == "train"}
    assert len(trained) > 1 and trained <= set(table_rows(before))
    rerun(project, "llama", "train")  # the same result again: train.md must not change at all
    assert (project / "reports" / "train.md").read_text() == before
    rerun(project, "llama", "train", error="RuntimeError: boom")
    after = (project / "reports" / "train.md").read_text().splitlines()
    changed = [line for line in after if line not in before.splitlines()]
    assert changed == ["| llama | train | error: RuntimeError: boom | | | | | | | FAIL |"]
    assert len(after) == len(before.splitlines())


def test_a_removed_model_is_dropped_from_the_reports(project):
    shutil.rmtree(project / "modular" / "gptj")
    rerun(project, "qwen2", "modular")
    assert not [key for key in records(project) if key[0] == "gptj"]
    assert "gptj" not in table_rows((project / "reports" / "verify.md").read_text())
    assert any(key[0] == "llama" for key in records(project))


def test_a_broken_report_is_an_error_and_left_alone(project):
    from modbuild.verify.report import ReportError

    path = project / "reports" / "verify.json"
    path.write_text('{"records": [')
    record = Record("qwen2", "hf", metrics={"logits": 1e-6}, bounds={"logits": 1e-4})
    with pytest.raises(ReportError, match=f"{path}: not a verify report"):
        save(project, record)
    assert path.read_text() == '{"records": ['


def test_a_loss_plot_is_redrawn_only_when_its_curves_change(tmp_path):
    """reports/train/<m>.png carries the key of what it shows; a rerun with the same curves leaves it alone."""
    from modbuild.verify.train_report import plot

    runs = json.loads((ROOT / "reports" / "train" / "qwen2.json").read_text())
    png = tmp_path / "qwen2.png"
    png.write_bytes(b"not this plot")  # a file without the key (an older plot, other code) is drawn over
    plot(png, "qwen2: train", runs)
    first = png.stat().st_mtime_ns, png.read_bytes()
    assert first[1].startswith(b"\x89PNG")
    plot(png, "qwen2: train", runs)
    assert (png.stat().st_mtime_ns, png.read_bytes()) == first  # the same curves: not drawn again
    runs[next(iter(runs))]["loss"][0] += 1e-3
    plot(png, "qwen2: train", runs)
    assert png.read_bytes() != first[1]
