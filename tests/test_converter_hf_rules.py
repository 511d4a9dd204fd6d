"""HF dialect rules read off HF's own corpus (bench/hf_corpus.py): each test fails on the converter without its rule."""

import textwrap
from pathlib import Path

import pytest

from modbuild.convert import ConvertError, convert_file
from modbuild.graph import discover
from modbuild.layout import Layout, detect

PARENT = """
import functools


def can_return_tuple(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return ("tuple", fn(*args, **kwargs))

    return wrapper


def deprecate_kwarg(old, version, new_name):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                kwargs[new_name] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


class LlamaModel:
    @can_return_tuple
    @deprecate_kwarg("past", "5.40.0", new_name="cache")
    def forward(self, x, cache=None):
        return x


class LlamaHead:
    @can_return_tuple
    def forward(self, x, cache=None):
        return x
"""

CHILD = """
from generated.llama.modeling_llama import LlamaHead, LlamaModel, deprecate_kwarg


class Qwen2Model(LlamaModel):
    @deprecate_kwarg("past", "5.40.0", new_name="cache")
    def forward(self, x, cache=None):
        return (x, cache)


class Qwen2Head(LlamaHead):
    @staticmethod
    def forward(x, cache=None):
        return (x, cache)
"""


def convert(tmp_path: Path, child: str, parent: str = PARENT) -> str:
    (tmp_path / "generated" / "llama").mkdir(parents=True, exist_ok=True)
    (tmp_path / "generated" / "llama" / "modeling_llama.py").write_text(textwrap.dedent(parent))
    path = tmp_path / "modular" / "qwen2" / "modular_qwen2.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(child))
    outputs = convert_file(path, Layout(tmp_path / "modular", tmp_path / "generated"))
    return outputs[tmp_path / "generated/qwen2/modeling_qwen2.py"]


def test_a_child_deprecation_decorator_keeps_the_parents_other_decorators(tmp_path):
    # HF 5.x (aria, gemma2, qwen3_vl, ... 81 methods): a child whose only decorators are `@deprecate_kwarg(...)` keeps
    # the parent's others above them (`@can_return_tuple @auto_docstring`); the parent's identical deprecation is
    # not repeated. Any other child decorator replaces the list (HF 4.x and 5.x: starcoder2, gemma3n)
    text = convert(tmp_path, CHILD)
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102
    assert namespace["Qwen2Model"]().forward(1, past=2) == ("tuple", (1, 2))  # was (1, 2): can_return_tuple lost
    assert text.count('@deprecate_kwarg("past", "5.40.0", new_name="cache")') == 1
    assert namespace["Qwen2Head"]().forward(1) == (1, None)  # a child's @staticmethod: the parent's list is replaced


def test_a_deprecation_decorator_of_another_name_does_not_keep_the_parents(tmp_path):
    child = CHILD.replace("deprecate_kwarg(", "renamed_kwarg(").replace(
        "import LlamaHead, LlamaModel, deprecate_kwarg",
        "import LlamaHead, LlamaModel\nfrom tools import renamed_kwarg",
    )
    text = convert(tmp_path, child)
    assert "@can_return_tuple" not in text.split("class Qwen2Model")[1].split("class Qwen2Head")[0]


def hf_tree(tmp_path: Path, header: str = "") -> Path:
    """transformers/models/{llama,ijepa}: ijepa's configuration_ijepa.py beside its modular file, written by hand
    (or generated from the modular file, with `header`), imported by its absolute name as HF 4.x ijepa does."""
    models = tmp_path / "transformers" / "models"
    (models / "llama").mkdir(parents=True)
    (models / "ijepa").mkdir()
    for init in (models.parent, models, models / "llama", models / "ijepa"):
        (init / "__init__.py").write_text("")
    (models / "llama" / "modeling_llama.py").write_text(
        "class LlamaModel:\n    def __init__(self, config):\n        self.config = config\n"
    )
    (models / "ijepa" / "configuration_ijepa.py").write_text(f"{header}class IJepaConfig:\n    size = 2\n")
    modular = models / "ijepa" / "modular_ijepa.py"
    modular.write_text(
        "from transformers.models.ijepa.configuration_ijepa import IJepaConfig\n\n"
        "from ..llama.modeling_llama import LlamaModel\n\n\n"
        "class IJepaModel(LlamaModel):\n    def size(self, config: IJepaConfig):\n        return config.size\n"
    )
    return modular


