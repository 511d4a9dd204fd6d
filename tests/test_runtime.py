"""load_modular, the runtime oracle: small pure-Python model families written into tmp_path."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from modbuild.runtime import ModularError, load_modular


def write_tree(root: Path, files: dict[str, str]) -> None:
    """Write files (dedented); every generated/<m>/ directory becomes a package."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        if rel.startswith("generated/"):
            for package in (root / "generated", path.parent):
                (package / "__init__.py").touch()


def load(root: Path, model: str):
    return load_modular(root / "modular" / model / f"modular_{model}.py")


LLAMA = """
    import math
    from functools import wraps

    try:
        from fastops_that_do_not_exist import fused_rope
    except ImportError:
        fused_rope = None

    from .configuration_llama import LlamaConfig

    LLAMA_PREFIX = "llama."
    ROPE_TYPES = ("default", "llama3")
    _NO_SPLIT = ["LlamaDecoderLayer"]


    def traced(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            return ("traced", fn(*args, **kwargs))

        return wrapper


    def rotate_half(x):
        return ("llama-rotate", x)


    class Llama3RotaryEmbedding:
        rope_type = "llama3"


    class LlamaRotaryEmbedding:
        def __init__(self, config):
            self.base = config.rope_theta


    class LlamaAttention:
        def __init__(self, config, layer_idx=0):
            self.layer_idx = layer_idx
            self.rotary_emb = LlamaRotaryEmbedding(config)
            self.rope3 = Llama3RotaryEmbedding()
            self.scale = math.sqrt(4)

        def forward(self, x):
            return ["LlamaAttention.forward", rotate_half(x)]


    class LlamaDecoderLayer:
        def __init__(self, config, layer_idx):
            self.self_attn = LlamaAttention(config, layer_idx)

        def forward(self, x):
            return self.self_attn.forward(x)


    class LlamaPretrainedModel:
        config_class = LlamaConfig
        base_model_prefix = "llama"
        _keys_to_ignore = {"llama.rotary_emb": "LlamaModel"}

        def is_llama(self, config):
            return "LlamaForCausalLM" in config.architectures


    class LlamaModel(LlamaPretrainedModel):
        def __init__(self, config):
            self.config = config
            self.layers = [LlamaDecoderLayer(config, i) for i in range(config.num_layers)]

        @property
        def layer(self):
            return self.layers[0]

        def prefixed(self, key):
            return LLAMA_PREFIX + key

        @traced
        def forward(self, x):
            return [layer.forward(x) for layer in self.layers]


    LlamaPretrainedModel.base_model_class = LlamaModel


    class LlamaForCausalLM(LlamaPretrainedModel):
        def __init__(self, config, llama_scale=1):
            self.llama = LlamaModel(config)
            self.scale = llama_scale

        @classmethod
        def build(cls, config):
            return cls(config, llama_scale=3)
"""

LLAMA_CONFIG = """
    class LlamaConfig:
        model_type = "llama"

        def __init__(self, num_layers=2, rope_theta=10000.0):
            self.num_layers = num_layers
            self.rope_theta = rope_theta
            self.architectures = ["LlamaForCausalLM"]
"""

QWEN2 = """
    from generated.llama.configuration_llama import LlamaConfig
    from generated.llama.modeling_llama import LlamaAttention, LlamaForCausalLM, LlamaModel


    class Qwen2Config(LlamaConfig):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.rope_theta = 1e6


    def rotate_half(x):
        return ("qwen2-rotate", x)


    class Qwen2Attention(LlamaAttention):
        def forward(self, x):
            return ["Qwen2Attention.forward"] + super().forward(x)


    class Qwen2Model(LlamaModel):
        pass


    class Qwen2ForCausalLM(LlamaForCausalLM):
        pass
"""


@pytest.fixture
def qwen2(tmp_path):
    write_tree(
        tmp_path,
        {
            "generated/llama/modeling_llama.py": LLAMA,
            "generated/llama/configuration_llama.py": LLAMA_CONFIG,
            "modular/qwen2/modular_qwen2.py": QWEN2,
        },
    )
    return load(tmp_path, "qwen2")


