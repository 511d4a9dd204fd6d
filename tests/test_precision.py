"""The real-size precision table's pipeline on a tiny Qwen2: two processes, a real comparison, and a broken
Paddle model caught. (The real sizes run as their own task, `python -m modbuild.precision`, not here.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from modbuild.precision.report import markdown
from modbuild.precision.run import Settings, _for_paddle, evaluate, prepare, run_side
from modbuild.precision.sizes import SIZES

ROOT = Path(__file__).resolve().parents[1]
BROKEN = "qwen2.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One HF process and one Paddle process (which also compares a copy with one weight shifted by 1e-2)."""
    size = SIZES["tiny"]
    job = prepare(size, tmp_path_factory.mktemp("precision"), Settings(reps=0))
    hf = run_side("hf", job, ROOT)
    pd = run_side("paddle", job, ROOT, hf=_for_paddle(hf), perturb=[BROKEN, 1e-2])
    return size, hf, pd


def test_tiny_matches_hf_and_a_comparison_happened(tiny):
    size, hf, pd = tiny
    row = evaluate(size, hf, pd)
    assert row["passed"], row["problems"]
    # Small, but not zero: two different frameworks' float32 arithmetic was really compared.
    for metric in ("logits", "forward", "grads"):
        assert 0 < row["metrics"][metric] <= size.bounds[metric], metric
    assert row["metrics"]["loss"] <= size.bounds["loss"]
    layers = size.config["num_hidden_layers"]
    assert row["counts"]["grads"] == 2 + 12 * layers  # embeddings, final norm, 12 per layer (q/k/v biases)
    assert row["counts"]["forward"] >= 13 * layers  # each layer and its sublayers, name-matched
    assert [e["layer"] for e in row["layers"]] == [f"qwen2.layers.{i}" for i in range(layers)]
    assert not row["skipped"] and not row["unpaired_hf_modules"]


def test_a_broken_paddle_model_exceeds_the_bound(tiny):
    size, hf, pd = tiny
    row = evaluate(size, hf, pd | pd["perturbed"])
    assert not row["passed"]
    assert any(p.startswith("forward") for p in row["problems"]), row["problems"]
    assert any(p.startswith("logits") for p in row["problems"]), row["problems"]
    # The per-layer record places the error: layer 0 is untouched, layer 1's MLP is where it starts.
    first, second = row["layers"]
    assert first["forward"]["max_abs"] <= size.bounds["forward"]
    assert second["forward"]["max_abs"] > size.bounds["forward"]
    assert pd["perturbed"]["forward"], "the broken copy was compared"
    mlp = {r["name"]: r["max_abs"] for r in pd["perturbed"]["forward"]}
    assert mlp["qwen2.layers.1.mlp.up_proj"] <= size.bounds["forward"] < mlp["qwen2.layers.1.mlp.down_proj"]


def test_report_shows_bounds_and_failures(tiny):
    size, hf, pd = tiny
    rows = [evaluate(size, hf, pd), evaluate(size, hf, pd | pd["perturbed"])]
    report = {"total_s": 1.0, "settings": vars(Settings(reps=0)), "machine": {"cpus": 2, "python": "3"}, "rows": rows}
    text = markdown(report)
    assert "(≤ 1e-04)" in text and "(≤ 1e-05)" in text
    assert text.count("| ok |") == 1 and "| FAIL: logits" in text


def test_a_parameter_not_compared_fails_the_row(tiny):
    size, hf, pd = tiny
    pd = copy.deepcopy(pd)
    pd["missing_grads"] = ["qwen2.norm.weight"]
    pd["forward"] = [r for r in pd["forward"] if r["name"] != "qwen2.layers.1"]
    row = evaluate(size, hf, pd)
    assert not row["passed"]
    assert any("gradients not compared" in p for p in row["problems"])
    assert any("decoder layer outputs not compared" in p for p in row["problems"])
