"""verify:<m>:hf: the generated Paddle model against HuggingFace transformers' PyTorch model.

The HF model is built from the equivalent tiny config, every parameter re-drawn with std 0.2,
saved as a real safetensors checkpoint, converted with the project's weight converter, and loaded
with `from_pretrained`. Logits, loss and gradients are compared on a left-padded batch, and greedy
decoding with the KV cache must pick the same tokens as HF's `generate`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import paddle
import torch
import transformers

from modbuild.verify.paddle_run import grad_rel, greedy, is_norm_weight, max_abs, run
from modbuild.verify.record import Record
from modbuild.verify.specs import TINY, generated, left_padded_batch, spec
from modbuild.weights import convert_hf_to_paddle

BOUNDS = {"logits": 1e-4, "loss": 1e-5, "grads_rel": 1e-4, "decode_mismatch": 0.0, "missing_params": 0.0}


def hf_model(model: str, **config) -> torch.nn.Module:
    sp = spec(model)
    cls = getattr(transformers, sp.hf_class)
    hf_config = cls.config_class(**{**TINY, **sp.config, **config}, architectures=[sp.hf_class])
    hf_config._attn_implementation = "eager"
    torch.manual_seed(0)
    net = cls(hf_config).float().eval()
    with torch.no_grad():
        for name, param in sorted(net.named_parameters()):
            mean = sp.norm_mean if is_norm_weight(name, param) else 0.0
            param.normal_(mean, 0.2)
        # Then the float buffers a checkpoint carries (DeepSeek-V3's router correction bias): zeros would test nothing.
        saved = net.state_dict()
        for name, buffer in sorted(net.named_buffers()):
            if name in saved and buffer.is_floating_point():
                buffer.normal_(0.0, 0.2)
    return net


def load_converted(net: torch.nn.Module, model: str, workdir: Path, modeling=None) -> paddle.nn.Layer:
    """Save HF weights as safetensors, convert them, and load the result into the generated model
    (or into `modeling`, a substitute module such as a deliberately broken copy)."""
    net.save_pretrained(workdir / "hf", safe_serialization=True)
    convert_hf_to_paddle(workdir / "hf", workdir / "paddle", model=model)
    modeling = modeling or generated(model)[0]
    ours = getattr(modeling, spec(model).head_class).from_pretrained(workdir / "paddle", dtype="float32")
    ours.eval()
    return ours


def hf_run(net: torch.nn.Module, batch: dict[str, np.ndarray]):
    net.zero_grad()
    out = net(**{k: torch.tensor(v) for k, v in batch.items()})
    out.loss.backward()
    grads = {n: p.grad.numpy() for n, p in net.named_parameters() if p.grad is not None}
    return out.logits.detach().numpy(), float(out.loss.item()), grads


def _padding_rows(net: torch.nn.Module) -> dict[str, int]:
    return {
        f"{name}.weight": module.padding_idx
        for name, module in net.named_modules()
        if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None
    }


def compare(ours: paddle.nn.Layer, net: torch.nn.Module, record: Record) -> None:
    batch = left_padded_batch(TINY["vocab_size"])
    mine = run(ours, batch)
    logits, loss, grads = hf_run(net, batch)
    real = batch["attention_mask"].astype(bool)
    record.metrics["logits"] = max_abs(mine.logits[real], logits[real])
    record.metrics["loss"] = abs(mine.loss - loss)
    params = dict(ours.named_parameters())
    pad_rows = _padding_rows(net)
    largest = max((float(np.abs(g).max()) for g in grads.values() if g.size), default=0.0)
    worst, worst_name, missing, vanishing = 0.0, "", [], []
    buffers = set(ours.state_dict()) - set(params)  # checkpoint buffers (a router's correction bias): no gradient
    for mapping in type(ours)._get_name_mappings(ours.config):
        if mapping.target_name in buffers:
            continue
        if mapping.target_name not in params:
            missing.append(mapping.target_name)
            continue
        if mapping.source_name not in grads and mapping.target_name not in mine.grads:
            continue  # an expert no token was routed to: no gradient on either side
        theirs = grads.get(mapping.source_name)
        if theirs is None:  # no token reached this expert on HF's side (ours routed some): zeros in our layout
            theirs = np.zeros(params[mapping.target_name].shape, "float32")
        elif mapping.action == "transpose":
            theirs = theirs.T
        own = mine.grads.get(mapping.target_name, np.zeros_like(theirs))
        if mapping.source_name in pad_rows:  # HF's Embedding(padding_idx) never updates the pad row
            own, theirs = (
                np.delete(own, pad_rows[mapping.source_name], 0),
                np.delete(theirs, pad_rows[mapping.source_name], 0),
            )
        rel, vanishes = grad_rel(own, theirs, largest)
        if vanishes:
            vanishing.append(mapping.target_name)
        if rel >= worst:
            worst, worst_name = rel, mapping.target_name
    record.metrics["grads_rel"] = worst
    record.metrics["missing_params"] = float(len(missing))
    record.notes.append(f"largest gradient error in {worst_name}")
    if vanishing:
        record.notes.append(f"{len(vanishing)} zero gradients (e.g. {vanishing[0]}) compared with the largest")
    if missing:
        record.notes.append(f"parameters the HF model has and ours lacks: {missing[:4]}")


def compare_decoding(
    ours: paddle.nn.Layer, net: torch.nn.Module, record: Record, new_tokens: int = 8, attention: str = "eager"
) -> None:
    """Greedy tokens through our KV cache against HF's `generate`, run with `attention` (the spec's
    ``hf_generate_attention``; the logits and gradients are always compared with eager)."""
    prompt = left_padded_batch(TINY["vocab_size"])["input_ids"][1:2]
    ids = torch.tensor(prompt)
    compared_with, net.config._attn_implementation = net.config._attn_implementation, attention
    expected = net.generate(
        ids,
        attention_mask=torch.ones_like(ids),  # an unpadded row, said so (HF warns when it has to guess)
        pad_token_id=0,
        max_new_tokens=new_tokens,
        do_sample=False,
        min_new_tokens=new_tokens,
    )
    net.config._attn_implementation = compared_with
    expected = expected[0, prompt.shape[1] :].tolist()
    got = greedy(ours, prompt, new_tokens)
    record.metrics["decode_mismatch"] = float(
        sum(a != b for a, b in zip(got, expected)) + abs(len(got) - len(expected))
    )


def check_hf(model: str, modeling=None) -> Record:
    record = Record(model, "hf", bounds=dict(BOUNDS))
    net = hf_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        ours = load_converted(net, model, Path(tmp), modeling)
    compare(ours, net, record)
    if spec(model).causal:
        compare_decoding(ours, net, record, attention=spec(model).hf_generate_attention)
    else:
        del record.bounds["decode_mismatch"]
        record.notes.append("an encoder: no decoding to compare")
    record.metrics["params"] = float(sum(p.numel() for p in net.parameters()))
    return record
