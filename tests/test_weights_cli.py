"""``python -m modbuild.weights``: what it does to an existing --dst, and its messages for wrong inputs."""

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_weights import make_hf_model, save_hf

from modbuild.weights import WeightsError, convert_hf_to_paddle
from modbuild.weights.cli import main
from modbuild.weights.destination import MANIFEST

INV_FREQ = "model.rotary_emb.inv_freq"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny llama as HF (single file, with a skipped ``inv_freq`` buffer; and sharded) and as Paddle."""
    root = tmp_path_factory.mktemp("cli")
    model = make_hf_model("llama")
    hf = save_hf(model, root / "hf", sharded=False)
    tensors = load_file(hf / "model.safetensors") | {INV_FREQ: np.ones(8, np.float32)}
    save_file(tensors, hf / "model.safetensors", metadata={"format": "pt"})
    sharded = save_hf(model, root / "hf_sharded", sharded=True)
    return {"hf": hf, "sharded": sharded, "paddle": convert_hf_to_paddle(hf, root / "paddle")}


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run(capsys, *args: str) -> tuple[int, str]:
    code = main([*args, "--no-progress"])
    return code, capsys.readouterr().err


def test_non_empty_dst_is_refused_and_left_alone(dirs, tmp_path, capsys):
    dst = tmp_path / "mine"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me\n")
    (dst / "other.bin").write_bytes(b"\x00\x01")
    before = snapshot(dst)
    code, err = run(capsys, "hf2paddle", "--src", str(dirs["hf"]), "--dst", str(dst))
    assert code == 2
    assert f"error: --dst {dst}: not empty (notes.txt, other.bin) and not a checkpoint this tool wrote" in err
    assert "--force" in err
    assert snapshot(dst) == before and sorted(os.listdir(tmp_path)) == ["mine"]  # nothing written, nothing left


@pytest.mark.parametrize("where", ["src", "parent", "inside", "symlink", "parent_of_a_symlinked_src"])
def test_dst_overlapping_src_is_refused(dirs, tmp_path, capsys, where):
    src = Path(shutil.copytree(dirs["hf"], tmp_path / "models" / "qwen"))
    (tmp_path / "models" / "notes.txt").write_text("a sibling of the checkpoint\n")
    dst = {"src": src, "parent": src.parent, "inside": src / "paddle", "symlink": tmp_path / "link"}.get(where)
    if where == "symlink":
        dst.symlink_to(src, target_is_directory=True)
    if where == "parent_of_a_symlinked_src":  # --src links/qwen -> models/qwen, --dst links: even with --force
        (tmp_path / "links").mkdir()
        (tmp_path / "links" / "qwen").symlink_to(src, target_is_directory=True)
        src, dst = tmp_path / "links" / "qwen", tmp_path / "links"
    before = snapshot(tmp_path)
    force = ["--force"] if where == "parent_of_a_symlinked_src" else []  # --force does not make it allowed
    code, err = run(capsys, "hf2paddle", "--src", str(src), "--dst", str(dst), *force)
    assert code == 2
    relation = {"src": "is", "parent": "contains", "inside": "is inside", "symlink": "is"}.get(where, "contains")
    assert f"error: --dst {dst} {relation} the source checkpoint --src {src}" in err
    assert snapshot(tmp_path) == before


def test_force_replaces_only_what_the_conversion_writes(dirs, tmp_path, capsys):
    dst = tmp_path / "pd"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me\n")
    (dst / "config.json").write_text("{}\n")
    code, _ = run(capsys, "hf2paddle", "--src", str(dirs["hf"]), "--dst", str(dst), "--force")
    assert code == 0
    assert (dst / "notes.txt").read_text() == "keep me\n"
    assert snapshot(dst)["model.safetensors"] == snapshot(dirs["paddle"])["model.safetensors"]
    assert json.loads((dst / "config.json").read_text())["model_type"] == "llama"
    manifest = json.loads((dst / MANIFEST).read_text())
    assert manifest["complete"] and "notes.txt" not in manifest["files"] and "config.json" in manifest["files"]


def test_rerun_replaces_its_own_checkpoint_and_keeps_the_rest(dirs, tmp_path, capsys):
    dst = tmp_path / "pd"
    assert run(capsys, "hf2paddle", "--src", str(dirs["hf"]), "--dst", str(dst))[0] == 0
    (dst / "notes.txt").write_text("keep me\n")
    # Sharded this time: the old single file is the previous checkpoint's, so it goes; notes.txt stays.
    assert run(capsys, "hf2paddle", "--src", str(dirs["sharded"]), "--dst", str(dst))[0] == 0
    names = set(os.listdir(dst))
    assert "notes.txt" in names and "model.safetensors" not in names and "model.safetensors.index.json" in names
    assert set(json.loads((dst / MANIFEST).read_text())["files"]) == names - {"notes.txt", MANIFEST}


def test_interrupted_install_is_refused_as_a_source_and_repaired_by_a_rerun(dirs, tmp_path, capsys, monkeypatch):
    dst = convert_hf_to_paddle(dirs["hf"], tmp_path / "pd")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("modbuild.weights.destination.move_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_hf_to_paddle(dirs["sharded"], dst)
    assert [p.name for p in dst.iterdir() if p.name.startswith(".modbuild-weights.")] == [MANIFEST]  # staging gone
    monkeypatch.undo()
    code, err = run(capsys, "paddle2hf", "--src", str(dst), "--dst", str(tmp_path / "hf"))
    assert code == 2 and "an interrupted conversion left this checkpoint incomplete" in err
    assert run(capsys, "hf2paddle", "--src", str(dirs["sharded"]), "--dst", str(dst))[0] == 0
    assert json.loads((dst / MANIFEST).read_text())["complete"] is True


def test_split_degree_that_does_not_divide_the_model(dirs, tmp_path, capsys):
    code, err = run(capsys, "split", "--src", str(dirs["paddle"]), "--dst", str(tmp_path / "tp3"), "--tp", "3")
    assert code == 2
    # The tiny llama: 4 heads, 2 key/value heads, a 128-token vocabulary, 128 MLP columns.
    assert f"error: {dirs['paddle'] / 'config.json'}: --tp 3 does not divide num_attention_heads 4, " in err
    assert "num_key_value_heads 2, vocab_size 128, intermediate_size 128" in err and "(--tp 2 would)" in err
    assert "Traceback" not in err and not (tmp_path / "tp3").exists()


@pytest.mark.parametrize(
    ("command", "src", "side"),
    [("paddle2hf", "hf", "an HF"), ("split", "hf", "an HF"), ("hf2paddle", "paddle", "a Paddle")],
)
def test_checkpoint_of_the_other_side_is_named(dirs, tmp_path, capsys, command, src, side):
    tp = ["--tp", "2"] if command == "split" else []
    code, err = run(capsys, command, "--src", str(dirs[src]), "--dst", str(tmp_path / "out"), *tp)
    assert code == 2
    assert f"error: {dirs[src]}: looks like {side} checkpoint" in err and "says format" in err
    assert "missing keys" not in err and len(err) < 400


def test_checkpoint_of_the_other_side_without_metadata(dirs, tmp_path, capsys):
    src = Path(shutil.copytree(dirs["hf"], tmp_path / "hf"))
    save_file(load_file(src / "model.safetensors"), src / "model.safetensors")  # no metadata: the names tell
    code, err = run(capsys, "paddle2hf", "--src", str(src), "--dst", str(tmp_path / "out"))
    assert code == 2
    assert f"error: {src}: looks like an HF checkpoint, not a Paddle one: its tensor names are HF's (" in err


def test_model_flag_naming_another_model_type(tmp_path, capsys):
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    code, err = run(
        capsys, "hf2paddle", "--src", str(tmp_path / "bert"), "--dst", str(tmp_path / "x"), "--model", "gptj"
    )
    assert code == 2
    assert f"error: {tmp_path / 'bert' / 'config.json'}: names model_type 'bert', not 'gptj' (--model)" in err
    assert "drop --model to convert it as bert" in err and len(err) < 400


def test_cli_prints_each_skipped_key_once_and_no_temporary_path(dirs, tmp_path, capsys):
    # In a real process paddlenlp's import gives the root logger a stderr handler (logging.basicConfig); pytest's
    # own handlers stand in for it here, so add one. tests/test_quiet.py checks the same in a real process.
    root_handler = logging.StreamHandler(sys.stderr)
    paddlenlp_records = []
    paddlenlp_handler = logging.Handler()
    paddlenlp_handler.emit = paddlenlp_records.append
    logging.getLogger().addHandler(root_handler)
    logging.getLogger("PaddleNLP").addHandler(paddlenlp_handler)  # its own handler wrote to the import-time stderr
    try:
        code, err = run(capsys, "hf2paddle", "--src", str(dirs["hf"]), "--dst", str(tmp_path / "pd"))
    finally:
        logging.getLogger().removeHandler(root_handler)
        logging.getLogger("PaddleNLP").removeHandler(paddlenlp_handler)
    assert code == 0 and err.count(f"skipped {INV_FREQ}") == 1, err
    messages = [record.getMessage() for record in paddlenlp_records]
    assert not [m for m in messages if ".tmp" in m or "Configuration saved" in m], messages


def test_library_refuses_too(dirs, tmp_path):
    with pytest.raises(WeightsError, match="is the source checkpoint"):
        convert_hf_to_paddle(dirs["hf"], dirs["hf"])


@pytest.mark.parametrize("command", ["hf2paddle", "paddle2hf", "split"])
def test_help_says_what_happens_to_an_existing_dst(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    assert "Any other non-empty directory is refused unless --force" in out
    assert "anything else in it is kept" in out and "--dst may not be --src, lie inside it or contain it" in out
