"""`doit verify --shard K/N`: the K-th of N deterministic subsets of the verify checks, for CI jobs.

A model's checks stay together (they share its imports and its TP request). Models are spread by their cost:
each check's wall time in the last run (reports/timings.json, written by every check) where there is one, else a
static estimate per check kind. The split is a function of the model list and that file only, so every job of a
CI matrix that checks out the same commit computes the same split: together the shards run every check once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Mean seconds per check kind in a from-scratch `doit -n 2 verify` (bench/verify.py, 19 models, one TP pool, the
# 2-core machine under other jobs' load): only their ratios matter here.
STATIC_COST = {"modular": 0.4, "hf": 2.5, "paddlenlp": 0.8, "tp2": 5.3, "train": 5.3, "train-tp2": 7.0, "real": 94.0}


class ShardError(ValueError):
    """A malformed --shard value; the message says what is expected."""


def parse_shard(text: str) -> tuple[int, int] | None:
    """ "K/N" -> (K, N) with 1 <= K <= N; "" -> None (no sharding)."""
    if not text:
        return None
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise ShardError(f"verify --shard {text}: expected K/N, e.g. 2/4 (the second of four shards)")
    k_, n_ = int(k), int(n)
    if not 1 <= k_ <= n_:
        raise ShardError(f"verify --shard {text}: K must be between 1 and N ({n_})")
    return k_, n_


def model_cost(model: str, checks: Iterable[str], timings: Mapping[str, float]) -> float:
    return sum(timings.get(f"{model}:{check}", STATIC_COST.get(check, 3.0)) for check in checks)


def assign(costs: Mapping[str, float], n: int) -> list[list[str]]:
    """Models into `n` shards, most expensive first onto the least loaded shard (ties: by name, lowest shard)."""
    shards: list[list[str]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for model in sorted(costs, key=lambda m: (-round(costs[m], 3), m)):
        lightest = min(range(n), key=lambda i: (round(loads[i], 3), i))
        shards[lightest].append(model)
        loads[lightest] += costs[model]
    return shards


def shard_models(checks: Mapping[str, Iterable[str]], shard: tuple[int, int], timings: Mapping[str, float]) -> set:
    """The models (of `checks`: model -> its check names) in shard `shard` = (K, N)."""
    k, n = shard
    costs = {model: model_cost(model, names, timings) for model, names in checks.items()}
    return set(assign(costs, n)[k - 1])
