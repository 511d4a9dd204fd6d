"""verify:<m>:train: 20 training steps of the generated Paddle model against HF's PyTorch model.

Same start: the HF model (tiny config, every parameter re-drawn as in the `hf` check) is saved as safetensors and
converted with the project's weight converter into ours; dropout is 0 on both sides and the seeds are fixed. Same
data: `train_loop.batches` (real text as bytes). Same optimizer: `train_loop` (AdamW, warm-up + cosine, global-norm
clipping at 1.0, 2 micro-batches accumulated). On an MoE model both sides train with the router aux loss
(``output_router_logits=True``: the loss is LM loss + ``router_aux_loss_coef`` x aux, HF's semantics on both sides).

Bounds (`train_loop.BOUNDS`): loss ≤ 1e-5 relative at step 1 and ≤ 1e-4 at every step; the learning rate exactly
equal; the global gradient norm before clipping and the norm of the clipped gradients ≤ 1e-4 relative at every
step; after the last step every parameter ≤ 1e-3 (max |diff| / max |HF|, the worst parameter); the weight-decay
sets equal by name (mapped with the model's ``_get_name_mappings``). A failing record names the first step over a
bound and what exceeded there.

verify:<m>:train-tp2 (`check_train_tp2`): the same 20 steps of our model at TP=2 in two processes (and with
sequence parallelism) against TP=1, one request to the run's TP pool (`modbuild.verify.tp_run.run_tp_checks`).
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modbuild.verify.record import Record
from modbuild.verify.train_loop import BOUNDS, Run, TrainConfig, first_over, step_diffs, summarise

TRAIN_BOUNDS = {**BOUNDS, "decay_mismatch": 0.0, "missing_params": 0.0}


def is_moe(config) -> bool:
    return hasattr(config, "output_router_logits")


@contextmanager
def hf_moe_aux_loss_on_cpu():
    """HF 4.55's Qwen2-MoE aux loss calls int(device.index), None on CPU; Qwen3-MoE's function is the same formula
    without that expert-parallel offset (0 on one device). Patched for the duration only."""
    from transformers.models.qwen2_moe import modeling_qwen2_moe
    from transformers.models.qwen3_moe import modeling_qwen3_moe

    original = modeling_qwen2_moe.load_balancing_loss_func
    modeling_qwen2_moe.load_balancing_loss_func = modeling_qwen3_moe.load_balancing_loss_func
    try:
        yield
    finally:
        modeling_qwen2_moe.load_balancing_loss_func = original


def train_config_overrides(model: str) -> dict:
    """Config on top of TINY + the spec's for both sides: dropout off; the router aux loss on for an MoE model."""
    from modbuild.verify.specs import TINY, generated, spec

    config_cls = getattr(generated(model)[1], f"{spec(model).camel}Config")
    overrides = {"attention_dropout": 0.0}
    if is_moe(config_cls(**{**TINY, **spec(model).config})):
        overrides["output_router_logits"] = True
    return overrides


def param_diffs(ours, theirs: Run, mine: Run) -> tuple[float, str, list[str]]:
    """Worst final-parameter difference (max |diff| / max |HF|) over the name mappings, its parameter, and the
    parameters HF has and ours lacks."""
    from modbuild.verify.train_loop import masked_max_rel

    worst, worst_name, missing = 0.0, "", []
    buffers = set(ours.state_dict()) - {n for n, _ in ours.named_parameters()}  # untrained: a router's correction bias
    for m in type(ours)._get_name_mappings(ours.config):
        if m.target_name in buffers:
            continue
        if m.target_name not in mine.params or m.source_name not in theirs.params:
            missing.append(m.target_name)
            continue
        ref = theirs.params[m.source_name]
        trained = theirs.comparable(m.source_name)
        if m.action == "transpose":
            ref, trained = ref.T, None if trained is None else trained.T
        value = masked_max_rel(mine.params[m.target_name], ref, trained)
        if value >= worst:
            worst, worst_name = value, m.target_name
    return worst, worst_name, missing


