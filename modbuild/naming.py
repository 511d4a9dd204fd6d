"""Prefix renaming rules, shared by the converter and the runtime loader.

A model prefix has three spellings: ``llama`` (modules, attributes, string keys),
``Llama`` (classes) and ``LLAMA`` (constants). A spelling is renamed only where it is a
whole *segment* of a name. Segments are separated by ``_`` or ``.``, or start at a camel-case
hump. A digit glued to a prefix makes a different name: ``Llama3RotaryEmbedding`` and the rope
type ``"llama3"`` are left alone, so they never turn into ``Qwen23RotaryEmbedding``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Prefix:
    lower: str
    camel: str

    @property
    def upper(self) -> str:
        return self.lower.upper()

    @classmethod
    def from_model(cls, model: str, camel: str | None = None) -> "Prefix":
        return cls(model, camel or "".join(part.capitalize() for part in model.split("_")))


@dataclass(frozen=True)
class Renamer:
    """Renames one parent prefix to a child prefix."""

    old: Prefix
    new: Prefix

    @cached_property
    def _patterns(self) -> tuple[tuple[re.Pattern[str], str], ...]:
        old, new = self.old, self.new
        return (
            # Camel: a hump start before, and the next hump, `_`, `.` or the end after.
            (re.compile(rf"(?<![A-Z]){re.escape(old.camel)}(?![a-z0-9])"), new.camel),
            (re.compile(rf"(?<![A-Za-z0-9]){re.escape(old.upper)}(?![A-Z0-9])"), new.upper),
            (re.compile(rf"(?<![A-Za-z0-9]){re.escape(old.lower)}(?![a-z0-9])"), new.lower),
        )

    def identifier(self, name: str) -> str:
        if self.old == self.new:
            return name
        for pattern, replacement in self._patterns:
            name = pattern.sub(replacement, name)
        return name

    @cached_property
    def _prose(self) -> re.Pattern[str]:
        return re.compile(rf"(?<![A-Za-z0-9]){re.escape(self.old.camel)}(?![a-z0-9])", re.IGNORECASE)

    def string(self, value: str) -> str:
        """Rename the prefix inside a string constant, by the same segment rule as identifiers: keys
        (`"llama."`, `"LlamaModel"`) and prose (`"Initializing the LlamaConfig"`) alike, as HF does. Prose
        spells names its own way (`SigLIP`, `InstructBLIP`, `Paligemma`): such a spelling becomes the
        child's class spelling."""
        if self.old == self.new:
            return value
        value = self.identifier(value)
        keep = {self.old.camel, self.old.lower, self.old.upper, self.new.camel, self.new.lower, self.new.upper}
        return self._prose.sub(lambda hit: hit.group(0) if hit.group(0) in keep else self.new.camel, value)


class PrefixError(ValueError):
    pass


def _camel_suffix(child: str, base: str) -> str:
    """The longest common suffix of two class names that starts a word in both: at a camel hump, and not inside
    an acronym (`ASTAttention(ViTAttention)` share `Attention`, not `TAttention`)."""
    n = 0
    while n < min(len(child), len(base)) and child[-1 - n] == base[-1 - n]:
        n += 1
    while n and not (_word_start(child, len(child) - n) and _word_start(base, len(base) - n)):
        n -= 1
    return child[len(child) - n :] if n else ""


def _word_start(name: str, i: int) -> bool:
    """A word may start at name[i]: an upper-case letter, but not the last letter of an acronym that a capitalised
    word follows (`T` in `ASTAttention`). Inside other runs of capitals (`GPTMLP`) any letter may."""
    if i == 0 or not name[i].isupper():
        return i == 0
    acronym_end = name[i - 1].isupper() and name[i + 1 : i + 2].isupper() and name[i + 2 : i + 3].islower()
    return not acronym_end


def _named_prefix(name: str, model: str | None) -> str | None:
    """`Qwen2Moe` for ("Qwen2MoeMLP", "qwen2_moe"), `Ernie4_5_Moe` for ("Ernie4_5_MoeMLP", "ernie4_5_moe"):
    the model's name as the class spells it (case and underscores aside), ending at a camel hump."""
    if not model:
        return None
    i = j = 0
    while j < len(model) and i < len(name):
        if name[i].lower() == model[j]:
            i, j = i + 1, j + 1
        elif model[j] == "_":
            j += 1
        elif name[i] == "_":
            i += 1
        else:
            return None
    if j < len(model) or i >= len(name) or name[i].islower():
        return None
    return name[:i]


