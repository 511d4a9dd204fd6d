"""One TP launch per run (modbuild/tp/pool.py): one pool of two ranks serves several models; a model that fails
in a rank fails its own request only, and the next request gets a new pool; nothing outlives the run that owns it.

Real launches: the owner is a child process that submits requests and exits, as a `doit` run does. Two pool
starts in all (~15 s each, mostly imports)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

OWNER = """
import json, sys
from modbuild.tp.pool import PoolError, _running, owner_process, pool_dir, submit
from modbuild.verify.tp_run import WORKER, _models_root

def launcher():
    return _running(pool_dir(owner_process(), _models_root()))

for model in ["llama", "qwen2", "nosuchmodel", "llama"]:
    try:
        answer = submit(WORKER, {"model": model, "mode": "tp2"}, _models_root(), timeout=300)
        row = {"model": model, "logits": answer["result"]["logits_max_abs"], "key": answer["key"]}
    except PoolError as exc:
        row = {"model": model, "error": str(exc)}
    row["launcher"], row["owner"] = launcher(), owner_process()
    print(json.dumps(row), flush=True)
"""


@pytest.fixture(scope="module")
def run():
    done = subprocess.run(
        [sys.executable, "-c", OWNER], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    ended = time.monotonic()
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 4, done.stdout + done.stderr
    return rows, ended


def test_one_launch_serves_several_models(run):
    (llama, qwen2, _, _), _ = run
    assert llama["logits"] <= 1e-5 and qwen2["logits"] <= 1e-5
    assert llama["launcher"] is not None and llama["launcher"] == qwen2["launcher"]


def test_a_failing_model_fails_its_request_only_and_the_pool_restarts(run):
    (first, _, broken, again), _ = run
    assert "error" in broken and "nosuchmodel" in broken["error"] and "rank" in broken["error"]
    assert again["logits"] == first["logits"] and again["key"] == first["key"]  # the same sources, the same result
    assert again["launcher"] != first["launcher"]  # a new pool


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