def test_an_absolute_import_of_the_models_own_hand_written_module_is_kept_relative(tmp_path):
    # HF 4.55 ijepa was refused as "imports its own generated code": its configuration_ijepa.py is hand-written
    modular = hf_tree(tmp_path)
    layout = detect(tmp_path / "transformers" / "models")
    assert discover(layout)["ijepa"].error is None
    text = convert_file(modular, layout)[modular.parent / "modeling_ijepa.py"]
    assert "from .configuration_ijepa import IJepaConfig" in text and "transformers.models.ijepa" not in text


def test_an_absolute_import_of_the_models_own_generated_module_is_still_an_error(tmp_path):
    modular = hf_tree(tmp_path, "# This file was automatically generated from models/ijepa/modular_ijepa.py.\n")
    layout = detect(tmp_path / "transformers" / "models")
    assert "imports its own generated code" in discover(layout, strict=False)["ijepa"].error
    with pytest.raises(ConvertError, match=r"modular_ijepa.py:1: model 'ijepa' imports its own generated code"):
        convert_file(modular, layout)


LAYERS = """
class LlamaRMSNorm:
    eps = 1e-6


class LlamaLayer:
    def __init__(self):
        self.norm = LlamaRMSNorm()


class LlamaModel:
    def __init__(self):
        self.layer = LlamaLayer()
"""


def test_a_parents_names_take_the_prefix_most_child_classes_give_them(tmp_path):
    # HF (aria, apertus1p5, granite_docling, ...): `class Qwen2TextModel(LlamaModel)` and
    # `class Qwen2TextLayer(LlamaLayer)`: what they pull in from llama is named `Qwen2Text...` (was `Qwen2RMSNorm`)
    child = (
        "from generated.llama.modeling_llama import LlamaLayer, LlamaModel\n\n\n"
        "class Qwen2TextLayer(LlamaLayer):\n    pass\n\n\nclass Qwen2TextModel(LlamaModel):\n    pass\n"
    )
    text = convert(tmp_path, child, LAYERS)
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102
    assert type(namespace["Qwen2TextModel"]().layer.norm).__name__ == "Qwen2TextRMSNorm"
    assert "Qwen2RMSNorm" not in text


def test_the_models_prefix_stays_on_a_tie_or_a_collision(tmp_path):
    # a tie with the model's own prefix keeps it; so does a prefix whose parent spelling names a parent class
    tie = (
        "from generated.llama.modeling_llama import LlamaLayer, LlamaModel\n\n\n"
        "class Qwen2Layer(LlamaLayer):\n    pass\n\n\nclass Qwen2TextModel(LlamaModel):\n    pass\n"
    )
    assert "class Qwen2RMSNorm" in convert(tmp_path / "tie", tie, LAYERS)
    collision = LAYERS + "\n\nclass LlamaTextEncoder:\n    pass\n"
    only = "from generated.llama.modeling_llama import LlamaModel\n\n\nclass Qwen2TextModel(LlamaModel):\n    pass\n"
    assert "class Qwen2RMSNorm" in convert(tmp_path / "collision", only, collision)


KERNELS = """
def use_kernel_func_from_hub_with_fallback(name, package):
    return lambda fn: fn


@use_kernel_func_from_hub_with_fallback("scan_fn", "llama_ssm")
def llama_scan(x):
    return x + 1


class LlamaMixer:
    def forward(self, x):
        return llama_scan(x)
"""


def test_a_hub_kernel_function_keeps_its_name(tmp_path):
    # HF 5.x (bamba, jamba, zamba2, ...): `mamba2_chunk_scan` stays `mamba2_chunk_scan` in bamba: a function
    # decorated as a hub kernel is not renamed, where it is defined, used or imported by the child
    child = (
        "from generated.llama.modeling_llama import LlamaMixer, llama_scan\n\n\n"
        "class Qwen2Mixer(LlamaMixer):\n    def twice(self, x):\n        return llama_scan(llama_scan(x))\n"
    )
    text = convert(tmp_path, child, KERNELS)
    assert "def llama_scan(" in text and "qwen2_scan" not in text
    assert '@use_kernel_func_from_hub_with_fallback("scan_fn", "llama_ssm")' in text  # its registration, as written
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102
    assert (namespace["Qwen2Mixer"]().forward(1), namespace["Qwen2Mixer"]().twice(1)) == (2, 3)


