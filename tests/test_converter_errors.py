"""Bad modular input: every error names `path:line`, and nothing is converted."""

import textwrap
from pathlib import Path

import pytest

from modbuild.convert import ConvertError, convert_file
from modbuild.layout import Layout

PARENT = """
class LlamaConfig:
    pass


class LlamaLayer:
    def __init__(self, config, layer_idx=0, *, scale=1.0):
        self.config = config
        self.layer_idx = layer_idx
        self.scale = scale
        self.cache = None

    def forward(self, x):
        y = x * self.scale
        return y

    def reset(self):
        self.cache = None
"""


def convert(tmp_path: Path, child: str, parent: str = PARENT) -> dict:
    (tmp_path / "generated" / "llama").mkdir(parents=True, exist_ok=True)
    (tmp_path / "generated" / "llama" / "modeling_llama.py").write_text(textwrap.dedent(parent))
    path = tmp_path / "modular" / "qwen2" / "modular_qwen2.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(child))
    return convert_file(path, Layout(tmp_path / "modular", tmp_path / "generated"))


def expect_error(tmp_path, child, line, message):
    with pytest.raises(ConvertError) as info:
        convert(tmp_path, child)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'modular/qwen2/modular_qwen2.py'}:{line}: "), text
    assert message in text, text


HEADER = "from generated.llama.modeling_llama import LlamaLayer\n\n\nclass Qwen2Layer(LlamaLayer):\n"


def test_syntax_error(tmp_path):
    expect_error(tmp_path, "class Broken(:\n    pass\n", 1, "syntax error")


def test_unknown_parent_symbol(tmp_path):
    expect_error(tmp_path, "\nfrom generated.llama.modeling_llama import LlamaNope\n", 2, "'LlamaNope' is not defined")


def test_missing_parent_module(tmp_path):
    expect_error(tmp_path, "from generated.mistral.modeling_mistral import MistralX\n", 1, "does not exist")


def test_ambiguous_prefix(tmp_path):
    # No class spells the model's name (qwen2), and the two pairs suggest different prefixes equally often.
    child = """
    from generated.llama.modeling_llama import LlamaConfig, LlamaLayer


    class GemmaLayer(LlamaLayer):
        pass


    class MistralConfig(LlamaConfig):
        pass
    """
    expect_error(tmp_path, child, 1, "ambiguous prefix")


def test_super_inside_an_expression_is_hoisted(tmp_path):
    child = HEADER + (
        "    def forward(self, xs):\n"
        "        return [u * o for u, o in zip(self.up, super().forward(xs))]\n\n"
        "    up = [1, 10]\n"
    )
    parent = PARENT.replace(
        "        y = x * self.scale\n        return y\n", "        y = [v * self.scale for v in x]\n        return y\n"
    )
    text = convert(tmp_path, child, parent)[tmp_path / "generated/qwen2/modeling_qwen2.py"]
    assert "super()" not in text.split("def forward")[1].split("def ")[0]
    namespace: dict = {}
    exec(text, namespace)
    layer = namespace["Qwen2Layer"](None)
    layer.scale = 2.0
    assert layer.forward([3.0, 4.0]) == [6.0, 80.0]


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("x if x else super().forward(x)", "under a condition"),
        ("[super().forward(v) for v in x]", "per item"),
        ("self.reset() or super().forward(x)", "under a condition"),
        ("[self.reset(), super().forward(x)]", "calls a function"),
    ],
)
def test_super_inside_an_expression_that_cannot_move(tmp_path, expression, why):
    child = HEADER + f"    def forward(self, x):\n        return {expression}\n"
    expect_error(tmp_path, child, 6, why)


def test_too_many_positional_arguments(tmp_path):
    child = HEADER + "    def __init__(self, config):\n        super().__init__(config, 1, 2)\n"
    expect_error(tmp_path, child, 6, "takes 2 positional arguments, 3 given")


def test_unexpected_keyword(tmp_path):
    child = HEADER + "    def __init__(self, config):\n        super().__init__(config, bias=True)\n"
    expect_error(tmp_path, child, 6, "unexpected keyword argument 'bias'")


def test_missing_argument(tmp_path):
    child = HEADER + "    def __init__(self):\n        super().__init__()\n"
    expect_error(tmp_path, child, 6, "missing the argument 'config'")