def infer_camel_prefixes(
    pairs: list[tuple[str, str]], child_model: str | None = None, parent_model: str | None = None
) -> tuple[str, str] | None:
    """Infer (child_camel, parent_camel) from `class Child(Base)` name pairs.

    A class name that starts with its model's name (`Qwen2MoeMLP` for `qwen2_moe`) gives the prefix
    directly. Otherwise the pair votes by shared camel suffix: `Qwen2MLP(LlamaMLP)` votes for
    ("Qwen2", "Llama"); pairs without one (`Qwen2MoeSparseMoeBlock(Qwen2MLP)`) do not vote. A tie
    between different answers raises.
    """
    votes: Counter[tuple[str, str]] = Counter()
    for child, base in pairs:
        suffix = _camel_suffix(child, base)
        child_prefix = _named_prefix(child, child_model) or child[: len(child) - len(suffix)]
        base_prefix = _named_prefix(base, parent_model) or base[: len(base) - len(suffix)]
        if (suffix or child_prefix != child) and child_prefix and base_prefix:
            votes[(child_prefix, base_prefix)] += 1
    if not votes:
        return None
    ranked = votes.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        options = ", ".join(f"{c}<-{p}" for (c, p), _ in ranked[:2])
        raise PrefixError(f"ambiguous prefix: class names suggest {options} equally often")
    return ranked[0][0]


def _pick(votes: Counter[str], what: str, hints: set[str] = frozenset()) -> str | None:
    """The most voted prefix; a tie prefers the spelling with more camel humps (`PaliGemma` over `Paligemma`),
    else the one hint names (the prefix of the parent's `<Prefix>Config`, HF's own source of a model's name)."""
    if not votes:
        return None
    ranked = sorted(votes.items(), key=lambda kv: (-kv[1], -sum(c.isupper() for c in kv[0]), kv[0]))
    tied = [name for name, count in ranked if count == ranked[0][1]]
    if len(tied) > 1 and len(hinted := [name for name in tied if name in hints]) == 1:
        return hinted[0]
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1] and ranked[0][0].lower() != ranked[1][0].lower():
        raise PrefixError(
            f"ambiguous prefix: class names suggest {what} {ranked[0][0]} and {ranked[1][0]} equally often"
        )
    return ranked[0][0]


def infer_prefixes(
    pairs_by_parent: dict[str, list[tuple[str, str]]], child_model: str
) -> tuple[str | None, dict[str, str | None]]:
    """The child's camel prefix and each parent's, from `class Child(Base)` name pairs per parent model.

    The child's prefix is the model name as its class names spell it (`Ernie4_5_Moe` for ernie4_5_moe);
    failing that, the shared-suffix vote of `infer_camel_prefixes`. A parent's prefix is then what its class
    names put in place of the child's (`Qwen3MoeMLP` under `Ernie4_5_MoeMLP`: `Qwen3Moe`); a spelling of the
    parent's own model name counts first. Shared by the converter and the runtime loader.
    """
    pairs = [pair for found in pairs_by_parent.values() for pair in found]
    named = Counter(n for c, _ in pairs if (n := _named_prefix(c, child_model)))
    child = _pick(named, "for the child") if named else None
    if child is None:
        fallback = infer_camel_prefixes(pairs, child_model)
        child = fallback[0] if fallback else None
    parents = {}
    for parent, found in pairs_by_parent.items():
        own, votes = Counter(), Counter()
        for name, base in found:
            if (spelled := _named_prefix(base, parent)) is not None:
                own[spelled] += 1
            elif child and name.startswith(child) and len(name) > len(child):
                suffix = name[len(child) :]
                if base.endswith(suffix) and len(base) > len(suffix):
                    votes[base[: -len(suffix)]] += 1
        hints = {base[: -len("Config")] for _, base in found if base.endswith("Config") and len(base) > 6}
        try:
            parents[parent] = _pick(own, f"for '{parent}'") or _pick(votes, f"for '{parent}'", hints)
        except PrefixError as exc:
            raise PrefixError(f"{exc} (parent '{parent}')") from None
    return child, parents
