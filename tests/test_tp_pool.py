"""One TP launch per run (modbuild/tp/pool.py): one pool of two ranks serves several models; a model that fails
in a rank fails its own request only, and the next request gets a new pool; nothing outlives the run that owns it.

Real launches: the owner is a child process that submits requests and exits, as a `doit` run does. Two pool
starts in all (~15 s each, mostly imports)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modbuild.verify.tp_run import PLAN_ENV

ROOT = Path(__file__).resolve().parents[1]

OWNER = """
import json, sys
sys.path.insert(0, sys.argv[1])  # the copied tree's `generated` package
from modbuild.tp.pool import _running, owner_process, pool_dir
from modbuild.verify.tp_run import TPCheckError, _models_root, pool_request

def launcher():
    return _running(pool_dir(owner_process(), _models_root()))

def answers(model):  # the answers of the run's pools to requests for `model`, read by their clients
    used = (pool_dir(owner_process(), _models_root()) / "results").glob("*.used")
    return sorted(p.stem for p in used if json.loads(p.read_text())["result"]["model"] == model)

for model in ["llama", "qwen2", "nosuchmodel", "llama", "edit llama", "llama", "bert"]:
    if model.startswith("edit "):  # a model file edited while the pool holds the old one
        path = _models_root() / "generated" / "llama" / "modeling_llama.py"
        path.write_text(path.read_text() + "\\n# edited\\n")
        continue
    try:
        row = {"model": model, "logits": pool_request(model, "tp2", timeout=300)["logits_max_abs"]}
    except TPCheckError as exc:
        row = {"model": model, "error": str(exc)}
    row["launcher"], row["owner"], row["root"] = launcher(), owner_process(), str(_models_root())
    row["answers"] = answers(model)
    print(json.dumps(row), flush=True)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The requests of one owner, on a copy of the tree's generated models and specs."""
    tree = tmp_path_factory.mktemp("tp_pool")
    shutil.copytree(ROOT / "generated", tree / "generated", ignore=shutil.ignore_patterns("__pycache__"))
    for model in ("llama", "qwen2", "bert"):
        shutil.copytree(ROOT / "modular" / model, tree / "modular" / model)
    # As in a `doit` run whose plan names bert's TP check: the first request queues bert's
    env = {**os.environ, PLAN_ENV: "bert"}
    done = subprocess.run(
        [sys.executable, "-c", OWNER, str(tree)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    ended = time.monotonic()
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 6, done.stdout + done.stderr
    assert rows[0]["root"] == str(tree)
    return rows, ended


def test_one_launch_serves_several_models(run):
    (llama, qwen2, *_), _ = run
    assert llama["logits"] <= 1e-5 and qwen2["logits"] <= 1e-5
    assert llama["launcher"] is not None and llama["launcher"] == qwen2["launcher"]


def test_a_failing_model_fails_its_request_only_and_the_pool_restarts(run):
    (first, _, broken, again, *_), _ = run
    assert "error" in broken and "nosuchmodel" in broken["error"] and "rank" in broken["error"]
    assert again["logits"] == first["logits"]  # the same sources, the same result
    assert again["launcher"] != first["launcher"]  # a new pool


def test_a_pool_that_holds_other_sources_is_not_used(run):
    """The model's file changed after the pool imported it: the answer from the old code is dropped, the pool
    replaced, and the request answered by a pool that loaded the edited file."""
    (*_, before, after, _), _ = run
    assert "logits" in after and after["launcher"] != before["launcher"]


def test_a_queued_request_is_answered_once_and_taken_by_its_client(run):
    """bert's request, queued by the run's first request, was computed by the first pool before the pools that
    followed it were started; bert's own request later took that answer instead of asking again."""
    (*_, bert), _ = run
    assert bert["logits"] <= 1e-5
    assert bert["answers"] == ["queued-bert-tp2"]  # one answer for bert in the whole run: the queued one


def test_nothing_outlives_the_owner(run):
    rows, ended = run
    owner = "--owner {}:{}".format(*rows[0]["owner"])  # on the launcher's and both ranks' command lines
    while (left := _processes(owner)) and time.monotonic() - ended < 5:
        time.sleep(0.1)
    assert not left, f"still running 5 s after the owner ended: {left}"


def _ranks(owner: str) -> list[str]:
    return [p for p in _processes(owner) if "tp_worker.py" in p and "distributed.launch" not in p]


def _processes(text: str) -> list[str]:
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if text in line]


STARTING = """
import json
from modbuild.tp.pool import owner_process, submit
from modbuild.verify.tp_run import WORKER, _models_root

print(json.dumps(owner_process()), flush=True)
submit(WORKER, {"model": "llama", "mode": "tp2"}, _models_root(), timeout=300)
"""


def test_a_run_killed_while_its_pool_starts_leaves_nothing():
    """SIGKILL (no cleanup at all) of the owner while its ranks are still importing paddle."""
    proc = subprocess.Popen([sys.executable, "-c", STARTING], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        owner = "--owner {}:{}".format(*json.loads(proc.stdout.readline()))
        deadline = time.monotonic() + 120
        while len(_ranks(owner)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_ranks(owner)) == 2, "the ranks never started"
    finally:
        proc.kill()
        proc.wait()
    ended = time.monotonic()
    while (left := _processes(owner)) and time.monotonic() - ended < 5:
        time.sleep(0.1)
    assert not left, f"still running 5 s after the owner was killed: {left}"