def decay_mismatch(ours, theirs: Run, mine: Run) -> list[str]:
    """Parameters (our names) that decay on one side only."""
    names = {m.source_name: m.target_name for m in type(ours)._get_name_mappings(ours.config)}
    hf = {names.get(n, n) for n in theirs.decayed}
    return sorted(hf ^ mine.decayed)


def fill_steps(record: Record, mine: Run, ref: Run) -> list[dict[str, float]]:
    """Per-step metrics, their worst values and the first step over a bound into `record`."""
    diffs = step_diffs(mine, ref)
    record.metrics.update(summarise(diffs))
    step, over = first_over(diffs)
    record.metrics["first_step_over"] = float(step)
    if len(mine.loss) != len(ref.loss):
        record.notes.append(f"steps run differ: {len(mine.loss)} against {len(ref.loss)}")
        record.metrics["steps"] = float("inf")
    if step:
        record.notes.append(f"first step over a bound: {step} ({', '.join(over)})")
    return diffs


@dataclass
class Reference:
    """HF's side of a `train` check, run once: the converted checkpoint our model loads, the data, HF's run."""

    model: str
    workdir: Path
    data: list
    theirs: Run

    def load_ours(self):
        from modbuild.verify.specs import generated, spec

        modeling = generated(self.model)[0]
        cls = getattr(modeling, spec(self.model).head_class)
        return cls.from_pretrained(self.workdir / "paddle", dtype="float32")


def hf_reference(model: str, workdir: Path, cfg: TrainConfig) -> Reference:
    """Build HF's model (the `hf` check's weights, dropout off), convert its checkpoint into `workdir`, train it."""
    from modbuild.verify.hf_check import hf_model
    from modbuild.verify.train_loop import batches, train_torch
    from modbuild.weights import convert_hf_to_paddle

    net = hf_model(model, **train_config_overrides(model))
    net.save_pretrained(workdir / "hf", safe_serialization=True)
    convert_hf_to_paddle(workdir / "hf", workdir / "paddle", model=model)
    data = batches(cfg, net.config.vocab_size)
    with hf_moe_aux_loss_on_cpu():
        theirs = train_torch(net, data, cfg)
    return Reference(model, workdir, data, theirs)


def check_train(
    model: str,
    root: Path | None = None,
    cfg: TrainConfig | None = None,
    paddle_cfg: TrainConfig | None = None,
    reference: Reference | None = None,
) -> Record:
    """`cfg` for both sides; `paddle_cfg` (the mutation tests) for ours only; `reference`, HF's side already run
    with `cfg` (the tests share one). With `root`, the curves and the plot go to reports/train/."""
    from modbuild.verify.quiet import quiet_third_party

    quiet_third_party()
    cfg = cfg or TrainConfig()
    if reference is None:
        with tempfile.TemporaryDirectory() as tmp:
            reference = hf_reference(model, Path(tmp), cfg)
            ours = reference.load_ours()
    else:
        ours = reference.load_ours()
    return compare_training(model, ours, reference, paddle_cfg or cfg, root)


def compare_training(model: str, ours, reference: Reference, cfg: TrainConfig, root: Path | None) -> Record:
    from modbuild.verify.train_loop import train_paddle, untrained_count

    record = Record(model, "train", bounds=dict(TRAIN_BOUNDS))
    if is_moe(ours.config) and not ours.config.output_router_logits:
        record.error = "the converted MoE config lost output_router_logits: the aux loss would be on HF's side only"
        return record
    theirs = reference.theirs
    mine = train_paddle(ours, reference.data, cfg)
    fill_steps(record, mine, theirs)
    worst, worst_name, missing = param_diffs(ours, theirs, mine)
    record.metrics["params"] = worst
    record.metrics["missing_params"] = float(len(missing))
    record.notes.append(f"largest parameter difference in {worst_name}")
    untrained_note(record, untrained_count(theirs))
    if missing:
        record.notes.append(f"parameters on one side only: {missing[:4]}")
    mismatch = decay_mismatch(ours, theirs, mine)
    record.metrics["decay_mismatch"] = float(len(mismatch))
    if mismatch:
        record.notes.append(
            f"weight decay differs: {len(mismatch)} parameters decayed on one side only ({', '.join(mismatch[:3])} ...)"
        )
    if root is not None:
        save_curves(root, model, "train", {"HF (torch)": theirs.curves(), "ours (paddle)": mine.curves()})
    return record