def test_child_classes_are_used_by_inherited_code(qwen2):
    model = qwen2.Qwen2Model(qwen2.Qwen2Config())
    assert type(model.layer) is qwen2.Qwen2DecoderLayer  # the renamed clone of LlamaDecoderLayer
    assert type(model.layer.self_attn) is qwen2.Qwen2Attention  # ... builds the child's attention
    assert qwen2.Qwen2Attention.__module__ == "modular_qwen2"
    assert qwen2.Qwen2DecoderLayer.__qualname__ == "Qwen2DecoderLayer"
    # Child method with super() -> cloned parent method -> the child's module-level rotate_half.
    out = model.layer.forward(1)
    assert out == ["Qwen2Attention.forward", "Qwen2Attention.forward", ("qwen2-rotate", 1)]
    # A decorator's wrapper (functools.wraps) around a parent method is re-created around the clone.
    expected = ["Qwen2Attention.forward", "Qwen2Attention.forward", ("qwen2-rotate", 2)]
    assert model.forward(2) == ("traced", [expected, expected])
    assert qwen2.Qwen2Model.forward.__wrapped__.__qualname__ == "Qwen2Model.forward"
    assert type(qwen2.Qwen2ForCausalLM.build(qwen2.Qwen2Config()).qwen2) is qwen2.Qwen2Model


def test_child_wins_for_every_name_that_referred_to_the_parent(qwen2):
    assert qwen2.LlamaAttention is qwen2.Qwen2Attention  # the child's import alias is rebound
    assert qwen2.rotate_half(0) == ("qwen2-rotate", 0)
    assert qwen2.Qwen2PretrainedModel.config_class is qwen2.Qwen2Config  # from the parent's sibling config
    assert qwen2.Qwen2PretrainedModel.base_model_class is qwen2.Qwen2Model  # a module-level setattr in the parent
    assert qwen2.Qwen2Model.__mro__[1:3] == (qwen2.Qwen2Model.__bases__[0], qwen2.Qwen2PretrainedModel)
    assert qwen2.__all__ == ["Qwen2Config", "rotate_half", "Qwen2Attention", "Qwen2Model", "Qwen2ForCausalLM"]
    assert qwen2.Qwen2Config().rope_theta == 1e6
    assert qwen2.Qwen2Model(qwen2.Qwen2Config()).layer.self_attn.rotary_emb.base == 1e6


def test_strings_and_attributes_carry_the_renamed_prefix(qwen2):
    assert qwen2.Qwen2PretrainedModel.base_model_prefix == "qwen2"
    assert qwen2.Qwen2PretrainedModel._keys_to_ignore == {"qwen2.rotary_emb": "Qwen2Model"}
    assert qwen2.Qwen2Config.model_type == "qwen2"
    assert qwen2.QWEN2_PREFIX == "qwen2." and not hasattr(qwen2, "LLAMA_PREFIX")
    assert qwen2.Qwen2Model(qwen2.Qwen2Config()).prefixed("embed") == "qwen2.embed"
    assert qwen2._NO_SPLIT == ["Qwen2DecoderLayer"]
    config = qwen2.Qwen2Config()
    assert config.architectures == ["Qwen2ForCausalLM"]
    assert qwen2.Qwen2ForCausalLM(config).is_qwen2(config)
    # `self.llama = ...` in the parent's __init__ is `self.qwen2`; `llama_scale=` keywords are renamed with it.
    lm = qwen2.Qwen2ForCausalLM(config, qwen2_scale=2)
    assert type(lm.qwen2) is qwen2.Qwen2Model and not hasattr(lm, "llama") and lm.scale == 2


def test_digit_glued_prefixes_and_imports_are_not_renamed(qwen2):
    assert qwen2.ROPE_TYPES == ("default", "llama3")
    assert qwen2.Llama3RotaryEmbedding.rope_type == "llama3"
    assert not hasattr(qwen2, "Qwen23RotaryEmbedding")
    layer = qwen2.Qwen2Model(qwen2.Qwen2Config()).layer
    assert type(layer.self_attn.rope3) is qwen2.Llama3RotaryEmbedding
    assert qwen2.fused_rope is None  # bound in a try/except ImportError: an import, kept as is
    assert qwen2.math.sqrt(4) == layer.self_attn.scale