def test_an_extra_base_takes_the_place_of_the_parents_base_it_shares_a_suffix_with(tmp_path):
    # HF (cohere_compass, cosmos3_edge, qwen3_vl, ...): `class Qwen2TextModel(LlamaModel, Qwen2PreTrainedModel)`
    # puts Qwen2PreTrainedModel where LlamaModel's renamed base `Qwen2TextPreTrainedModel` was, not beside it
    parent = "class LlamaPreTrainedModel:\n    tag = 'llama'\n\n\n" + LAYERS.replace(
        "class LlamaModel:", "class LlamaModel(LlamaPreTrainedModel):"
    )
    child = (
        "from generated.llama.modeling_llama import LlamaLayer, LlamaModel\n\n\n"
        "class Qwen2PreTrainedModel:\n    tag = 'qwen2'\n\n\n"
        "class Qwen2TextLayer(LlamaLayer):\n    pass\n\n\nclass Qwen2TextModel(LlamaModel, Qwen2PreTrainedModel):\n    pass\n"
    )
    text = convert(tmp_path, child, parent)
    assert "class Qwen2TextModel(Qwen2PreTrainedModel):" in text
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102
    assert namespace["Qwen2TextModel"]().tag == "qwen2"


def convert_files(tmp_path: Path, child: str, parents: dict[str, str]) -> dict[str, str]:
    """{output file name: text} for a child of llama whose modules are `parents` ({file name: source})."""
    for name, source in parents.items():
        (tmp_path / "generated" / "llama").mkdir(parents=True, exist_ok=True)
        (tmp_path / "generated" / "llama" / name).write_text(textwrap.dedent(source))
    path = tmp_path / "modular" / "qwen2" / "modular_qwen2.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(child))
    outputs = convert_file(path, Layout(tmp_path / "modular", tmp_path / "generated"))
    return {out.name: text for out, text in outputs.items()}


def test_the_pil_image_processor_file_repeats_what_it_shares_with_the_torch_one(tmp_path):
    # HF 5.x (llava_onevision, rt_detr, lightglue, ...): `Qwen2ImageProcessorKwargs` is written into both
    # image_processing files; the PIL backend's file does not import the torch one (it was imported from it)
    parents = {
        "image_processing_llama.py": "class LlamaImageProcessorKwargs(dict):\n    size = 1\n\n\n"
        "class LlamaImageProcessor:\n    valid_kwargs = LlamaImageProcessorKwargs\n",
        "image_processing_pil_llama.py": "from .image_processing_llama import LlamaImageProcessorKwargs\n\n\n"
        "class LlamaImageProcessorPil:\n    valid_kwargs = LlamaImageProcessorKwargs\n",
    }
    child = (
        "from generated.llama.image_processing_llama import LlamaImageProcessor, LlamaImageProcessorKwargs\n"
        "from generated.llama.image_processing_pil_llama import LlamaImageProcessorPil\n\n\n"
        "class Qwen2ImageProcessorKwargs(LlamaImageProcessorKwargs):\n    size = 2\n\n\n"
        "class Qwen2ImageProcessor(LlamaImageProcessor):\n    pass\n\n\n"
        "class Qwen2ImageProcessorPil(LlamaImageProcessorPil):\n    pass\n"
    )
    files = convert_files(tmp_path, child, parents)
    pil, torch_file = files["image_processing_pil_qwen2.py"], files["image_processing_qwen2.py"]
    assert "class Qwen2ImageProcessorKwargs(dict)" in pil and "class Qwen2ImageProcessorKwargs(dict)" in torch_file
    assert "from .image_processing_qwen2" not in pil


def test_video_processor_kwargs_go_to_the_video_processing_file(tmp_path):
    # HF 5.x (molmo2, minicpm_ocr, embedding_gemma2, ...): `XVideoProcessorKwargs` beside the video processor
    # that reads them (it went to processing, and video_processing imported it from there)
    parents = {"video_processing_llama.py": "class LlamaVideoProcessor:\n    fps = 1\n"}
    child = (
        "from generated.llama.video_processing_llama import LlamaVideoProcessor\n\n\n"
        "class Qwen2VideoProcessorKwargs(dict):\n    fps = 2\n\n\n"
        "class Qwen2VideoProcessor(LlamaVideoProcessor):\n    valid_kwargs = Qwen2VideoProcessorKwargs\n"
    )
    files = convert_files(tmp_path, child, parents)
    assert list(files) == ["video_processing_qwen2.py"]
    assert "class Qwen2VideoProcessorKwargs(dict)" in files["video_processing_qwen2.py"]


