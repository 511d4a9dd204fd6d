"""Benchmark of checkpoint conversion: peak RSS and throughput on a synthetic ~2.6 GB fp32 llama checkpoint.

    python bench/weights.py [--layers 10] [--shard-mb 600] [--dir /tmp/x] [--keep]

The synthetic HF checkpoint (random fp32, HF names and shapes from LlamaForCausalLM._get_name_mappings) is
written shard by shard with the same streaming writer. Each conversion then runs in a fresh child process
that reports its own ``resource.getrusage(RUSAGE_SELF).ru_maxrss``; a child that only imports the stack
gives the baseline, so peak - baseline is what the conversion itself costs.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}
CHILD = """
import json, resource, sys, time
import paddle, paddlenlp.transformers, generated.llama.modeling_llama  # imports are not conversion time
from modbuild.weights import convert_hf_to_paddle, convert_paddle_to_hf, split_tensor_parallel
job, src, dst = sys.argv[1:4]
start = time.perf_counter()
if job == "hf2paddle":
    convert_hf_to_paddle(src, dst)
elif job == "paddle2hf":
    convert_paddle_to_hf(src, dst)
elif job == "split":
    split_tensor_parallel(src, dst, tp=2)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def hf_specs(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """HF tensor names and shapes, from the generated model's own mappings and lazily built parameters."""
    from modbuild.weights.convert import build_config, expected_shapes, name_pairs, resolve_model

    cls = resolve_model("llama")
    config = build_config(cls, {**CONFIG, "num_hidden_layers": layers})
    expected = expected_shapes(cls, config)
    return [(hf, expected[pd][::-1] if t else expected[pd]) for hf, pd, t in name_pairs(cls, config, expected)]


def write_synthetic(directory: Path, layers: int, shard_bytes: int) -> int:
    """Random fp32 HF checkpoint, sharded greedily at ``shard_bytes``; returns its total size."""
    from modbuild.weights.convert import ShardWriter, write_index

    specs, shards = hf_specs(layers), [[]]
    for name, shape in specs:
        if shards[-1] and sum(4 * np.prod(s) for _, s in shards[-1]) + 4 * np.prod(shape) > shard_bytes:
            shards.append([])
        shards[-1].append((name, shape))
    directory.mkdir(parents=True)
    rng, weight_map, total = np.random.default_rng(0), {}, 0
    for i, shard in enumerate(shards):
        file_name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        shard = sorted(shard)
        with ShardWriter(directory / file_name, [(n, "F32", s) for n, s in shard], {"format": "pt"}) as writer:
            for name, shape in shard:
                writer.write(name, rng.standard_normal(shape, dtype=np.float32))
        weight_map |= {name: file_name for name, _ in shard}
        total += writer.nbytes
    write_index(directory / "model.safetensors.index.json", weight_map, total, total // 4)
    (directory / "config.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": layers}))
    return total


def run_child(job: str, src: Path, dst: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, job, str(src), str(dst)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=10, help="decoder layers (10 -> about 2.6 GB fp32)")
    parser.add_argument("--shard-mb", type=int, default=600, help="input shard size")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-weights-"))
    try:
        start = time.perf_counter()
        total = write_synthetic(root / "hf", args.layers, args.shard_mb * 2**20)
        shards = sorted((root / "hf").glob("*.safetensors"))
        largest = max(p.stat().st_size for p in shards)
        print(f"synthetic checkpoint: {total / 1e9:.2f} GB in {len(shards)} shards (largest {largest / 1e6:.0f} MB),")
        print(
            f"  largest tensor {4 * CONFIG['vocab_size'] * CONFIG['hidden_size'] / 1e6:.0f} MB, written in {time.perf_counter() - start:.1f} s"
        )
        baseline = run_child("imports", root, root)["max_rss_kb"] / 1024
        print(f"baseline child (imports only): peak RSS {baseline:.0f} MB")
        for job, src, dst in (("hf2paddle", "hf", "pd"), ("paddle2hf", "pd", "rt"), ("split", "pd", "tp")):
            result = run_child(job, root / src, root / dst)
            peak = result["max_rss_kb"] / 1024
            print(
                f"{job:9s}: {result['seconds']:6.1f} s  {total / 1e9 / result['seconds']:.2f} GB/s  "
                f"peak RSS {peak:.0f} MB (+{peak - baseline:.0f} MB over baseline)"
            )
            if job == "paddle2hf":
                same = all(filecmp.cmp(root / "hf" / p.name, root / "rt" / p.name, shallow=False) for p in shards)
                print(f"  round trip byte-identical: {same}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