def test_the_parent_files_themselves_are_untouched(qwen2, tmp_path):
    # Another test may have imported this repository's own `generated` package: set it aside.
    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if n == "generated" or n.startswith("generated.")}
    sys.path.insert(0, str(tmp_path))
    try:
        spec = importlib.util.find_spec("generated.llama.modeling_llama")
        assert spec.origin == str(tmp_path / "generated/llama/modeling_llama.py")
        llama = importlib.import_module("generated.llama.modeling_llama")
        model = llama.LlamaModel(llama.LlamaConfig())
        assert type(model.layer.self_attn) is llama.LlamaAttention
        assert llama.LlamaPretrainedModel.base_model_prefix == "llama"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "generated" or n.startswith("generated.")]:
            del sys.modules[name]
        sys.modules.update(saved)


SUPER_PARENT = """
    class LlamaBase:
        def __init__(self):
            self.calls = ["base"]

        def forward(self, x):
            return x + 1


    class LlamaAttention(LlamaBase):
        scale = 2

        def __init__(self):
            super(LlamaAttention, self).__init__()
            self._size = 4

        def forward(self, x):
            return super(LlamaAttention, self).forward(x) * self.scale

        @classmethod
        def create(cls):
            return cls()

        @classmethod
        def kind(cls):
            return "llama_attention"

        @staticmethod
        def helper(x):
            return LlamaBase().forward(x)

        @property
        def size(self):
            return self._size

        @size.setter
        def size(self, value):
            self._size = value


    class LlamaMLP(LlamaBase):
        def forward(self, x):
            return super(LlamaMLP, self).forward(x) * 10
"""

SUPER_CHILD = """
    from __future__ import annotations

    from generated.llama.modeling_llama import LlamaAttention


    class Qwen2Attention(LlamaAttention):
        def forward(self, x):
            return super().forward(x) + 100

        @classmethod
        def kind(cls):
            return "child:" + super().kind()

        @staticmethod
        def helper(x):
            return -x

        def clone(self) -> Qwen2Attention:
            return type(self)()


    class Qwen2Sized(LlamaAttention):
        @property
        def size(self):
            return super().size * 10

        @size.setter
        def size(self, value):
            LlamaAttention.size.fset(self, value + 1)
"""


def test_two_argument_super_and_descriptors(tmp_path):
    write_tree(
        tmp_path, {"generated/llama/modeling_llama.py": SUPER_PARENT, "modular/qwen2/modular_qwen2.py": SUPER_CHILD}
    )
    mod = load(tmp_path, "qwen2")
    attn = mod.Qwen2Attention.create()
    assert type(attn) is mod.Qwen2Attention and attn.calls == ["base"]
    assert attn.forward(1) == (1 + 1) * 2 + 100  # super(Qwen2Attention, self) in the clone does not recurse
    assert mod.Qwen2MLP().forward(1) == 20  # two-argument super in a class the child does not override
    assert mod.Qwen2Attention.kind() == "child:qwen2_attention"
    assert mod.Qwen2Attention.helper(3) == -3
    assert mod.Qwen2Attention.clone.__annotations__ == {"return": "Qwen2Attention"}  # the child's __future__
    assert attn.size == 4  # inherited property and setter
    attn.size = 7
    assert attn.size == 7
    sized = mod.Qwen2Sized()
    assert sized.size == 40
    sized.size = 7
    assert sized._size == 8 and sized.size == 80
    # `LlamaAttention` means the child's Qwen2Attention once that is defined (as in the flattened file).
    assert mod.Qwen2Sized.__bases__ == (mod.Qwen2Attention,) and sized.forward(1) == 104
    assert mod.Qwen2Attention.__bases__[0].helper(3) == 4  # the clone's staticmethod


QWEN3 = """
    class Qwen3RMSNorm:
        source = "first parent file"


    class Qwen3MLP:
        def __init__(self):
            self.norm = Qwen3RMSNorm()


    class Qwen3Attention:
        origin = "first parent file"

        def __init__(self):
            self.q_norm = Qwen3RMSNorm()


    class Qwen3DecoderLayer:
        def __init__(self):
            self.self_attn = Qwen3Attention()
            self.mlp = Qwen3MLP()
"""