def test_a_class_under_another_name_has_its_own_name_in_the_inherited_strings(tmp_path):
    # HF (4.55 aria): `class Qwen2PreTrainedModel(LlamaPreTrainedModel)` in a child whose llama names take the
    # prefix Qwen2Text: the inherited `_no_split_modules = ["Qwen2TextLayer"]` reads "Qwen2Layer" (the class's own
    # prefix), as HF renames strings and comments of a class flattened under a name its parent's does not give
    parent = "class LlamaPreTrainedModel:\n    _no_split_modules = ['LlamaLayer']  # LlamaLayer blocks\n\n\n" + LAYERS
    child = (
        "from generated.llama.modeling_llama import LlamaLayer, LlamaModel, LlamaPreTrainedModel\n\n\n"
        "class Qwen2PreTrainedModel(LlamaPreTrainedModel):\n    pass\n\n\n"
        "class Qwen2TextLayer(LlamaLayer):\n    pass\n\n\nclass Qwen2TextModel(LlamaModel):\n    pass\n"
    )
    text = convert(tmp_path, child, parent)
    assert '_no_split_modules = ["Qwen2Layer"]  # Qwen2Layer blocks' in text


BLOCKS = """
from torch import nn

from tools import GradientCheckpointingLayer, ProcessorMixin


class LlamaBlock(nn.Module):
    pass


class LlamaLayer(GradientCheckpointingLayer):
    pass


class LlamaFeatures(ProcessorMixin):
    pass
"""


def test_gradient_checkpointing_layer_stands_for_nn_module_among_the_bases(tmp_path):
    # HF 5.x (sam2, glm4_moe_lite and their children): a child's GradientCheckpointingLayer takes the place of the
    # parent's nn.Module, a child's nn.Module beside the parent's GradientCheckpointingLayer goes; and a child's
    # base that ends with the parent's base's name (`OmniProcessorMixin`) takes its place (embedding_gemma2)
    child = (
        "from torch import nn\n\nfrom generated.llama.modeling_llama import LlamaBlock, LlamaFeatures, LlamaLayer\n"
        "from tools import GradientCheckpointingLayer, OmniProcessorMixin\n\n\n"
        "class Qwen2Block(LlamaBlock, GradientCheckpointingLayer):\n    pass\n\n\n"
        "class Qwen2Layer(LlamaLayer, nn.Module):\n    pass\n\n\n"
        "class Qwen2Features(OmniProcessorMixin, LlamaFeatures):\n    pass\n"
    )
    text = convert(tmp_path, child, BLOCKS)
    assert "class Qwen2Block(GradientCheckpointingLayer):" in text
    assert "class Qwen2Layer(GradientCheckpointingLayer):" in text
    assert "class Qwen2Features(OmniProcessorMixin):" in text


REMOVABLE = """
class LlamaLayer:
    def forward(self, x):
        return x

    def pack(self, x):
        return [x]

    def legacy(self, x):
        return -x

    def mask(self, x):
        return 0
"""


def test_a_method_is_a_removal_marker_as_hf_reads_one(tmp_path):
    # HF's pattern on the method's source: `def` on one line after one blank line, `raise ...Error(` first in its
    # body. HF 5.x jamba, deformable_detr: `raise NotImplementedError(...)` removes the parent's method (it was kept);
    # moonshine, deepseek_vl: a docstring before the raise, or the class's first line right above the `def`, make
    # it a member as written (it was removed)
    child = (
        "from generated.llama.modeling_llama import LlamaLayer\n\n\n"
        "class Qwen2Layer(LlamaLayer):\n"
        "    def forward(self, x):\n        raise AttributeError('first in the class: a member')\n\n"
        "    def pack(self, x) -> list:\n        raise NotImplementedError('No need to inherit')\n\n"
        "    def legacy(self, x):\n        '''Documented.'''\n        raise AttributeError('a member')\n\n"
        "    def mask(self, x):\n        raise AttributeError('removed')\n"
    )
    text = convert(tmp_path, child, REMOVABLE)
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102
    members = vars(namespace["Qwen2Layer"])
    assert "forward" in members and "legacy" in members
    assert "pack" not in members and "mask" not in members


