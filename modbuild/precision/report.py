"""reports/precision.md: the seed's table (model x size x metric, bound beside each value), then where the
worst differences are, speed and memory per framework, and the error per decoder layer."""

from __future__ import annotations

CONFIG_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "tie_word_embeddings",
    "rope_theta",
    "rms_norm_eps",
    "max_position_embeddings",
    "initializer_range",
)


def _e(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def _short(name: str) -> str:
    return name.removeprefix("qwen2.")


def _gib(side: dict) -> str:
    return f"{side['rss']['peak_gib']:.1f} GiB"


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def markdown(report: dict) -> str:
    rows = report["rows"]
    settings = report["settings"]
    done = [r for r in rows if "metrics" in r]
    out = [
        "# Precision at real sizes: generated Qwen2 against HF transformers (fp32, CPU)",
        "",
        "Written by `run_precision` (`modbuild/precision/`; `python -m modbuild.precision 0.5b 1.5b`). Each size is",
        "Qwen2's real config with random weights drawn by HF's own init (std `initializer_range` = 0.02, biases 0,",
        "norm weights 1), saved as safetensors, converted by `modbuild.weights.convert_hf_to_paddle` and loaded with",
        (
            "`from_pretrained`. Both models run in float32 with eager attention on the same batch: "
            f"{settings['rows']} rows x {settings['length']} tokens, the first left-padded by {settings['pads']}, "
            "labels = ids (-100 on padding), position ids given to both."
        ),
        "",
        "## The seed's table",
        "",
        "Measured value, then the seed's bound (`seeds/001`, 精度对齐情况参考, float32). The seed's",
        '"each tensor in all layers" column is split into forward outputs and gradients; its bound applies to both.',
        "",
        (
            "| model | size | logits diff | loss diff | each tensor in all layers: forward | each tensor in all layers: "
            "gradients | verdict |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "metrics" not in r:
            out.append(f"| {r['model']} | {r['label']} | - | - | - | - | FAIL: {r.get('error', '').splitlines()[0]} |")
            continue
        cells = [f"{_e(r['metrics'][k])} (≤ {r['bounds'][k]:.0e})" for k in ("logits", "loss", "forward", "grads")]
        verdict = "ok" if r["passed"] else "FAIL: " + "; ".join(r["problems"])
        out.append(f"| {r['model']} (random init) | {r['label']} | " + " | ".join(cells) + f" | {verdict} |")
    out += [
        "",
        "**What each number is.** Every number is a maximum of |Paddle − HF| over every element, in float64 from",
        "the two float32 tensors, at real (non-padding) token positions wherever a tensor has [batch, seq] leading",
        "dims (a left-padded row's pad positions are masked out of every attention; each framework leaves different,",
        "unused values there).",
        "",
        "- *logits diff*: over the whole logits tensor [real tokens x vocab].",
        "- *loss diff*: |loss_Paddle − loss_HF|, mean next-token cross entropy over the non-ignored labels.",
        "- *forward*: over every element of every captured tensor: the output of every sublayer that has an HF",
        "  counterpart, matched by name through the model's `_get_name_mappings` (embeddings, RoPE cos, each decoder",
        "  layer, its norms, attention, q/k/v/o projections, MLP and its projections, the final norm, the base",
        "  model's output); HF's module and ours are each compared at their first call.",
        "- *gradients*: over every element of every parameter's gradient after one backward of the loss, matched by",
        "  `_get_name_mappings`, HF's Linear weights transposed to Paddle's layout (tied embeddings: one tensor).",
        "",
        "The bound is applied to the **absolute** maximum: the seed measures with `np.max(np.abs(o1 - o2))` and",
        "PaDiff's `atol`, and its table gives one number per column. The relative error of a tensor (max |Δ| divided",
        "by the max |value| of HF's tensor, the project's `grads_rel` of `doit verify`) is reported below, unbounded.",
        *_scale_note(done),
        "",
    ]
    if done:
        out += [
            "## Where the largest differences are",
            "",
            (
                "| size | tensors compared (fwd / grad) | worst forward (max abs, rel) | worst gradient (max abs, rel) | "
                "largest relative, forward | largest relative, gradient |"
            ),
            "|---|---|---|---|---|---|",
        ]
        for r in done:
            f, g, fr, gr = r["worst_forward"], r["worst_grad"], r["worst_forward_rel"], r["worst_grad_rel"]
            out.append(
                f"| {r['label']} | {r['counts']['forward']} / {r['counts']['grads']} "
                f"| `{_short(f['name'])}` {_e(f['max_abs'])}, {_e(f['max_rel'])} "
                f"| `{_short(g['name'])}` {_e(g['max_abs'])}, {_e(g['max_rel'])} "
                f"| `{_short(fr['name'])}` {_e(fr['max_rel'])} (abs {_e(fr['max_abs'])}) "
                f"| `{_short(gr['name'])}` {_e(gr['max_rel'])} (abs {_e(gr['max_abs'])}) |"
            )
        out += ["", "Logits and loss: " + "; ".join(_logits_line(r) for r in done) + ".", ""]
        out += _speed(done, settings)
        out += _layers(done)
    out += _run(report, done)
    return "\n".join(out) + "\n"


def _scale_note(rows: list[dict]) -> list[str]:
    """How large the compared tensors are: an absolute bound means little on a tensor far smaller than it."""
    notes = []
    for r in rows:
        scales = sorted(t["ref_max"] for t in r["tensors"]["grads"])
        if scales:
            notes.append(
                f"{r['label']}: gradients' max |value| range {scales[0]:.1e} .. {scales[-1]:.1e} "
                f"(median {scales[len(scales) // 2]:.1e})"
            )
    if not notes:
        return []
    return [
        "At std 0.02 the gradients are small ("
        + "; ".join(notes)
        + "), so against the smallest of them an absolute bound is loose: the relative figures are the informative"
        " ones there."
    ]


def _logits_line(r: dict) -> str:
    loss = r["loss"]
    return (
        f"{r['label']}: max |logit| {r['logits']['ref_max']:.2f}, logits max rel {_e(r['logits']['max_rel'])}, "
        f"loss HF {loss['hf']:.6f} / Paddle {loss['paddle']:.6f}"
    )


def _speed(rows: list[dict], settings: dict) -> list[str]:
    out = [
        f"## Speed and memory (Paddle CPU vs torch CPU, {settings['threads']} threads each)",
        "",
        "Each framework runs in its own process, one after the other; peak RSS is that process's `ru_maxrss` over",
        "its whole life (building or converting and loading the model, the captured forward and backward, the",
        f"comparison, the timings). *fwd+bwd*: median of {settings['reps']} timed forward+backward passes on the",
        "batch above, after an untimed one, gradients freed before each. *Decoding*: greedy with the KV cache from",
        f"the second row's first {settings['prompt_len']} tokens, {settings['new_tokens']} new tokens, each",
        "framework's own cache path through a plain loop (prefill, then one token per step; the per-token time is",
        "the median step, after a warm-up decode). *CPU/wall*: the process's CPU seconds per wall second over the",
        "timed forward+backward passes: about the thread count when the cores were the run's alone, lower when",
        "another process took some (the machine is shared).",
        "",
        (
            "| size | framework | fwd+bwd (each run) | CPU/wall | prefill | per generated token | peak RSS "
            "| process wall time | greedy tokens |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    contended = False
    for r in rows:
        for side in ("hf", "paddle"):
            s = r["frameworks"][side]
            t = s.get("timing", {})
            setup = (
                f"init {_s(s.get('init_s'))}, save {_s(s.get('save_s'))}"
                if side == "hf"
                else (f"convert {_s(s.get('convert_s'))}, load {_s(s.get('load_s'))}")
            )
            runs = ", ".join(f"{x:.1f}" for x in t.get("fwd_bwd_all_s", []))
            cpu = "-" if t.get("cpu_per_wall") is None else f"{t['cpu_per_wall']:.2f}"
            if t.get("cpu_per_wall") is not None and t["cpu_per_wall"] < 0.9 * settings["threads"]:
                cpu += " (shared)"
                contended = True
            agree = r["decode_tokens_agree"]
            tokens = "-" if agree is None else f"{agree}/{len(t.get('tokens', []))} same as HF"
            out.append(
                f"| {r['label']} | {s['framework']} | {_s(t.get('fwd_bwd_s'))} ({runs}) | {cpu} | {_ms(t.get('prefill_s'))} "
                f"| {_ms(t.get('per_token_s'))} | {_gib(s)} | {_s(s['wall_s'])} ({setup}) "
                f"| {tokens if side == 'paddle' else '-'} |"
            )
    if contended:
        out += [
            "",
            "**(shared)**: during those passes the process got less than 90% of its threads' CPU time, most likely",
            "because another process was running on the same cores (or the pass waited on memory or disk): that row's",
            "times are upper bounds, not the framework's speed. Compare rows only where neither is marked, and rerun",
            "on an idle machine for a clean comparison. The precision figures do not depend on it.",
        ]
    return [*out, ""]


def _layers(rows: list[dict]) -> list[str]:
    out = ["## Per decoder layer", ""]
    for r in rows:
        out += [
            f"<details><summary>{r['model']}: max abs per decoder layer</summary>",
            "",
            "| layer | layer output | worst forward tensor in it | worst gradient in it |",
            "|---|---|---|---|",
        ]
        for e in r["layers"]:
            f, g = e["forward"] or {}, e["grads"] or {}
            out.append(
                f"| {e['layer'].rsplit('.', 1)[1]} | {_e(e['output'])} "
                f"| `{_short(f.get('name', '-'))}` {_e(f.get('max_abs'))} "
                f"| `{_short(g.get('name', '-'))}` {_e(g.get('max_abs'))} |"
            )
        out += ["", "</details>", ""]
    return out


def _run(report: dict, rows: list[dict]) -> list[str]:
    out = ["## The run", ""]
    out.append(
        f"Total {report['total_s'] / 60:.1f} min for {', '.join(r['label'] for r in report['rows'])} on "
        f"{report['machine']['cpus']} CPUs (Python {report['machine']['python']})."
    )
    if rows:
        fw = rows[0]["frameworks"]
        out.append(f"Frameworks: {fw['hf']['framework']}; {fw['paddle']['framework']}.")
        out += ["", "| size | params | " + " | ".join(CONFIG_KEYS) + " |", "|---" * (len(CONFIG_KEYS) + 2) + "|"]
        for r in rows:
            cells = [str(r["config"].get(k, "-")) for k in CONFIG_KEYS]
            out.append(f"| {r['label']} | {r['params'] / 1e9:.3f} B | " + " | ".join(cells) + " |")
        out.append("")
        out.append(
            "Per-tensor summaries (every forward tensor and gradient, max abs / max rel / max |HF|) are in "
            "`reports/precision.json`."
        )
    return out
