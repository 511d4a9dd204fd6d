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
        # One thread for both frameworks: on this shared 2-core machine torch's pool spins when the other core is
        # busy (the same step measured 4x apart); set before paddle is imported
        os.environ["OMP_NUM_THREADS"] = "1"
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

    torch.set_num_threads(1)  # as paddle (OMP_NUM_THREADS=1): see engine_main's caller
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


def _engine_fit(tmp: str) -> tuple[float, float]:
    """(seconds of the training loop, seconds of the whole fit): the loop from the first step to the last, as the
    engine's own last log reports it; fit adds the one-time metrics set-up and the PNG at the end."""
    engine, _ = _engine(tmp)
    logs = []
    engine.module.training_step_end = logs.append
    start = time.perf_counter()
    engine.fit()
    return logs[-1]["elapsed"], time.perf_counter() - start


def engine_bench(repeats: int = 5) -> dict[str, float]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        engine, config = _engine(tmp)
        tokens = ENGINE_STEPS * config.Data.micro_batch_size * config.Engine.accumulate_steps * config.Data.seq_length
        bare_paddle_loop(engine, 5)  # warm-up: first-call kernel set-up
        loop_s, fit_s, bare_s, torch_s = [], [], [], []
        for _ in range(repeats):  # interleaved, best of each: the machine's noise hits both alike
            loop, fit = _engine_fit(tmp)
            loop_s.append(loop)
            fit_s.append(fit)
            bare_s.append(bare_paddle_loop(_engine(tmp)[0], ENGINE_STEPS))
            torch_s.append(torch_loop(engine, ENGINE_STEPS))
        save_s, load_s = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            path = engine.save()
            save_s.append(time.perf_counter() - start)
            resumed = _engine(tmp)[0]
            start = time.perf_counter()
            resumed.load(path)
            load_s.append(time.perf_counter() - start)
    out = {
        "tokens_per_step": tokens / ENGINE_STEPS,
        "engine_tokens_per_s": tokens / min(loop_s),
        "engine_fit_tokens_per_s": tokens / min(fit_s),
        "bare_tokens_per_s": tokens / min(bare_s),
        "torch_tokens_per_s": tokens / min(torch_s),
        "save_s": min(save_s),
        "resume_s": min(load_s),
    }
    out["engine_overhead_pct"] = 100 * (out["bare_tokens_per_s"] / out["engine_tokens_per_s"] - 1)
    out["engine_fit_overhead_pct"] = 100 * (out["bare_tokens_per_s"] / out["engine_fit_tokens_per_s"] - 1)
    out["paddle_over_torch"] = out["bare_tokens_per_s"] / out["torch_tokens_per_s"]
    return out


def real_checkpoint_times(weights: Path) -> dict[str, float]:
    """Save and resume times at a real size: SmolLM2-135M (configs/finetune_smollm2.yaml) after one step, so the
    optimizer holds its moments (a checkpoint of ~1.6 GB)."""
    import tempfile

    from modbuild.engine.config import load
    from modbuild.engine.engine import EagerEngine
    from modbuild.engine.module import CausalLMModule

    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # on the repository's disk, not a tmpfs
        overrides = [
            f"Model.init_from={weights}",
            f"Data.tokenizer={weights}",
            "Engine.max_steps=1",
            "Engine.eval_freq=0",
            "Engine.progress_bar=false",
            "Engine.save_load.save_steps=0",
            f"Engine.save_load.output_dir={tmp}",
            "Data.micro_batch_size=1",
            "Data.seq_length=32",
        ]
        config = load(ROOT / "configs" / "finetune_smollm2.yaml", overrides)
        engine = EagerEngine(CausalLMModule(config), config)
        engine.fit()
        start = time.perf_counter()
        path = engine.save()
        save_s = time.perf_counter() - start
        size = sum(f.stat().st_size for f in path.iterdir())
        start = time.perf_counter()
        engine.load(path)
        return {"save_s": save_s, "resume_s": time.perf_counter() - start, "bytes": size}


def engine_main() -> None:
    weights = ROOT / ".cache" / "weights" / "smollm2" / "paddle"
    if (weights / "config.json").is_file():
        real = real_checkpoint_times(weights)
        print(
            f"SmolLM2-135M checkpoint ({real['bytes'] / 1e9:.2f} GB): save {real['save_s']:.1f} s, "
            f"resume (verify + load) {real['resume_s']:.1f} s"
        )
    else:
        print(f"(no {weights}: `doit weights:smollm2` makes it; the real-size checkpoint times are skipped)")
    r = engine_bench()
    print(
        f"tiny qwen2 ({ENGINE_CONFIG.name}), {ENGINE_STEPS} steps of {r['tokens_per_step']:.0f} tokens, one thread, best of 5:"
    )
    print(
        f"  engine loop {r['engine_tokens_per_s']:.0f} tokens/s, bare paddle loop {r['bare_tokens_per_s']:.0f}: "
        f"overhead {r['engine_overhead_pct']:+.1f}% (budget 5%)"
    )
    print(
        f"  whole fit (+ one-time metrics set-up and PNG) {r['engine_fit_tokens_per_s']:.0f} tokens/s: "
        f"{r['engine_fit_overhead_pct']:+.1f}%"
    )
    print(f"  HF torch {r['torch_tokens_per_s']:.0f} tokens/s: paddle / torch = {r['paddle_over_torch']:.2f}")
    print(f"  checkpoint save {r['save_s'] * 1e3:.1f} ms, resume (verify + load) {r['resume_s'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