def test_a_call_through_a_base_the_flattened_class_keeps_is_super(tmp_path):
    # HF (gemma2 and its children, deepseek_v3, aimv2, ...): `nn.Module.__init__()` for the base the flattened class
    # takes from its parent is `super().__init__()`; so is `nn.Module.__init__(self)` in a GradientCheckpointingLayer
    # and `PreTrainedModel.__init__(self, config)` in a class based on a `...PreTrainedModel` (all were kept)
    parent = (
        "from torch import nn\n\nfrom tools import GradientCheckpointingLayer, PreTrainedModel\n\n\n"
        "class LlamaRotary(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n\n"
        "class LlamaLayer(GradientCheckpointingLayer):\n    def __init__(self):\n        super().__init__()\n\n\n"
        "class LlamaPreTrainedModel(PreTrainedModel):\n    pass\n\n\n"
        "class LlamaModel(LlamaPreTrainedModel):\n    def __init__(self, config):\n        super().__init__(config)\n"
    )
    child = (
        "from torch import nn\n\nfrom generated.llama.modeling_llama import LlamaLayer, LlamaModel, LlamaRotary\n"
        "from tools import PreTrainedModel\n\n\n"
        "class Qwen2Rotary(LlamaRotary):\n    def __init__(self):\n        nn.Module.__init__()\n        self.a = 1\n\n\n"
        "class Qwen2Layer(LlamaLayer):\n    def __init__(self):\n        nn.Module.__init__(self)\n        self.b = 2\n\n\n"
        "class Qwen2Model(LlamaModel):\n    def __init__(self, config):\n"
        "        PreTrainedModel.__init__(self, config)\n        self.c = 3\n"
    )
    text = convert(tmp_path, child, parent)
    assert "nn.Module.__init__" not in text and "PreTrainedModel.__init__" not in text
    assert text.count("super().__init__()") == 2 and "super().__init__(config)" in text


def versioned_tree(tmp_path: Path, version: str) -> Path:
    """transformers/models/{llama,qwen2} of a transformers `version`; llama's processor binds a token before its
    base's `__init__`, qwen2's subclasses it and calls `super().__init__(...)`."""
    models = tmp_path / "transformers" / "models"
    for model in ("llama", "qwen2"):
        (models / model).mkdir(parents=True)
        (models / model / "__init__.py").write_text("")
    (models / "__init__.py").write_text("")
    (models.parent / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (models / "llama" / "processing_llama.py").write_text(
        "class ProcessorMixin:\n    def __init__(self, tokenizer):\n        self.tokenizer = tokenizer\n\n\n"
        "class LlamaProcessor(ProcessorMixin):\n    def __init__(self, tokenizer):\n"
        "        self.image_token = '<image>'\n        super().__init__(tokenizer)\n"
    )
    modular = models / "qwen2" / "modular_qwen2.py"
    modular.write_text(
        "from ..llama.processing_llama import LlamaProcessor\n\n\n"
        "class Qwen2Processor(LlamaProcessor):\n    def __init__(self, tokenizer):\n"
        "        super().__init__(tokenizer)\n        self.video_token = '<video>'\n"
    )
    return modular


@pytest.mark.parametrize(("version", "stays"), [("5.24.0", True), ("4.57.3", True), ("4.55.4", False)])
def test_the_base_init_call_keeps_the_parents_place_from_hf_4_56(tmp_path, version, stays):
    # HF 5.x processors (qwen3_vl, glm4v, colpali, ...): a parent that binds `self.image_token` before calling its
    # base's `__init__` keeps that order in the flattened `__init__` (HF's converter from 4.56 on; 4.55's moved
    # the call first, as modbuild did for every tree)
    modular = versioned_tree(tmp_path, version)
    text = convert_file(modular, detect(modular.parent.parent))[modular.parent / "processing_qwen2.py"]
    body = text.split("class Qwen2Processor")[1]
    assert (body.index("self.image_token") < body.index("super().__init__(tokenizer)")) is stays


def test_f_string_text_is_not_renamed(tmp_path):
    # HF renames plain strings and comments, not the text of f-strings (5.x altclip, chinese_clip, clipseg,
    # metaclip_2: `f"... initialize `CLIPTextConfig` ..."` stays); the names inside `{...}` are code, renamed
    parent = (
        "class LlamaConfig:\n    def warn(self, key):\n"
        "        return f'`LlamaConfig` overrides {key}: {LlamaConfig.__name__}', 'the LlamaConfig'\n"
    )
    child = "from generated.llama.modeling_llama import LlamaConfig\n\n\nclass Qwen2Config(LlamaConfig):\n    pass\n"
    (tmp_path / "generated" / "llama").mkdir(parents=True)
    (tmp_path / "generated" / "llama" / "configuration_llama.py").write_text(parent)
    text = convert_files(tmp_path, child.replace("modeling_llama", "configuration_llama"), {})
    body = text["configuration_qwen2.py"]
    assert 'f"`LlamaConfig` overrides {key}: {Qwen2Config.__name__}"' in body and '"the Qwen2Config"' in body
