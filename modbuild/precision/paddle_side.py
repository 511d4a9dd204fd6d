"""The Paddle process: convert the HF checkpoint with the project's converter, load it with ``from_pretrained``,
run the same batch forward and backward, and compare every sublayer output, the logits, the loss and every
parameter's gradient with the HF process's .npy files one tensor at a time (memory-mapped), keeping only
per-tensor summaries. Then time it. Imports paddle, never torch."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from modbuild.precision.common import cpu_seconds, load_batch, median_time, rss, safe_name, summary


def _first_array(output):
    """A sublayer's main output: the first tensor of a tuple, or of a ModelOutput (the base model's)."""
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output.numpy() if hasattr(output, "numpy") else None


def _as_reference(mine: np.ndarray, theirs_shape: tuple) -> np.ndarray | None:
    """`mine` in the reference's shape when only the leading dims are flattened (our o_proj sees [b*s, h])."""
    if mine.shape == theirs_shape:
        return mine
    if mine.size == int(np.prod(theirs_shape)) and mine.shape[-1:] == theirs_shape[-1:]:
        return mine.reshape(theirs_shape)
    return None


def _masked(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Real tokens only where the tensor is [batch, seq, ...]: a left-padded row's pad positions are masked out
    of every attention, and each framework leaves different (unused) values there."""
    return a[mask] if a.ndim >= 2 and a.shape[:2] == mask.shape else a


def load(workdir: Path):
    from modbuild.models import causal_lm_class
    from modbuild.weights import convert_hf_to_paddle

    out: dict = {}
    if not (workdir / "paddle").is_dir():  # a second Paddle pass over the same HF outputs reuses it
        start = time.perf_counter()
        convert_hf_to_paddle(workdir / "hf", workdir / "paddle", model="qwen2")
        out["convert_s"] = time.perf_counter() - start
    start = time.perf_counter()
    # low_cpu_mem_usage: the model is built without storage and filled from the file (not built, randomly
    # initialised, then overwritten): half the peak memory and a third of the time at 0.5B, same weights.
    ours = causal_lm_class("qwen2").from_pretrained(workdir / "paddle", dtype="float32", low_cpu_mem_usage=True)
    ours.eval()
    out["load_s"] = time.perf_counter() - start
    return ours, out


def perturb(ours, name: str, delta: float) -> None:
    """Shift one parameter by `delta` (the smoke test's deliberately broken model)."""
    import paddle

    param = dict(ours.named_parameters())[name]
    param.set_value(param + paddle.to_tensor(delta, dtype=param.dtype))


def compare(ours, batch: dict[str, np.ndarray], hf: dict, hf_dir: Path) -> dict:
    """Forward outputs (hooks, compared as they appear), logits, loss, then gradients, one tensor at a time."""
    import paddle

    from modbuild.verify.trace import module_pairs

    mappings = type(ours)._get_name_mappings(ours.config)
    pairs = module_pairs(
        [(m.target_name, m.source_name) for m in mappings],
        {n for n, _ in ours.named_sublayers()},
        set(hf["modules"]),
    )
    mask = batch["attention_mask"].astype(bool)
    forward: list[dict] = []
    skipped: list[str] = []
    seen: set[str] = set()

    def compare_output(name: str, output) -> None:
        if name in seen:  # a shared sublayer (one activation instance) is compared at its first call
            return
        seen.add(name)
        theirs_name = pairs[name]
        mine = _first_array(output)
        if mine is None or theirs_name not in hf["modules"]:
            skipped.append(f"{name}: no output on {'our' if mine is None else 'the HF'} side")
            return
        theirs = np.load(hf_dir / "fwd" / f"{safe_name(theirs_name)}.npy", mmap_mode="r")
        if _as_reference(mine, theirs.shape) is None:
            skipped.append(f"{name}: shape {list(mine.shape)} vs HF {list(theirs.shape)}")
            return
        mine = _as_reference(mine, theirs.shape)
        forward.append(summary(name, theirs_name, _masked(mine, mask), _masked(np.asarray(theirs), mask)))

    hooks = []
    for name, layer in ours.named_sublayers():
        if name in pairs:
            hooks.append(
                layer.register_forward_post_hook(lambda layer, inputs, output, name=name: compare_output(name, output))
            )
    ours.clear_gradients(set_to_zero=False)
    start = time.perf_counter()
    out = ours(**{k: paddle.to_tensor(v) for k, v in batch.items()}, return_dict=True)
    out.loss.backward()
    seconds = time.perf_counter() - start
    for hook in hooks:
        hook.remove()
    logits = summary(
        "logits", "logits", _masked(out.logits.numpy(), mask), _masked(np.load(hf_dir / "logits.npy"), mask)
    )
    loss = float(out.loss.item())
    del out

    params = dict(ours.named_parameters())
    grads, missing = [], []
    for mapping in mappings:
        param = params.get(mapping.target_name)
        if param is None or param.grad is None or mapping.source_name not in hf["grads"]:
            missing.append(mapping.target_name)
            continue
        mine = param.grad.numpy()
        theirs = np.load(hf_dir / "grad" / f"{mapping.source_name}.npy", mmap_mode="r")
        theirs = np.ascontiguousarray(theirs.T) if mapping.action == "transpose" else theirs
        grads.append(summary(mapping.target_name, mapping.source_name, mine, theirs))
        del mine, theirs
    return {
        "logits": logits,
        "loss": loss,
        "loss_diff": abs(loss - hf["loss"]),
        "forward": forward,
        "grads": grads,
        "skipped": skipped,
        "missing_grads": missing,
        "unpaired_hf_modules": sorted(set(hf["modules"]) - set(pairs.values())),
        "first_fwd_bwd_s": seconds,
    }


def timings(ours, batch: dict[str, np.ndarray], reps: int, prompt_len: int, new_tokens: int) -> dict:
    """As the HF process times it: median forward+backward with gradients freed (untimed) before each, then
    greedy decoding with the KV cache, prefill and the median one-token step."""
    import paddle

    inputs = {k: paddle.to_tensor(v) for k, v in batch.items()}

    def step():
        ours(**inputs, return_dict=True).loss.backward()

    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    fwd_bwd, all_times = median_time(step, reps, before=lambda: ours.clear_gradients(set_to_zero=False))
    cpu_per_wall = (cpu_seconds() - cpu_before) / (time.perf_counter() - wall_before)
    ours.clear_gradients(set_to_zero=False)
    prompt = batch["input_ids"][-1:, :prompt_len]
    with paddle.no_grad():
        _decode(ours, prompt, 2)  # warm-up
        prefill, steps, tokens = _decode(ours, prompt, new_tokens)
    return {
        "fwd_bwd_s": fwd_bwd,
        "fwd_bwd_all_s": all_times,
        "prefill_s": prefill,
        "per_token_s": float(np.median(steps)) if steps else None,
        "tokens": tokens,
        "cpu_per_wall": cpu_per_wall,  # ~threads when the cores were ours alone; lower: someone else ran
    }


def _decode(ours, prompt: np.ndarray, new_tokens: int) -> tuple[float, list[float], list[int]]:
    import paddle

    start = time.perf_counter()
    out = ours(input_ids=paddle.to_tensor(prompt), use_cache=True, return_dict=True)
    prefill = time.perf_counter() - start
    tokens = [int(out.logits[0, -1].argmax().item())]
    steps = []
    for _ in range(new_tokens - 1):
        start = time.perf_counter()
        out = ours(
            input_ids=paddle.to_tensor([[tokens[-1]]]),
            past_key_values=out.past_key_values,
            use_cache=True,
            return_dict=True,
        )
        tokens.append(int(out.logits[0, -1].argmax().item()))
        steps.append(time.perf_counter() - start)
    return prefill, steps, tokens


def main(job: dict) -> dict:
    import paddle
    import paddlenlp
    from paddlenlp.utils.log import logger

    logger.set_level("WARNING")  # not modbuild.verify.quiet: it imports transformers, whose RSS is not ours
    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(job["threads"])
    workdir = Path(job["workdir"])
    result: dict = {"framework": f"paddle {paddle.__version__}, paddlenlp {paddlenlp.__version__}"}
    ours, info = load(workdir)
    result |= info
    result["rss_after_load"] = rss()
    batch = load_batch(workdir)
    result |= compare(ours, batch, job["hf"], workdir / "hf_out")
    result["rss_after_compare"] = rss()
    if job["reps"]:
        result["timing"] = timings(ours, batch, job["reps"], job["prompt_len"], job["new_tokens"])
    if job.get("perturb"):  # a second comparison of a deliberately broken copy, in the same process
        perturb(ours, *job["perturb"])
        result["perturbed"] = {"perturb": job["perturb"], **compare(ours, batch, job["hf"], workdir / "hf_out")}
    result["rss"] = rss()
    return result