def untrained_note(record: Record, count: int) -> None:
    if count:
        record.notes.append(
            f"{count} parameter elements the loss never trains (the reference's gradient zero up to rounding at every"
            " step) are left out of params: Adam turns their rounding noise into full-size steps"
        )


def save_curves(root: Path, model: str, check: str, runs: dict[str, dict]) -> None:
    """reports/train/<m>.json (<m>-tp2.json) with every run's curves, and the loss plot beside it; the first run
    is the reference."""
    from modbuild.atomic import atomic_write
    from modbuild.verify.train_report import plot

    out = Path(root) / "reports" / "train"
    out.mkdir(parents=True, exist_ok=True)
    stem = model if check == "train" else f"{model}-{check.removeprefix('train-')}"
    atomic_write(out / f"{stem}.json", json.dumps(runs, indent=1) + "\n")
    plot(out / f"{stem}.png", f"{model}: {check}", runs)


# ------------------------------------------------------------------------------------------------------ TP


TP_BOUNDS = dict(BOUNDS)


def run_from(curves: dict) -> Run:
    return Run(**{k: curves[k] for k in ("loss", "lr", "grad_norm", "clipped_norm")})


def tp_record(model: str, check: str, case: dict, reference: dict) -> Record:
    record = Record(model, check, bounds=dict(TP_BOUNDS))
    fill_steps(record, run_from(case["curves"]), run_from(reference))
    record.metrics["params"] = case["params_max_rel"]
    return record


def check_train_tp2(model: str, root: Path | None = None) -> Record:
    """TP=2 against TP=1, and TP=2 with sequence parallelism against TP=1; the record holds the worse of the two
    per metric, the notes say which case."""
    from modbuild.verify.tp_results import tp_result
    from modbuild.verify.tp_run import run_tp_checks, run_train_tp2

    result = tp_result(model, "train-tp2", run_tp_checks, alone=run_train_tp2)
    reference = result["reference"]
    record = Record(model, "train-tp2", bounds=dict(TP_BOUNDS))
    runs, worst = {"TP=1": reference}, []
    for case in result["cases"]:
        label = "TP=2 + SP" if case["sequence_parallel"] else "TP=2"
        sub = tp_record(model, "train-tp2", case, reference)
        runs[label] = case["curves"]
        for key, value in sub.metrics.items():
            if key == "first_step_over":
                continue
            if not record.metrics.get(key, -1.0) >= value:
                record.metrics[key] = value
        record.notes += [f"{label}: {n}" for n in sub.notes]
        worst.append(f"{case['worst_param']} ({label})")
        firsts = [s for s in (record.metrics.get("first_step_over", 0.0), sub.metrics["first_step_over"]) if s]
        record.metrics["first_step_over"] = min(firsts) if firsts else 0.0
    if not any(c["sequence_parallel"] for c in result["cases"]):
        record.notes.append(f"no sequence-parallel case: {result.get('sp_skipped', 'not supported')}")
    if "exit_after_result" in result:
        record.notes.append(f"the launch exited with {result['exit_after_result']} after writing its result")
    record.notes.append(f"largest parameter difference in {', '.join(worst)}")
    untrained_note(record, result.get("untrained", 0))
    if root is not None:
        save_curves(root, model, "train-tp2", runs)
    return record
