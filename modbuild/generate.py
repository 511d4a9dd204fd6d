"""Generate text with a converted checkpoint: greedy decoding through the model's KV cache.

    python -m modbuild.generate --model .cache/weights/smollm2/paddle --prompt "What is the capital of France?"

The model is the generated one its config.json names (`modbuild.models.from_pretrained`); the tokenizer is
the checkpoint's own (tokenizer.json, read by transformers). `--chat` wraps the prompt in the tokenizer's
chat template, as an instruct model expects. An HF checkpoint is converted first (`python -m modbuild.weights
hf2paddle`, which copies the tokenizer files too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Any one of them makes a directory worth handing to AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def greedy_tokens(model, ids, new_tokens: int, eos_token_id: int | None = None) -> list[int]:
    """Greedy decoding: one forward over the prompt, then one token at a time through the KV cache;
    stops after `new_tokens` (none for 0 or less) or at `eos_token_id` (included). A model whose
    ``cache_outdated(past_length, length)`` says so (Phi-3's longrope, as HF's) runs the whole sequence again."""
    import paddle

    model.eval()
    tokens: list[int] = []
    past, step_ids = None, ids
    with paddle.no_grad():
        for _ in range(new_tokens):  # a bound, not a test for equality: 0 or less runs no step
            if past is not None and _cache_outdated(model, len(ids[0]) + len(tokens) - 1, len(ids[0]) + len(tokens)):
                past, step_ids = None, [[*ids[0], *tokens]]
            out = model(input_ids=paddle.to_tensor(step_ids), past_key_values=past, use_cache=True, return_dict=True)
            tokens.append(int(out.logits[0, -1].argmax().item()))
            if tokens[-1] == eos_token_id:
                break
            past, step_ids = out.past_key_values, [[tokens[-1]]]
    return tokens


def _cache_outdated(model, past_length: int, length: int) -> bool:
    check = getattr(model, "cache_outdated", None)
    return check is not None and check(past_length, length)


def prompt_ids(tokenizer, prompt: str, chat: bool):
    if chat:
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="np")
    return tokenizer(prompt, return_tensors="np")["input_ids"]


def token_count(text: str) -> int:
    """argparse type of --max-new-tokens: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modbuild.generate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, help="a Paddle checkpoint directory (config.json, weights, tokenizer)"
    )
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--max-new-tokens", type=token_count, default=64, metavar="N", help="at most N new tokens (default 64)"
    )
    parser.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    return parser


def load_tokenizer(directory: Path):
    """The checkpoint's tokenizer; none, or one transformers cannot read, is a CheckpointError."""
    from modbuild.models import CheckpointError

    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"{directory}: no tokenizer ({', '.join(TOKENIZER_FILES)}); copy the HF checkpoint's tokenizer files "
            "here (python -m modbuild.weights hf2paddle copies them)"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:  # transformers' own, unwrapped
        raise CheckpointError(f"{directory}: the tokenizer does not load ({type(exc).__name__}: {exc})") from None


def load(directory: Path):
    """(model, tokenizer) of a checkpoint directory; the cheap checks run before paddle and transformers load."""
    from modbuild.models import CheckpointError, checkpoint_class, load_class
    from modbuild.quiet import quiet_imports, quiet_third_party

    quiet_imports()  # before the model's module imports paddle
    cls = checkpoint_class(directory)
    if not cls.__name__.endswith("ForCausalLM"):
        raise CheckpointError(
            f"{directory / 'config.json'}: names {cls.__name__}, not a causal LM: generate needs a *ForCausalLM model"
        )
    quiet_third_party()
    tokenizer = load_tokenizer(directory)
    return load_class(cls, directory, dtype="float32"), tokenizer


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from modbuild.models import CheckpointError, UnknownModel

    try:
        model, tokenizer = load(Path(args.model))
    except (CheckpointError, UnknownModel) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ids = prompt_ids(tokenizer, args.prompt, args.chat)
    start = time.perf_counter()
    tokens = greedy_tokens(model, ids, args.max_new_tokens, tokenizer.eos_token_id)
    elapsed = time.perf_counter() - start
    print(tokenizer.decode(tokens, skip_special_tokens=True))
    rate = f", {elapsed / len(tokens) * 1000:.0f} ms/token" if tokens else ""
    print(f"[{len(tokens)} tokens in {elapsed:.1f} s{rate}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