QWEN2_MOE = """
    class Qwen2MoeRMSNorm:
        source = "second parent file"


    class Qwen2MoeAttention:
        origin = "second parent file"


    class Qwen2MoeMLP:
        kind = "second parent file"


    class Qwen2MoeSparseMoeBlock:
        def __init__(self):
            self.experts = [Qwen2MoeMLP() for _ in range(2)]
            self.gate_name = "qwen2_moe.gate"
            self.norm = Qwen2MoeRMSNorm()


    class Qwen2MoeDecoderLayer:
        def __init__(self):
            self.self_attn = Qwen2MoeAttention()
            self.mlp = Qwen2MoeSparseMoeBlock()
"""

QWEN3_MOE = """
    from generated.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3DecoderLayer
    from ..qwen2_moe.modeling_qwen2_moe import Qwen2MoeMLP, Qwen2MoeSparseMoeBlock


    class Qwen3MoeAttention(Qwen3Attention):
        pass


    class Qwen3MoeSparseMoeBlock(Qwen2MoeSparseMoeBlock):
        pass


    class Qwen3MoeMLP(Qwen2MoeMLP):
        pass


    class Qwen3MoeDecoderLayer(Qwen3DecoderLayer):
        def __init__(self):
            super().__init__()
            self.mlp = Qwen3MoeSparseMoeBlock()
"""


def test_two_parents_with_first_parent_priority(tmp_path):
    write_tree(
        tmp_path,
        {
            "generated/qwen3/modeling_qwen3.py": QWEN3,
            "generated/qwen2_moe/modeling_qwen2_moe.py": QWEN2_MOE,
            "modular/qwen3_moe/modular_qwen3_moe.py": QWEN3_MOE,
        },
    )
    mod = load(tmp_path, "qwen3_moe")
    assert mod.Qwen3MoeRMSNorm.source == "first parent file"  # both parents define it: the first import wins
    assert mod.Qwen3MoeAttention.origin == "first parent file"
    assert not hasattr(mod, "Qwen3MoeMoeMLP") and not hasattr(mod, "Qwen2MoeRMSNorm")
    layer = mod.Qwen3MoeDecoderLayer()
    assert type(layer.self_attn) is mod.Qwen3MoeAttention
    assert type(layer.self_attn.q_norm) is mod.Qwen3MoeRMSNorm
    assert type(layer.mlp) is mod.Qwen3MoeSparseMoeBlock
    assert layer.mlp.gate_name == "qwen3_moe.gate"
    # qwen2_moe code finds qwen3's RMSNorm (first parent wins for the names it uses) ...
    assert type(layer.mlp.norm) is mod.Qwen3MoeRMSNorm and layer.mlp.norm.source == "first parent file"
    # ... but an explicit import means the named parent's definition, even though both rename to Qwen3MoeMLP.
    base = mod.Qwen3MoeMLP.__bases__[0]
    assert (
        base.__name__ == "Qwen3MoeMLP" and base.kind == "second parent file" and not hasattr(mod.Qwen3MoeMLP(), "norm")
    )
    assert mod.Qwen2MoeMLP is mod.Qwen3MoeMLP  # the alias, rebound to the child's class once it is defined
    assert all(type(e) is mod.Qwen3MoeMLP for e in layer.mlp.experts)
    assert type(mod.Qwen3MoeDecoderLayer.__mro__[1]().mlp) is mod.Qwen3MoeMLP  # qwen3's layer builds it too


CHAIN_LLAMA = """
    class LlamaAttention:
        bias = False

        def __init__(self):
            self.name = "llama.attn"


    class LlamaModel:
        base_model_prefix = "llama"

        def __init__(self):
            self.attn = LlamaAttention()
"""

CHAIN_QWEN2_MODULAR = """
    from generated.llama.modeling_llama import LlamaAttention, LlamaModel


    class Qwen2Attention(LlamaAttention):
        bias = True


    class Qwen2Model(LlamaModel):
        pass
"""

