"""`doit verify --shard K/N` (every check exactly once, a model's checks together, balanced by the last run's
times) and `modbuild report merge` (shard reports joined into reports/verify.json/.md)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from doit.exceptions import InvalidDodoFile
from synthetic import FAMILY, write_tree

from modbuild.cli import main as cli
from modbuild.project import Project
from modbuild.tasks import verify_tasks
from modbuild.verify.profile import TIMINGS

ROOT = Path(__file__).resolve().parents[1]


def names(project: Project, shard: str = "") -> list[str]:
    return [task["name"] for task in verify_tasks(project, shard=shard)]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shards_of_the_repository_cover_every_check_exactly_once(n):
    project = Project(ROOT)  # the real model list, balanced by its reports/timings.json if there is one
    every = names(project)
    shards = [names(project, f"{k}/{n}") for k in range(1, n + 1)]
    ran = [name for shard in shards for name in shard]
    assert sorted(ran) == sorted(every) and len(ran) == len(set(ran))
    for shard in shards:  # a model's checks stay together
        models = {name.split(":")[0] for name in shard}
        assert all(name.split(":")[0] not in models for other in shards if other is not shard for name in other)
    if n <= len(project.models):
        assert all(shards), "no shard is empty while there are models to spread"


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path, FAMILY)


def test_the_last_runs_times_balance_the_shards(tree):
    project = Project(tree)
    # without times, the static estimate: every model costs the same, 5 models over 2 shards -> 3 and 2
    sizes = sorted(len({n.split(":")[0] for n in names(project, f"{k}/2")}) for k in (1, 2))
    assert sizes == [2, 3]
    (tree / "reports").mkdir()
    times = {f"{m}:{c}": (60.0 if m == "grand" else 1.0) for m in FAMILY for c in ("modular", "hf", "tp2")}
    (tree / "reports" / TIMINGS).write_text(json.dumps(times))
    alone = {n.split(":")[0] for n in names(project, "1/2")}
    rest = {n.split(":")[0] for n in names(project, "2/2")}
    assert alone == {"grand"} and rest == set(FAMILY) - {"grand"}


@pytest.mark.parametrize(
    ("shard", "message"),
    [("0/2", "K must be between 1 and N (2)"), ("3/2", "K must be between 1 and N"), ("2", "expected K/N")],
)
def test_a_bad_shard_is_an_error(tree, shard, message):
    with pytest.raises(InvalidDodoFile, match=re.escape(f"verify --shard {shard}: {message}")):
        names(Project(tree), shard)


def test_shard_and_model_together_are_refused(tree):
    with pytest.raises(InvalidDodoFile, match="give one of them"):
        list(verify_tasks(Project(tree), "solo", shard="1/2"))


# ---------------------------------------------------------------------------------------------------- merge


def record(model: str, check: str, logits: float) -> dict:
    return {
        "model": model, "check": check, "metrics": {"logits": logits}, "bounds": {"logits": 1e-4}, "notes": [],
        "trace": [], "error": "", "passed": logits <= 1e-4, "applicable": True,
    }  # fmt: skip


def report(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"versions": {"paddlepaddle": "shard's"}, "records": records}))
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    """The repository's model list (merged reports keep only models that exist) and a committed report."""
    shutil.copytree(ROOT / "modular", tmp_path / "modular")
    report(tmp_path / "reports" / "verify.json", [record("llama", "hf", 1e-6), record("qwen2", "hf", 1e-6)])
    return tmp_path


def test_merge_takes_each_shards_own_rows(project, tmp_path, capsys):
    a = report(tmp_path / "a" / "verify.json", [record("llama", "hf", 2e-6), record("qwen2", "hf", 1e-6)])
    b = report(tmp_path / "b" / "verify.json", [record("llama", "hf", 1e-6), record("qwen2", "hf", 3e-3)])
    (tmp_path / "b" / TIMINGS).write_text(json.dumps({"qwen2:hf": 4.5}))
    assert cli(["report", "merge", str(a), str(b), "--root", str(project)]) == 0
    merged = json.loads((project / "reports" / "verify.json").read_text())
    assert merged["versions"] == {"paddlepaddle": "shard's"}  # what the shards ran with, not the merging machine
    rows = {r["model"]: r for r in merged["records"]}
    assert rows["llama"]["metrics"]["logits"] == 2e-6 and rows["qwen2"]["metrics"]["logits"] == 3e-3
    md = (project / "reports" / "verify.md").read_text()
    assert "| qwen2 |" in md and "hf FAIL" in md
    assert json.loads((project / "reports" / TIMINGS).read_text()) == {"qwen2:hf": 4.5}
    assert "merged 2 reports: 2 checks from the shards" in capsys.readouterr().out


def test_merge_refuses_two_shards_that_ran_the_same_check(project, tmp_path, capsys):
    a = report(tmp_path / "a" / "verify.json", [record("llama", "hf", 2e-6)])
    b = report(tmp_path / "b" / "verify.json", [record("llama", "hf", 5e-6)])
    before = (project / "reports" / "verify.json").read_text()
    assert cli(["report", "merge", str(a), str(b), "--root", str(project)]) == 1
    err = capsys.readouterr().err
    assert f"{a} and {b} both ran llama:hf, with different results" in err
    assert (project / "reports" / "verify.json").read_text() == before  # nothing written


def test_merge_names_an_input_that_is_not_a_report(project, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli(["report", "merge", str(bad), str(tmp_path / "missing.json"), "--root", str(project)]) == 1
    assert f"{bad}: not a verify report" in capsys.readouterr().err
