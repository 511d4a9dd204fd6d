"""Generate text with a converted checkpoint: greedy decoding through the model's KV cache.

    python -m modbuild.generate --model .cache/weights/smollm2/paddle --prompt "What is the capital of France?"

The model is the generated one its config.json names (`modbuild.models.from_pretrained`); the tokenizer is
the checkpoint's own (tokenizer.json, read by transformers). `--chat` wraps the prompt in the tokenizer's
chat template, as an instruct model expects.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def greedy_tokens(model, ids, new_tokens: int, eos_token_id: int | None = None) -> list[int]:
    """Greedy decoding: one forward over the prompt, then one token at a time through the KV cache;
    stops after `new_tokens` or at `eos_token_id` (included)."""
    import paddle

    model.eval()
    tokens: list[int] = []
    with paddle.no_grad():
        out = model(input_ids=paddle.to_tensor(ids), use_cache=True, return_dict=True)
        while True:
            tokens.append(int(out.logits[0, -1].argmax().item()))
            if len(tokens) == new_tokens or tokens[-1] == eos_token_id:
                return tokens
            out = model(
                input_ids=paddle.to_tensor([[tokens[-1]]]),
                past_key_values=out.past_key_values,
                use_cache=True,
                return_dict=True,
            )


def prompt_ids(tokenizer, prompt: str, chat: bool):
    if chat:
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="np")
    return tokenizer(prompt, return_tensors="np")["input_ids"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modbuild.generate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, help="a Paddle checkpoint directory (config.json, weights, tokenizer)"
    )
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    args = parser.parse_args(argv)
    directory = Path(args.model)
    if not (directory / "config.json").is_file():
        print(f"{directory}: no config.json: not a checkpoint directory", file=sys.stderr)
        return 1
    from modbuild.verify.quiet import quiet_third_party

    quiet_third_party()
    from transformers import AutoTokenizer

    from modbuild.models import UnknownModel, from_pretrained

    try:
        model = from_pretrained(directory, dtype="float32")
    except UnknownModel as exc:
        print(f"{directory / 'config.json'}: {exc}", file=sys.stderr)
        return 1
    tokenizer = AutoTokenizer.from_pretrained(directory)
    ids = prompt_ids(tokenizer, args.prompt, args.chat)
    start = time.perf_counter()
    tokens = greedy_tokens(model, ids, args.max_new_tokens, tokenizer.eos_token_id)
    elapsed = time.perf_counter() - start
    print(tokenizer.decode(tokens, skip_special_tokens=True))
    print(f"[{len(tokens)} tokens in {elapsed:.1f} s, {elapsed / len(tokens) * 1000:.0f} ms/token]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