# What the converter would write for the modular file above, written by hand: standalone and renamed.
CHAIN_QWEN2_GENERATED = """
    class Qwen2Attention:
        bias = True

        def __init__(self):
            self.name = "qwen2.attn"


    class Qwen2Model:
        base_model_prefix = "qwen2"

        def __init__(self):
            self.attn = Qwen2Attention()
"""

CHAIN_QWEN3 = """
    from generated.qwen2 import modeling_qwen2


    class Qwen3Attention(modeling_qwen2.Qwen2Attention):
        def __init__(self):
            super().__init__()
            self.q_norm = "qwen3_norm"


    class Qwen3Model(modeling_qwen2.Qwen2Model):
        pass
"""


def test_three_level_chain_through_a_generated_file(tmp_path):
    write_tree(
        tmp_path,
        {
            "generated/llama/modeling_llama.py": CHAIN_LLAMA,
            "generated/qwen2/modeling_qwen2.py": CHAIN_QWEN2_GENERATED,
            "modular/qwen2/modular_qwen2.py": CHAIN_QWEN2_MODULAR,
            "modular/qwen3/modular_qwen3.py": CHAIN_QWEN3,
        },
    )
    qwen2 = load(tmp_path, "qwen2")  # the modular meaning agrees with the hand-written generated file
    attn = qwen2.Qwen2Model().attn
    assert (type(attn), attn.bias, attn.name) == (qwen2.Qwen2Attention, True, "qwen2.attn")
    assert qwen2.Qwen2Model.base_model_prefix == "qwen2"

    qwen3 = load(tmp_path, "qwen3")
    attn = qwen3.Qwen3Model().attn
    assert type(attn) is qwen3.Qwen3Attention
    assert (attn.bias, attn.name, attn.q_norm) == (True, "qwen3.attn", "qwen3_norm")
    assert qwen3.Qwen3Model.base_model_prefix == "qwen3"
    assert qwen3.modeling_qwen2.Qwen2Attention is qwen3.Qwen3Attention  # the module proxy reads G live
    with pytest.raises(AttributeError):
        _ = qwen3.modeling_qwen2.Missing


REMOVAL_PARENT = """
    class LlamaMLP:
        act = "silu"
        bias = False

        def __init__(self):
            self.up = 1
            self.down = 2

        def gate(self):
            return "gate"

        def extra(self):
            return "extra"
"""

REMOVAL_CHILD = """
    from generated.llama.modeling_llama import LlamaMLP


    class Qwen2MLP(LlamaMLP):
        bias = AttributeError()

        def __init__(self):
            super().__init__()
            del self.down

        def extra(self):
            "Not in Qwen2."
            raise AttributeError("removed")
"""


def test_attribute_removal(tmp_path):
    write_tree(
        tmp_path,
        {"generated/llama/modeling_llama.py": REMOVAL_PARENT, "modular/qwen2/modular_qwen2.py": REMOVAL_CHILD},
    )
    mod = load(tmp_path, "qwen2")
    mlp = mod.Qwen2MLP()
    assert not hasattr(mod.Qwen2MLP, "bias") and not hasattr(mlp, "bias")
    assert not hasattr(mod.Qwen2MLP, "extra") and not hasattr(mlp, "extra")
    assert not hasattr(mlp, "down") and mlp.up == 1
    assert mlp.gate() == "gate" and mlp.act == "silu"
    mlp.bias = True  # an instance attribute still works, as in the flattened class
    assert mlp.bias is True


AMBIGUOUS_CHILD = """
    from generated.llama.modeling_llama import LlamaMLP
    from generated.mistral.modeling_mistral import MistralMLP


    class QwenXMLP(LlamaMLP):
        pass


    class QwenTwoMLP(MistralMLP):
        pass
"""


def test_parents_must_agree_on_the_child_prefix(tmp_path):
    write_tree(
        tmp_path,
        {
            "generated/llama/modeling_llama.py": REMOVAL_PARENT,
            "generated/mistral/modeling_mistral.py": "class MistralMLP:\n    pass\n",
            "modular/qwen2/modular_qwen2.py": AMBIGUOUS_CHILD,
        },
    )
    with pytest.raises(ModularError, match="ambiguous prefix"):
        load(tmp_path, "qwen2")


