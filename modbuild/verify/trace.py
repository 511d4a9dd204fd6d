"""Find the first sublayer whose output diverges between two implementations of one model.

Forward hooks record every sublayer's output on both sides. Sublayers are matched by name through
the parameter-name mapping (`llama.layers.0.self_attn` <-> `model.layers.0.self_attn`), not by
execution order, and visited in our execution order.
"""

from __future__ import annotations

import numpy as np
import paddle

from modbuild.verify.specs import TINY, generated, left_padded_batch, spec


def _first_array(output) -> np.ndarray | None:
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    if hasattr(output, "detach"):
        output = output.detach()
    return output.numpy() if hasattr(output, "numpy") else None


def module_pairs(
    param_pairs: list[tuple[str, str]], ours_modules: set[str], their_modules: set[str]
) -> dict[str, str]:
    """Our module path -> theirs, from parameter pairs and their parents with equal trailing names."""
    pairs: dict[str, str] = {}
    for mine, theirs in param_pairs:
        a, b = mine.split(".")[:-1], theirs.split(".")[:-1]
        while a and b:
            pairs.setdefault(".".join(a), ".".join(b))
            if a[-1] != b[-1]:
                break
            a, b = a[:-1], b[:-1]
    for name in ours_modules - set(pairs):  # parameter-free sublayers such as rotary_emb
        head, _, tail = name.rpartition(".")
        if head in pairs and f"{pairs[head]}.{tail}" in their_modules:
            pairs[name] = f"{pairs[head]}.{tail}"
    return pairs


def _record_paddle(model: paddle.nn.Layer, names: set[str], store: dict, order: list[str]) -> list:
    hooks = []
    for name, layer in model.named_sublayers():
        if name in names:

            def hook(layer, inputs, output, name=name):
                store.setdefault(name, _first_array(output))
                order.append(name)

            hooks.append(layer.register_forward_post_hook(hook))
    return hooks


def _record_torch(model, names: set[str], store: dict) -> list:
    hooks = []
    for name, module in model.named_modules():
        if name in names:

            def hook(module, inputs, output, name=name):  # must return None, or torch replaces the output
                store.setdefault(name, _first_array(output))

            hooks.append(module.register_forward_hook(hook))
    return hooks


def compare_outputs(pairs, ours_out, their_out, order, mask, bound) -> list[dict]:
    """The first diverging sublayer, then the error after each decoder layer."""
    rows, first = [], None
    for name in dict.fromkeys(order):
        a, b = ours_out.get(name), their_out.get(pairs[name])
        if a is None or b is None or a.shape != b.shape:
            continue
        if a.ndim >= 2 and a.shape[:2] == mask.shape:
            a, b = a[mask], b[mask]
        diff = float(np.abs(a.astype("float64") - b.astype("float64")).max()) if a.size else 0.0
        rel = diff / (float(np.abs(b).max()) or 1.0)
        row = {"layer": name, "max_abs": diff, "max_rel": rel}
        if first is None and diff > bound:
            first = row
        if name.split(".")[-2:-1] == ["layers"]:
            rows.append(row)
    return ([first] if first else []) + [{"decoder_layer": r["layer"], "max_abs": r["max_abs"]} for r in rows]


def first_divergence(model: str, check: str, modeling=None, bound: float | None = None) -> list[dict]:
    if check == "hf":
        return _trace_hf(model, modeling, 1e-4 if bound is None else bound)
    return _trace_paddlenlp(model, modeling, 1e-5 if bound is None else bound)


def _trace_hf(model: str, modeling, bound: float) -> list[dict]:
    import torch

    from modbuild.verify.hf_check import hf_model

    sp = spec(model)
    modeling = modeling or generated(model)[0]
    net = hf_model(model)
    cls = getattr(modeling, sp.head_class)
    ours = cls(cls.config_class(**{**TINY, **sp.config}))
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    mappings = cls._get_name_mappings(ours.config)
    ours.set_state_dict(
        {m.target_name: state[m.source_name].T if m.action == "transpose" else state[m.source_name] for m in mappings}
    )
    pairs = module_pairs(
        [(m.target_name, m.source_name) for m in mappings],
        {n for n, _ in ours.named_sublayers()},
        {n for n, _ in net.named_modules()},
    )
    batch = left_padded_batch(TINY["vocab_size"])
    mine, theirs, order = {}, {}, []
    hooks = _record_paddle(ours, set(pairs), mine, order) + _record_torch(net, set(pairs.values()), theirs)
    ours.eval()
    with paddle.no_grad(), torch.no_grad():
        ours(**{k: paddle.to_tensor(v) for k, v in batch.items() if k != "labels"})
        net(**{k: torch.tensor(v) for k, v in batch.items() if k != "labels"})
    for hook in hooks:
        hook.remove()
    return compare_outputs(pairs, mine, theirs, order, batch["attention_mask"].astype(bool), bound)


def _trace_paddlenlp(model: str, modeling, bound: float) -> list[dict]:
    from modbuild.verify.paddlenlp_check import build_pair, reference_state

    ours, reference = build_pair(model, modeling)
    reference.set_state_dict(reference_state(ours, reference))
    names = {n for n, _ in ours.named_sublayers()} & {n for n, _ in reference.named_sublayers()}
    pairs = {n: n for n in names}
    batch = left_padded_batch(TINY["vocab_size"])
    mine, theirs, order, unused = {}, {}, [], []
    hooks = _record_paddle(ours, names, mine, order) + _record_paddle(reference, names, theirs, unused)
    for net in (ours, reference):
        net.eval()
        with paddle.no_grad():
            net(**{k: paddle.to_tensor(v) for k, v in batch.items() if k != "labels"})
    for hook in hooks:
        hook.remove()
    return compare_outputs(pairs, mine, theirs, order, batch["attention_mask"].astype(bool), bound)
