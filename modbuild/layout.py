"""Where a tree keeps its modular files, its models' modules, and how one model imports another.

Three layouts, detected from the tree (`detect`):

- ``repo``: this repository. `modular/<m>/modular_<m>.py` -> `generated/<m>/modeling_<m>.py`; parents
  imported as `generated.<p>.modeling_<p>` or `..<p>.modeling_<p>`.
- ``hf``: HF transformers. `models/<m>/modular_<m>.py` -> `models/<m>/<kind>_<m>.py` beside it.
- ``paddlenlp``: PaddleNLP / PaddleFormers. `<m>/modular_<m>.py` -> `<m>/modeling.py`,
  `<m>/configuration.py`, `<m>/tokenizer.py` beside it.

A module *kind* is named as HF names it (`modeling`, `configuration`, `tokenization`,
`image_processing_fast`, ...); the layout spells the file. Modules of another model that are no kind
(`fusion_ops`, `..auto`, utilities) are plain imports, never flattened. This module is free of libcst:
the doit graph reads it on every run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Model-code kinds, each with the class-name suffixes whose classes it holds (HF's rule, longest first).
KINDS = (
    "configuration",
    "tokenization",
    "tokenization_fast",
    "processing",
    "image_processing",
    "image_processing_fast",
    "image_processing_pil",
    "video_processing",
    "feature_extraction",
    "modeling",
)
_CLASS_SUFFIXES = {
    "Config": "configuration",
    "Tokenizer": "tokenization",
    "TokenizerFast": "tokenization_fast",
    "Processor": "processing",
    "ProcessorKwargs": "processing",
    "ImagesKwargs": "processing",
    "VideosKwargs": "processing",
    "TextKwargs": "processing",
    "AudioKwargs": "processing",
    "ImageProcessor": "image_processing",
    "ImageProcessorFast": "image_processing_fast",
    "ImageProcessorPil": "image_processing_pil",  # HF 5.x: image_processing_pil_<m>.py
    "ImageProcessorKwargs": "image_processing",  # HF 5.x: beside the image processor that reads them
    "FastImageProcessorKwargs": "image_processing_fast",
    "VideoProcessor": "video_processing",
    "VideoProcessorInitKwargs": "video_processing",
    "VideoProcessorKwargs": "video_processing",  # HF 5.x: beside the video processor that reads them
    "FeatureExtractor": "feature_extraction",
}
_SUFFIX_RE = re.compile(rf"({'|'.join(sorted(_CLASS_SUFFIXES, key=len, reverse=True))})$")
# Directories of a models tree that hold shared machinery, not a model: imports from them stay imports.
NOT_MODELS = frozenset({"auto"})
# PaddleNLP spells some kinds differently.
_PADDLENLP_STEMS = {"tokenization": "tokenizer", "tokenization_fast": "tokenizer_fast", "processing": "processor"}
STYLES = ("repo", "hf", "paddlenlp")


def kind_of_class(name: str) -> str:
    """The module kind a class belongs to, by its name: `Qwen2Config` -> configuration (HF's rule)."""
    match = _SUFFIX_RE.search(name)
    return _CLASS_SUFFIXES[match.group(1)] if match else "modeling"


def kind_order(kind: str) -> int:
    """Output order: a kind may import classes only from kinds before it (configuration first, modeling last)."""
    return KINDS.index(kind)


@dataclass(frozen=True)
class Target:
    """What one `from X import ...` refers to: a model, and a module stem in it (None: `from ..llama import m`)."""

    model: str
    stem: str | None


@dataclass(frozen=True)
class Layout:
    modular_root: Path
    generated_root: Path
    package: str = "generated"  # the absolute import path of the directory holding the model packages
    style: str = "repo"
    # (model, directory) where they differ: HF's data2vec/ holds modular_data2vec_audio.py
    directories: tuple[tuple[str, str], ...] = ()

    def directory(self, model: str) -> str:
        return dict(self.directories).get(model, model)

    # -- files

    def modular_file(self, model: str) -> Path:
        return self.modular_root / self.directory(model) / f"modular_{model}.py"

    def stem(self, model: str, kind: str) -> str:
        if self.style == "paddlenlp":
            return _PADDLENLP_STEMS.get(kind, kind)
        base, fast = (kind[: -len("_fast")], "_fast") if kind.endswith("_fast") else (kind, "")
        return f"{base}_{model}{fast}"

    def kind_of_stem(self, model: str, stem: str) -> str | None:
        """The kind of module `stem` of `model`, or None when it is no model code (`fusion_ops`)."""
        return next((kind for kind in KINDS if self.stem(model, kind) == stem), None)

    def file(self, model: str, kind: str) -> Path:
        """A model's module of one kind: a parent's input, or the child's output."""
        return self.generated_root / self.directory(model) / f"{self.stem(model, kind)}.py"

    # -- imports

    def target(self, module: str | None, level: int, within: str = "") -> Target | None:
        """The model an import statement refers to, or None for an ordinary import.

        `from generated.llama.modeling_llama import X` / `from ..llama.modeling_llama import X` ->
        Target("llama", "modeling_llama"); `from ..llama import modeling_llama` -> Target("llama", None).
        `within` is the importing model's directory (`llama`): deeper relative imports
        (`from ....transformers.models.dinov2.modeling_dinov2`) are resolved from it.
        """
        parts = module.split(".") if module else []
        pkg = self.package.split(".")
        if level > 2 and within:
            here = [*pkg, within]
            if level - 1 > len(here):
                return None
            parts, level = here[: len(here) - (level - 1)] + parts, 0
        if level == 0 and parts[: len(pkg)] == pkg and len(parts) > len(pkg):
            rest = parts[len(pkg) :]
        elif level == 2 and parts:
            rest = parts
        else:
            return None
        if rest[0] in NOT_MODELS or len(rest) > 2 or (self.generated_root / f"{rest[0]}.py").is_file():
            return None  # `..auto`, `..linear_utils`: shared modules of the package, not models
        return Target(rest[0], rest[1] if len(rest) > 1 else None)

    def model_target(self, module: str | None, level: int, names: list[str], within: str = "") -> Target | None:
        """Like `target`, but only for imports of model code: `from ..llama import fusion_ops` is not one."""
        found = self.target(module, level, within)
        if found is None:
            return None
        stems = [found.stem] if found.stem else list(names)
        if all(self.kind_of_stem(found.model, s) is None for s in stems):
            return None
        return found


class SourceDecodeError(ValueError):
    """A source file that is not UTF-8 text: `path:line: not valid UTF-8 ...`."""

    def __init__(self, path: Path | str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = Path(path), line, message


BOM = "\ufeff"


def decode_source(path: Path | str, data: bytes) -> str:
    """A Python source file's text. UTF-8 only (what the converter writes); a leading byte-order mark, which
    Python accepts, is dropped: parsers other than Python's reject it, and no output keeps it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise decode_error(path, exc) from None
    return text[1:] if text.startswith(BOM) else text


def decode_error(path: Path | str, exc: UnicodeDecodeError) -> SourceDecodeError:
    """The line and column of the first byte that is not UTF-8, from a failed decode of the whole file."""
    data = bytes(exc.object)
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return SourceDecodeError(
        path, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); save the file as UTF-8"
    )


def read_source(path: Path) -> str:
    return decode_source(path, Path(path).read_bytes())


def is_sibling_module(model: str, stem: str) -> bool:
    """`.configuration_llama` / `.configuration` seen from `llama/`: the same model's code, in any layout."""
    return any(Layout(Path(), Path(), style=style).kind_of_stem(model, stem) for style in STYLES)


def _package_of(directory: Path) -> str | None:
    """`transformers.models` for `.../transformers/models`: the dotted path up the `__init__.py` chain."""
    parts: list[str] = []
    current = directory.resolve()
    while (current / "__init__.py").is_file():
        parts.insert(0, current.name)
        current = current.parent
    return ".".join(parts) or None


def detect(root: Path, out: Path | None = None, package: str | None = None, style: str | None = None) -> Layout:
    """The layout of a tree: `root` holds `modular/` (repo) or the model directories (hf, paddlenlp)."""
    root = Path(root).resolve()
    if style == "repo" or (style is None and (root / "modular").is_dir()):
        return Layout(root / "modular", Path(out) if out else root / "generated", package or "generated", "repo")
    if style is None:
        dirs = [d for d in root.iterdir() if d.is_dir()]
        plain = sum((d / "modeling.py").is_file() or (d / "configuration.py").is_file() for d in dirs)
        named = sum(
            (d / f"modeling_{d.name}.py").is_file() or (d / f"configuration_{d.name}.py").is_file() for d in dirs
        )
        style = "paddlenlp" if plain > named else "hf"
    return Layout(root, Path(out) if out else root, package or _package_of(root) or root.name, style)
