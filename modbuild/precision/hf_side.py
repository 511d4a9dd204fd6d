"""The HF process: build HF's Qwen2 at a real size with its own init, save it as safetensors, run the batch
forward and backward, and stream every module output, the logits and every parameter's gradient to .npy files
for the Paddle process to compare against. Then time it. Imports torch, never paddle."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from modbuild.precision.common import cpu_seconds, load_batch, median_time, rss, safe_name


def _first_tensor(output):
    """A module's main output: the first tensor of a tuple, or of a ModelOutput (the base model's)."""
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if hasattr(output, "detach") and hasattr(output, "dim") else None


def build(job: dict):
    import torch
    import transformers

    config = transformers.Qwen2Config(**job["config"])
    config._attn_implementation = "eager"  # the same attention arithmetic as the Paddle model's default
    torch.manual_seed(job["seed"])
    net = transformers.Qwen2ForCausalLM(config)  # post_init: HF's _init_weights, std initializer_range
    return net.float().eval()


def capture(net, batch: dict[str, np.ndarray], out_dir: Path) -> dict:
    """One forward and backward; every module's first output, the logits and each gradient go to disk as
    they appear, so the process holds no second copy of anything."""
    import torch

    (out_dir / "fwd").mkdir(parents=True)
    (out_dir / "grad").mkdir()
    modules: dict[str, list[int]] = {}
    hooks = []
    for name, module in net.named_modules():
        if not name or name == "lm_head":  # the root's output holds the loss; lm_head's is the logits
            continue

        def hook(module, inputs, output, name=name):  # must return None, or torch replaces the output
            tensor = _first_tensor(output)
            if tensor is not None and name not in modules:
                np.save(out_dir / "fwd" / f"{safe_name(name)}.npy", tensor.detach().float().numpy())
                modules[name] = list(tensor.shape)

        hooks.append(module.register_forward_hook(hook))
    net.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out = net(**{k: torch.tensor(v) for k, v in batch.items()})
    out.loss.backward()
    seconds = time.perf_counter() - start
    for handle in hooks:
        handle.remove()
    np.save(out_dir / "logits.npy", out.logits.detach().numpy())
    loss = float(out.loss.item())
    del out
    grads: dict[str, list[int]] = {}
    for name, param in net.named_parameters():  # tied weights appear once
        if param.grad is not None:
            np.save(out_dir / "grad" / f"{name}.npy", param.grad.numpy())
            grads[name] = list(param.grad.shape)
            param.grad = None
    return {"loss": loss, "modules": modules, "grads": grads, "first_fwd_bwd_s": seconds}


def timings(net, batch: dict[str, np.ndarray], reps: int, prompt_len: int, new_tokens: int) -> dict:
    """Median forward+backward (gradients freed, untimed, before each), and greedy decoding with the KV cache:
    the prefill, then the median of the one-token steps."""
    import torch

    inputs = {k: torch.tensor(v) for k, v in batch.items()}

    def step():
        net(**inputs).loss.backward()

    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    fwd_bwd, all_times = median_time(step, reps, before=lambda: net.zero_grad(set_to_none=True))
    cpu_per_wall = (cpu_seconds() - cpu_before) / (time.perf_counter() - wall_before)
    net.zero_grad(set_to_none=True)
    prompt = torch.tensor(batch["input_ids"][-1:, :prompt_len])
    with torch.no_grad():
        _decode(net, prompt, 2)  # warm-up
        prefill, steps, tokens = _decode(net, prompt, new_tokens)
    return {
        "fwd_bwd_s": fwd_bwd,
        "fwd_bwd_all_s": all_times,
        "prefill_s": prefill,
        "per_token_s": float(np.median(steps)) if steps else None,
        "tokens": tokens,
        "cpu_per_wall": cpu_per_wall,  # ~threads when the cores were ours alone; lower: someone else ran
    }


def _decode(net, prompt, new_tokens: int) -> tuple[float, list[float], list[int]]:
    import torch

    start = time.perf_counter()
    out = net(input_ids=prompt, use_cache=True)
    prefill = time.perf_counter() - start
    tokens = [int(out.logits[0, -1].argmax())]
    steps = []
    for _ in range(new_tokens - 1):
        start = time.perf_counter()
        out = net(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
        tokens.append(int(out.logits[0, -1].argmax()))
        steps.append(time.perf_counter() - start)
    return prefill, steps, tokens


def main(job: dict) -> dict:
    import torch
    import transformers

    torch.set_num_threads(job["threads"])
    transformers.logging.set_verbosity_error()
    workdir = Path(job["workdir"])
    result: dict = {"framework": f"torch {torch.__version__}, transformers {transformers.__version__}"}
    start = time.perf_counter()
    net = build(job)
    result["init_s"] = time.perf_counter() - start
    result["params"] = sum(p.numel() for p in net.parameters())
    start = time.perf_counter()
    net.save_pretrained(workdir / "hf", safe_serialization=True)
    result["save_s"] = time.perf_counter() - start
    result["rss_after_init"] = rss()
    batch = load_batch(workdir)
    result |= capture(net, batch, workdir / "hf_out")
    result["rss_after_capture"] = rss()
    if job["reps"]:
        result["timing"] = timings(net, batch, job["reps"], job["prompt_len"], job["new_tokens"])
    result["rss"] = rss()
    return result
