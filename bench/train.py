"""What the train checks add to `doit -n N verify`: the suite timed without them, then with them, from scratch.

    python bench/train.py [-n 2]
    python bench/train.py --engine     # the training engine: tokens/s against a bare loop and HF torch, save/resume

Both runs start from a forgotten verify DB, so every check runs. The first runs every verify subtask except
`train` and `train-tp2` (named on doit's command line), the second the whole `verify` group. Prints both wall times
and their difference against the issue's ~90 s budget. The machine should otherwise be idle: two cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 90.0


def verify_subtasks() -> list[str]:
    out = subprocess.run(["doit", "list", "--all", "verify"], cwd=ROOT, check=True, capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith("verify:")]


def timed(n: int, tasks: list[str], env: dict | None = None) -> tuple[float, int]:
    subprocess.run(["doit", "forget", "verify"], cwd=ROOT, check=True, capture_output=True)
    start = time.perf_counter()
    done = subprocess.run(
        ["doit", "-n", str(n), *tasks], check=False, cwd=ROOT, capture_output=True, text=True, env=env
    )
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2, help="doit workers")
    parser.add_argument("--engine", action="store_true", help="only the training engine's figures (below)")
    args = parser.parse_args()
    if args.engine:
        engine_main()
        return
    # converted models and the real checkpoint first: neither run should pay for them
    subprocess.run(["doit", "convert", "weights"], cwd=ROOT, check=True, capture_output=True)
    others = [t for t in verify_subtasks() if not t.endswith((":train", ":train-tp2"))]
    # without the train checks, each tp2 check launches alone (no train-tp2 work done for a later run)
    without, rc_without = timed(args.n, others, {**os.environ, "MODBUILD_TP_SHARED": "0"})
    with_train, rc_with = timed(args.n, ["verify"])
    added = with_train - without
    print(f"doit -n {args.n}: {len(others)} checks without train: {without:.1f} s (exit {rc_without})")
    print(f"doit -n {args.n} verify, with train and train-tp2: {with_train:.1f} s (exit {rc_with})")
    print(f"added by the train checks: {added:.1f} s (budget ~{BUDGET:.0f} s)")
    sys.exit(rc_without or rc_with)


# ------------------------------------------------------------------------------------------------ the engine
# `python bench/train.py --engine`: the training engine (modbuild/engine) on the tiny qwen2 of
# configs/tiny_qwen2.yaml: its tokens/s against a bare Paddle loop on the same model and batches, Paddle against
# HF torch on CPU for the same model, and the time to save and to resume a checkpoint.

ENGINE_CONFIG = ROOT / "configs" / "tiny_qwen2.yaml"
ENGINE_STEPS = 60


def _engine(output_dir: str, *overrides: str):
    from modbuild.engine.config import load
    from modbuild.engine.engine import EagerEngine
    from modbuild.engine.module import CausalLMModule

    quiet = [
        "Engine.progress_bar=false",
        "Engine.logging_freq=100000",
        "Engine.eval_freq=0",
        "Engine.save_load.save_steps=0",
    ]
    config = load(
        ENGINE_CONFIG,
        [*quiet, f"Engine.max_steps={ENGINE_STEPS}", f"Engine.save_load.output_dir={output_dir}", *overrides],
    )
    return EagerEngine(CausalLMModule(config), config), config


def bare_paddle_loop(engine, steps: int) -> float:
    """Seconds for `steps` optimizer steps of a plain loop: the same network, optimizer and rows as the engine."""
    import paddle

    from modbuild.engine import data

    cfg = engine.config
    micro, acc = cfg.Data.micro_batch_size, cfg.Engine.accumulate_steps
    net = engine.module.network
    opt, sched = engine.module.configure_optimizers()
    batches = data.TrainBatches(engine.train_rows, micro * acc, 1, 0, cfg.Global.seed, True).batches(data.Position())
    net.train()
    start = time.perf_counter()
    for _ in range(steps):
        _, rows = next(batches)
        for i in range(acc):
            ids = paddle.to_tensor(rows[i * micro : (i + 1) * micro])
            loss = net.compute_loss(net(ids, return_dict=True).logits, ids)
            (loss / acc).backward()
            float(loss.item())  # the engine reads each loss too; a fair loop does the same
        opt.step()
        opt.clear_grad(set_to_zero=False)
        sched.step()
    return time.perf_counter() - start


def torch_loop(engine, steps: int) -> float:
    """Seconds for the same steps in HF transformers' Qwen2 (torch, CPU, AdamW, clipping), same shapes and rows."""
    import torch
    import transformers

    from modbuild.engine import data

    cfg = engine.config
    micro, acc = cfg.Data.micro_batch_size, cfg.Engine.accumulate_steps
    hf_config = transformers.Qwen2Config(**cfg.Model.config)
    net = transformers.Qwen2ForCausalLM(hf_config)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.Optimizer.lr, weight_decay=cfg.Optimizer.weight_decay)
    batches = data.TrainBatches(engine.train_rows, micro * acc, 1, 0, cfg.Global.seed, True).batches(data.Position())
    start = time.perf_counter()
    for _ in range(steps):
        _, rows = next(batches)
        for i in range(acc):
            ids = torch.tensor(rows[i * micro : (i + 1) * micro])
            loss = net(input_ids=ids, labels=ids).loss
            (loss / acc).backward()
            float(loss.item())
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.Optimizer.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def engine_bench(repeats: int = 3) -> dict[str, float]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        engine, config = _engine(tmp)
        tokens = ENGINE_STEPS * config.Data.micro_batch_size * config.Engine.accumulate_steps * config.Data.seq_length
        bare_paddle_loop(engine, 5)  # warm-up: first-call kernel set-up
        engine_s, bare_s, torch_s = [], [], []
        for _ in range(repeats):  # interleaved, best of each: the machine's noise hits both alike
            fresh, _ = _engine(tmp)
            start = time.perf_counter()
            fresh.fit()
            engine_s.append(time.perf_counter() - start)
            bare_s.append(bare_paddle_loop(_engine(tmp)[0], ENGINE_STEPS))
            torch_s.append(torch_loop(engine, ENGINE_STEPS))
        save_s, load_s = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            path = fresh.save()
            save_s.append(time.perf_counter() - start)
            resumed = _engine(tmp)[0]
            start = time.perf_counter()
            resumed.load(path)
            load_s.append(time.perf_counter() - start)
    out = {
        "tokens_per_step": tokens / ENGINE_STEPS,
        "engine_tokens_per_s": tokens / min(engine_s),
        "bare_tokens_per_s": tokens / min(bare_s),
        "torch_tokens_per_s": tokens / min(torch_s),
        "save_s": min(save_s),
        "resume_s": min(load_s),
    }
    out["engine_overhead_pct"] = 100 * (out["bare_tokens_per_s"] / out["engine_tokens_per_s"] - 1)
    out["paddle_over_torch"] = out["bare_tokens_per_s"] / out["torch_tokens_per_s"]
    return out


def engine_main() -> None:
    result = engine_bench()
    print(
        f"tiny qwen2 ({ENGINE_CONFIG.name}), {ENGINE_STEPS} steps of {result['tokens_per_step']:.0f} tokens, best of 3:"
    )
    print(
        f"  engine {result['engine_tokens_per_s']:.0f} tokens/s, bare paddle loop {result['bare_tokens_per_s']:.0f}: "
        f"engine overhead {result['engine_overhead_pct']:+.1f}% (budget 5%)"
    )
    print(
        f"  HF torch {result['torch_tokens_per_s']:.0f} tokens/s: paddle / torch = {result['paddle_over_torch']:.2f}"
    )
    print(f"  checkpoint save {result['save_s']:.3f} s, resume (load into a new engine) {result['resume_s']:.3f} s")


if __name__ == "__main__":
    main()
