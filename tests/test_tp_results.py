"""One TP launch serves both TP checks of a model, once, and only for the same sources."""

from __future__ import annotations

import pytest

from modbuild.verify import tp_results
from modbuild.verify.tp_results import tp_result


@pytest.fixture
def launches():
    calls = []

    def launch(model):
        calls.append(model)
        return {"tp2": {"n": len(calls), "check": "tp2"}, "train-tp2": {"n": len(calls), "check": "train-tp2"}}

    launch.calls = calls
    return launch


def test_the_second_check_takes_the_first_ones_launch_once(tmp_path, launches):
    assert tp_result("llama", "tp2", launches, tmp_path) == {"n": 1, "check": "tp2"}
    assert tp_result("llama", "train-tp2", launches, tmp_path) == {"n": 1, "check": "train-tp2"}
    assert launches.calls == ["llama"]
    assert tp_result("llama", "train-tp2", launches, tmp_path) == {"n": 2, "check": "train-tp2"}  # used up: relaunch
    assert tp_result("llama", "tp2", launches, tmp_path) == {"n": 2, "check": "tp2"}
    assert launches.calls == ["llama", "llama"]
    assert tp_result("qwen2", "tp2", launches, tmp_path)["n"] == 3  # another model: its own launch


def test_a_result_from_other_sources_is_not_used(tmp_path, launches, monkeypatch):
    tp_result("llama", "tp2", launches, tmp_path)
    monkeypatch.setattr(tp_results, "sources_key", lambda model: "edited since")
    assert tp_result("llama", "train-tp2", launches, tmp_path)["n"] == 2
    assert launches.calls == ["llama", "llama"]


def test_the_key_covers_the_generated_model_and_the_check_code(tmp_path, monkeypatch):
    key = tp_results.sources_key("llama")
    assert key == tp_results.sources_key("llama") and key != tp_results.sources_key("qwen2")


def test_only_tp_checks(tmp_path, launches):
    with pytest.raises(ValueError, match="not a TP check"):
        tp_result("llama", "hf", launches, tmp_path)


def test_each_check_alone_when_sharing_is_off(tmp_path, launches, monkeypatch):
    monkeypatch.setenv("MODBUILD_TP_SHARED", "0")
    assert tp_result("llama", "tp2", launches, tmp_path, alone=lambda m: {"alone": m}) == {"alone": "llama"}
    assert launches.calls == [] and not list(tmp_path.glob("*.json"))