@pytest.mark.parametrize(
    ("child", "line", "message"),
    [
        ("x = 1\nclass Broken(:\n    pass\n", 2, "syntax error"),
        ("import os\nfrom generated.llama.modeling_llama import LlamaNope\n", 2, "cannot import name 'LlamaNope'"),
        ("\n\nfrom generated.mistral.modeling_mistral import MistralMLP\n", 3, "no generated module"),
        ("def f():\n    from generated.llama.modeling_llama import LlamaMLP\n", 2, "module level"),
    ],
)
def test_errors_name_path_and_line(tmp_path, child, line, message):
    write_tree(tmp_path, {"generated/llama/modeling_llama.py": REMOVAL_PARENT})
    path = tmp_path / "modular/qwen2/modular_qwen2.py"
    path.parent.mkdir(parents=True)
    path.write_text(child)
    with pytest.raises(ModularError) as info:
        load_modular(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message in str(info.value)
    assert isinstance(info.value, ImportError) and isinstance(info.value, ValueError)


BASES_PARENT = """
    from dataclasses import dataclass


    @dataclass
    class LlamaOutput:
        logits: object = None
        kind: str = "llama"


    class LlamaPretrainedModel:
        base_model_prefix = "llama"

        def init_weights(self):
            return "parent-init"


    class LlamaAttention:
        pass


    class LlamaSdpaAttention(LlamaAttention):
        pass


    LLAMA_ATTENTION_CLASSES = {"eager": LlamaAttention, "sdpa": LlamaSdpaAttention}


    class LlamaModel(LlamaPretrainedModel):
        def __init__(self, impl="eager"):
            super().__init__()
            self.attn = LLAMA_ATTENTION_CLASSES[impl]()

        def forward(self):
            return LlamaOutput(logits=self.init_weights())


    class LlamaForCausalLM(LlamaPretrainedModel):
        def __init__(self):
            self.llama = LlamaModel()
"""

BASES_CONFIG = """
    from generated.llama.modeling_llama import LlamaPretrainedModel


    class Qwen2Config:
        model_type = "qwen2"
"""

BASES_CHILD = """
    import generated.llama.modeling_llama as modeling_llama
    from .configuration_qwen2 import Qwen2Config


    class Qwen2PretrainedModel(modeling_llama.LlamaPretrainedModel):
        config_class = Qwen2Config

        def init_weights(self):
            return "qwen2-init:" + super().init_weights()


    class Qwen2Attention(modeling_llama.LlamaAttention):
        pass
"""


def test_child_base_classes_containers_and_dataclasses(tmp_path):
    write_tree(
        tmp_path,
        {
            "generated/llama/modeling_llama.py": BASES_PARENT,
            "modular/qwen2/configuration_qwen2.py": BASES_CONFIG,
            "modular/qwen2/modular_qwen2.py": BASES_CHILD,
        },
    )
    mod = load(tmp_path, "qwen2")
    # The clones that subclassed the parent's Qwen2PretrainedModel now subclass the child's.
    assert (
        mod.Qwen2PretrainedModel in mod.Qwen2Model.__mro__ and mod.Qwen2PretrainedModel in mod.Qwen2ForCausalLM.__mro__
    )
    assert mod.Qwen2Model.config_class is mod.Qwen2Config and mod.Qwen2Model.base_model_prefix == "qwen2"
    # A parent's module-level dict of classes holds the child's class once the child defines it.
    assert mod.QWEN2_ATTENTION_CLASSES["eager"] is mod.Qwen2Attention
    assert issubclass(mod.Qwen2SdpaAttention, mod.Qwen2Attention)  # rebased onto the child's class
    assert type(mod.Qwen2ForCausalLM().qwen2.attn) is mod.Qwen2Attention
    assert type(mod.Qwen2Model("sdpa").attn) is mod.Qwen2SdpaAttention
    # A parent dataclass: regenerated on the clone, so its defaults are renamed too.
    out = mod.Qwen2Model().forward()
    assert type(out) is mod.Qwen2Output and out == mod.Qwen2Output("qwen2-init:parent-init", "qwen2")
    assert repr(out).startswith("Qwen2Output(")
    assert mod.Qwen2Config.model_type == "qwen2"
