"""Each converter pass on its own, on small inputs, with no framework installed or imported."""

import textwrap
from pathlib import Path

import libcst as cst

from modbuild.convert import supercall
from modbuild.convert.collect import OutUnit
from modbuild.convert.emit import order
from modbuild.convert.rename import rename_node
from modbuild.convert.resolve import find_parent_imports
from modbuild.layout import Layout
from modbuild.convert.scopes import statement_reads
from modbuild.convert.source import parse_source
from modbuild.header import is_hand_edited, with_header
from modbuild.naming import Prefix, Renamer


def source(code: str, name: str = "modular_qwen2.py"):
    return parse_source(Path(name), textwrap.dedent(code))


def test_resolve_absolute_relative_and_namespace_imports():
    child = source(
        """
        import math
        from generated.llama.modeling_llama import LlamaMLP as Base
        from ..mistral.modeling_mistral import MistralNorm
        from generated.gemma import modeling_gemma
        """
    )
    found = find_parent_imports(child, Layout(Path("modular"), Path("generated")))
    assert found.symbols == {"Base": ("llama", "LlamaMLP"), "MistralNorm": ("mistral", "MistralNorm")}
    assert found.namespaces == {"modeling_gemma": "gemma"}
    assert [model for model, _, _ in found.order] == ["llama", "mistral", "gemma"]


def test_scopes_find_global_reads_only():
    code = textwrap.dedent(
        """
        def f(x, scale=DEFAULT):
            total = [v * FACTOR for v in x]
            return helper(total, key=kw).attr_name
        """
    )
    (reads,) = statement_reads(code, "x.py")
    assert reads.all == {"DEFAULT", "FACTOR", "helper", "kw"}  # not x, total, v, key, attr_name
    assert reads.eager == {"DEFAULT"}  # only the default runs at definition time


def test_rename_spares_imports_and_their_attributes():
    module = source(
        """
        import paddle.llama_ops as ops
        class LlamaLayer:
            prefix = "llama."
            rope = "llama3"
            def forward(self, x):
                return ops.llama_kernel(self.llama(x))
        """
    )
    renamer = Renamer(Prefix.from_model("llama"), Prefix.from_model("qwen2"))
    layer = next(u for u in module.units if u.names == ("LlamaLayer",))
    code = cst.Module([rename_node(layer.node, renamer, module.import_names)]).code
    assert "class Qwen2Layer" in code and '"qwen2."' in code and '"llama3"' in code
    assert "ops.llama_kernel(self.qwen2(x))" in code


def test_bind_follows_python_call_rules():
    parent = cst.ensure_type(cst.parse_statement("def f(self, a, b=2, *rest, c, **extra): pass"), cst.FunctionDef)
    child = cst.ensure_type(cst.parse_statement("def f(self, a): pass"), cst.FunctionDef)
    call = cst.ensure_type(cst.parse_expression("super().f(a, 5, 6, c=7, d=8)"), cst.Call)
    binding = supercall.bind(call, parent, child, ValueError)
    code = {name: cst.Module([]).code_for_node(value) for name, value in binding.values.items()}
    assert code == {"a": "a", "b": "5", "rest": "(6,)", "c": "7", "extra": '{"d": 8}'}


def test_order_puts_definitions_before_module_level_use():
    def unit(uid, name, eager, key):
        return OutUnit((name,), cst.parse_statement(f"{name} = 1"), frozenset(eager), frozenset(eager), key, uid=uid)

    base, child, late = (
        unit(1, "Base", [], (0, 5, 0)),
        unit(2, "Child", ["Base"], (0, 1, 0)),
        unit(3, "X", [], (0, 9, 0)),
    )
    assert [u.names[0] for u in order([late, child, base])] == ["Base", "Child", "X"]


def test_header_hash_detects_hand_edits():
    text = with_header("x = 1\n", ["modular/a/modular_a.py"])
    assert not is_hand_edited(text)
    assert is_hand_edited(text.replace("x = 1", "x = 2"))
    assert is_hand_edited("x = 1\n")  # no header at all


def test_rename_reaches_comments_and_docstrings_of_inherited_code():
    module = source(
        '''
        class LlamaModel:
            """The bare Llama decoder."""

            # LlamaForCausalLM adds the head.
            def forward(self, x):
                return x
        '''
    )
    renamer = Renamer(Prefix.from_model("llama"), Prefix.from_model("qwen2"))
    (unit,) = module.units
    code = cst.Module([rename_node(unit.node, renamer, (), unit.text, unit.members)]).code
    assert '"""The bare Qwen2 decoder."""' in code and "# Qwen2ForCausalLM adds the head." in code


def test_each_class_goes_to_the_file_of_its_kind(tmp_path):
    """HF layout: a parent's configuration, modeling and processing modules; the child's classes land in files
    of their kinds, configuration first, and later files import its classes instead of repeating them."""
    from modbuild.convert import convert_file
    from modbuild.layout import detect

    files = {
        "llama/configuration_llama.py": "class LlamaConfig:\n    size = 2\n",
        "llama/modeling_llama.py": (
            "from .configuration_llama import LlamaConfig\n\n\n"
            "def helper():\n    return 1\n\n\n"
            "class LlamaModel:\n    config_class = LlamaConfig\n\n    def f(self):\n        return helper()\n"
        ),
        "llama/processing_llama.py": "def helper():\n    return 2\n\n\nclass LlamaProcessor:\n    def f(self):\n        return helper()\n",
        "qwen2/modular_qwen2.py": (
            "from ..llama.configuration_llama import LlamaConfig\n"
            "from ..llama.modeling_llama import LlamaModel\n"
            "from ..llama.processing_llama import LlamaProcessor\n\n\n"
            "class Qwen2Config(LlamaConfig):\n    size = 3\n\n\n"
            "class Qwen2Model(LlamaModel):\n    pass\n\n\n"
            "class Qwen2Processor(LlamaProcessor):\n    pass\n"
        ),
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    layout = detect(tmp_path)
    assert layout.style == "hf"
    outputs = {path.name: text for path, text in convert_file(tmp_path / "qwen2/modular_qwen2.py", layout).items()}
    assert list(outputs) == ["configuration_qwen2.py", "processing_qwen2.py", "modeling_qwen2.py"]
    assert "class Qwen2Config" in outputs["configuration_qwen2.py"]
    assert "from .configuration_qwen2 import Qwen2Config" in outputs["modeling_qwen2.py"]
    assert "class Qwen2Config" not in outputs["modeling_qwen2.py"]
    # each file takes `helper` from the parent's module of its own kind
    assert "return 1" in outputs["modeling_qwen2.py"] and "return 2" in outputs["processing_qwen2.py"]