def test_a_parameter_the_child_still_uses_gets_its_own_name(tmp_path):
    child = HEADER + (
        "    def __init__(self, config, layer_idx=0):\n"
        "        super().__init__(config, layer_idx + 1)\n"
        "        self.idx = layer_idx\n"
    )
    # Python's meaning: the parent's body sees layer_idx + 1, the child's code after the call its own layer_idx
    text = convert(tmp_path, child)[tmp_path / "generated/qwen2/modeling_qwen2.py"]
    assert "super_layer_idx = layer_idx + 1" in text and "self.layer_idx = super_layer_idx" in text
    namespace: dict = {}
    exec(text, namespace)
    layer = namespace["Qwen2Layer"](None, 4)
    assert (layer.layer_idx, layer.idx) == (5, 4)


def test_parent_local_would_clobber_child_local(tmp_path):
    child = HEADER + (
        "    def forward(self, x):\n        y = 3\n        out = super().forward(x)\n        return out + y\n"
    )
    expect_error(tmp_path, child, 7, "would overwrite the child's local(s) ['y']")


def test_deleted_attribute_still_read_is_a_warning(tmp_path):
    # HF keeps reads of a deleted attribute (they fail only if reached): so do we, saying so at path:line.
    from modbuild.convert.source import ModularWarning

    child = HEADER + "    def __init__(self, config):\n        super().__init__(config)\n        del self.scale\n"
    with pytest.warns(ModularWarning, match="`del self.scale` removes the parent's attribute") as record:
        text = convert(tmp_path, child)[tmp_path / "generated/qwen2/modeling_qwen2.py"]
    assert record[0].filename.endswith("modular_qwen2.py") and record[0].lineno == 7
    assert "self.scale = scale" not in text and "y = x * self.scale" in text  # forward() still reads it


def test_deleted_attribute_assigned_elsewhere_is_silent(recwarn, tmp_path):
    child = HEADER + "    def __init__(self, config):\n        super().__init__(config)\n        del self.cache\n"
    text = convert(tmp_path, child)[tmp_path / "generated/qwen2/modeling_qwen2.py"]
    assert text.count("self.cache = None") == 1 and not recwarn.list  # reset() assigns it again


def test_positional_binding_follows_the_parent_signature(tmp_path):
    child = HEADER + "    def __init__(self, config, idx):\n        super().__init__(config, idx, scale=2.0)\n"
    text = convert(tmp_path, child)[tmp_path / "generated/qwen2/modeling_qwen2.py"]
    assert "self.layer_idx = idx" in text and "self.scale = 2.0" in text  # literals and names substituted


def test_parent_locals_left_unused_by_the_child_are_dropped(tmp_path):
    parent = PARENT.replace("        self.scale = scale\n", "        width = scale * 2\n        self.scale = width\n")
    child = HEADER + "    def __init__(self, config):\n        super().__init__(config)\n        self.scale = 3.0\n"
    (tmp_path / "generated" / "llama").mkdir(parents=True)
    text = convert(tmp_path, child, parent)[tmp_path / "generated/qwen2/modeling_qwen2.py"]
    assert "width" not in text and "self.scale = 3.0" in text


def test_an_explicit_import_wins_over_the_first_parent(tmp_path):
    """HF's rule: a name imported explicitly from one parent is that parent's, even where a parent imported
    earlier defines the same (renamed) name; inherited code uses it too."""
    for model, camel, body in (("qwen3", "Qwen3", "return 3"), ("qwen2_moe", "Qwen2Moe", "return 2")):
        path = tmp_path / "generated" / model / f"modeling_{model}.py"
        path.parent.mkdir(parents=True)
        path.write_text(
            f"class {camel}MLP:\n    def width(self):\n        {body}\n\n\n"
            f"class {camel}Model:\n    def inherited(self):\n        return {camel}MLP()\n"
        )
    child = tmp_path / "modular" / "qwen3_moe" / "modular_qwen3_moe.py"
    child.parent.mkdir(parents=True)
    child.write_text(
        "from generated.qwen3.modeling_qwen3 import Qwen3Model\n"
        "from generated.qwen2_moe.modeling_qwen2_moe import Qwen2MoeMLP\n\n\n"
        "class Qwen3MoeModel(Qwen3Model):\n"
        "    def build(self):\n"
        "        return Qwen2MoeMLP()\n"
    )
    outputs = convert_file(child, Layout(tmp_path / "modular", tmp_path / "generated"))
    namespace: dict = {}
    exec(outputs[tmp_path / "generated/qwen3_moe/modeling_qwen3_moe.py"], namespace)
    model = namespace["Qwen3MoeModel"]()
    assert model.build().width() == 2 and model.inherited().width() == 2

    from modbuild.runtime import load_modular

    oracle = load_modular(child, tmp_path).Qwen3MoeModel()
    assert oracle.build().width() == 2 and oracle.inherited().width() == 2
