"""Rename the parent prefix inside the nodes that are emitted (never whole parent files)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import libcst as cst

from modbuild.naming import Renamer


def _root_name(node: cst.BaseExpression) -> str | None:
    while isinstance(node, (cst.Attribute, cst.Call, cst.Subscript)):
        node = node.value if not isinstance(node, cst.Call) else node.func
    return node.value if isinstance(node, cst.Name) else None


class _Rename(cst.CSTTransformer):
    """Rename identifiers and key-like strings; imports and import-bound names are left alone."""

    def __init__(
        self,
        name: Callable[[str], str],
        string: Callable[[str], str] | None,
        keep: Collection[str],
        prose: Callable[[str], str] | None = None,
    ):
        self.name, self.string, self.keep, self.prose = name, string, keep, prose
        self.docstrings: set[int] = set()

    def visit_Import(self, node: cst.Import) -> bool:
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        if original.value in self.keep:
            return updated
        new = self.name(original.value)
        return updated if new == original.value else updated.with_changes(value=new)

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        # `paddle.llama_op` is an attribute of an imported module: its name is not ours to change.
        if _root_name(original.value) in self.keep:
            return updated.with_changes(attr=original.attr)
        return updated

    def visit_Expr(self, node: cst.Expr) -> None:
        if isinstance(node.value, cst.SimpleString):
            self.docstrings.add(id(node.value))

    def leave_Comment(self, original: cst.Comment, updated: cst.Comment) -> cst.Comment:
        # Prose names the model as code does: `LlamaForCausalLM adds ...` reads `Qwen2ForCausalLM adds ...`.
        return updated.with_changes(value=self.prose(original.value)) if self.prose else updated

    def leave_SimpleString(self, original: cst.SimpleString, updated: cst.SimpleString) -> cst.SimpleString:
        if self.prose and id(original) in self.docstrings:
            return updated.with_changes(value=self.prose(original.value))
        if self.string is None or "\\" in original.value:
            return updated
        prefix_len = len(original.prefix)
        quote = original.quote
        body = original.value[prefix_len + len(quote) : -len(quote)]
        new = self.string(body)
        if new == body:
            return updated
        return updated.with_changes(value=f"{original.value[:prefix_len]}{quote}{new}{quote}")


def rename_node(
    node: cst.CSTNode,
    renamer: Renamer,
    keep: Collection[str] = (),
    text: str | None = None,
    members: list | None = None,
) -> cst.CSTNode:
    """Rename a parent's node for the child: identifiers, key-like strings, docstrings and comments.

    `text` is the node's source, `members` the class body's `Member`s (with theirs): a part whose source
    never spells the prefix is kept as it is, without a transform."""
    if renamer.old == renamer.new:
        return node
    if isinstance(node, cst.ClassDef) and isinstance(node.body, cst.IndentedBlock):
        texts = (
            [m.text for m in members]
            if members and len(members) == len(node.body.body)
            else [None] * len(node.body.body)
        )
        body = [_visit(stmt, renamer, keep, t) for stmt, t in zip(node.body.body, texts)]
        header = node.with_changes(body=node.body.with_changes(body=[]))
        return _visit(header, renamer, keep).with_changes(body=node.body.with_changes(body=body))
    return _visit(node, renamer, keep, text)


def _visit(node: cst.CSTNode, renamer: Renamer, keep: Collection[str], text: str | None = None) -> cst.CSTNode:
    if text is None:
        text = cst.Module([]).code_for_node(node)
    flat = text.lower().replace("_", "")
    spellings = {renamer.old.lower.replace("_", ""), renamer.old.camel.lower().replace("_", "")}
    if not any(spelling in flat for spelling in spellings):
        return node  # every spelling contains the model's or the class prefix's letters (`HunYuanDenseV1` for
        # hunyuan_v1_dense: not in the model's order)
    return node.visit(_Rename(renamer.identifier, renamer.string, keep, renamer.identifier))


def rename_strings(node: cst.CSTNode, renamer: Renamer) -> cst.CSTNode:
    """Rename inside strings, docstrings and comments only (identifiers stay)."""
    if renamer.old == renamer.new:
        return node
    return node.visit(_Rename(lambda n: n, renamer.string, (), renamer.identifier))


def replace_names(node: cst.CSTNode, mapping: Mapping[str, str]) -> cst.CSTNode:
    """Replace exactly the given identifiers (the child's references to imported parent names)."""
    if not mapping:
        return node
    return node.visit(_Rename(lambda n: mapping.get(n, n), None, ()))
