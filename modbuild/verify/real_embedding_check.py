"""verify:<m>:real for an encoder: sentence embeddings from a real trained checkpoint (all-MiniLM-L6-v2 for bert).

`doit weights:<name>` has copied the package's HF directory and converted it with our `hf2paddle`. On real
sentences, tokenized by the checkpoint's own tokenizer:

- token embeddings (the last hidden states at real tokens) against HF's `AutoModel` (≤ 1e-5), and the pooler;
- sentence embeddings, mean-pooled over the attention mask and L2-normalised (the checkpoint's
  sentence-transformers pipeline: `modules.json`), against HF's and against sentence-transformers' own
  `encode` (cosine ≥ 0.99999 with both);
- what the embeddings are for: each sentence's paraphrase scores higher than every unrelated sentence.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import paddle
import torch

from modbuild.project import Project
from modbuild.verify.paddle_run import max_abs
from modbuild.verify.record import Record

BOUNDS = {"token_embeddings": 1e-5, "pooled": 1e-5, "cosine_gap": 1e-5, "cosine_gap_st": 1e-5, "ranking": 0.0}
# Pairs of paraphrases; every other sentence is unrelated to both of a pair.
PAIRS = [
    ("A man is playing a guitar on the stage.", "Someone performs music with a guitar in front of an audience."),
    ("The cat is sleeping on the warm windowsill.", "A kitten naps in the sun by the window."),
    ("The central bank raised interest rates again.", "Borrowing costs went up after the bank's latest decision."),
    ("She is baking bread in the kitchen.", "A woman makes a loaf of bread at home."),
]


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the real tokens' hidden states, L2-normalised (sentence-transformers' Pooling + Normalize)."""
    summed = (hidden * mask[..., None]).sum(1)
    pooled = summed / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def ranking_violations(embeddings: np.ndarray) -> tuple[int, float, float]:
    """(how often an unrelated sentence scores at least a paraphrase's score, the lowest paraphrase score, the
    highest unrelated score); sentences 2i and 2i+1 are paraphrases."""
    scores = embeddings @ embeddings.T
    violations, lowest, highest = 0, 1.0, -1.0
    for i in range(len(scores)):
        partner = i ^ 1
        others = [scores[i, j] for j in range(len(scores)) if j not in (i, partner)]
        violations += sum(other >= scores[i, partner] for other in others)
        lowest, highest = min(lowest, scores[i, partner]), max(highest, *others)
    return int(violations), float(lowest), float(highest)


def check_real_embeddings(root: Path, model: str, name: str) -> Record:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from modbuild.models import from_pretrained

    record = Record(model, "real", bounds=dict(BOUNDS))
    cache = Project(Path(root)).weights_dir(name)
    threads = torch.get_num_threads()  # run_check's choice (`modbuild/verify/threads.py`)
    sentences = [sentence for pair in PAIRS for sentence in pair]
    batch = AutoTokenizer.from_pretrained(cache / "hf")(sentences, padding=True, return_tensors="np")
    mask = batch["attention_mask"]

    theirs = AutoModel.from_pretrained(cache / "hf", torch_dtype=torch.float32).eval()
    start = time.perf_counter()
    with torch.no_grad():
        hf_out = theirs(**{k: torch.tensor(v) for k, v in batch.items()})
    torch_ms = (time.perf_counter() - start) * 1000
    ours = from_pretrained(cache / "paddle", dtype="float32")
    ours.eval()
    start = time.perf_counter()
    with paddle.no_grad():
        our_out = ours(**{k: paddle.to_tensor(v) for k, v in batch.items()}, return_dict=True)
    paddle_ms = (time.perf_counter() - start) * 1000

    real = mask.astype(bool)
    hf_hidden, our_hidden = hf_out.last_hidden_state.numpy(), our_out.last_hidden_state.numpy()
    record.metrics["token_embeddings"] = max_abs(our_hidden[real], hf_hidden[real])
    record.metrics["pooled"] = max_abs(our_out.pooler_output.numpy(), hf_out.pooler_output.numpy())
    mine, hf_sentences = mean_pool(our_hidden, mask), mean_pool(hf_hidden, mask)
    st_sentences = SentenceTransformer(str(cache / "hf"), device="cpu").encode(sentences, normalize_embeddings=True)
    record.metrics["cosine_gap"] = float(1 - (mine * hf_sentences).sum(1).min())
    record.metrics["cosine_gap_st"] = float(1 - (mine * st_sentences).sum(1).min())
    violations, lowest, highest = ranking_violations(mine)
    record.metrics["ranking"] = float(violations)
    record.metrics["params"] = float(sum(p.numel() for p in theirs.parameters()))
    record.notes.append(
        f"{len(sentences)} real sentences ({int(mask.sum())} tokens): token embeddings up to "
        f"{float(np.abs(hf_hidden[real]).max()):.1f}, max |diff| {record.metrics['token_embeddings']:.1e}; sentence "
        f"cosine with HF {1 - record.metrics['cosine_gap']:.7f}, with sentence-transformers "
        f"{1 - record.metrics['cosine_gap_st']:.7f} (the lowest over the sentences)"
    )
    record.notes.append(
        f"paraphrases score {lowest:.3f} or more, unrelated sentences {highest:.3f} or less "
        f"({violations} unrelated pairs at or above a paraphrase)"
    )
    record.notes.append(
        f"{threads} thread{'s' * (threads > 1)}, forward of the batch: paddle {paddle_ms:.0f} ms, "
        f"torch {torch_ms:.0f} ms"
    )
    return record
