"""The repository's own generated files: fresh, deterministic, standalone and ruff-clean."""

import subprocess
from pathlib import Path

from modbuild.project import Project
from modbuild.tasks import check_generated

ROOT = Path(__file__).resolve().parents[1]
PROJECT = Project(ROOT)


def test_committed_generated_files_are_fresh():
    assert check_generated(str(ROOT)), "generated/ is stale or hand-edited: run `doit convert` and commit"


def _digest_in_fresh_process(seed: str) -> str:
    script = (
        "import hashlib; from modbuild.project import Project; from modbuild.convert import convert_file\n"
        f"p = Project(__import__('pathlib').Path({str(ROOT)!r}))\n"
        "h = hashlib.sha256()\n"
        "for m in p.build_order():\n"
        "    for path, text in sorted(convert_file(p.modular_file(m), p.layout).items()):\n"
        "        h.update(str(path).encode() + text.encode())\n"
        "print(h.hexdigest())"
    )
    env = {"PYTHONHASHSEED": seed, "PATH": __import__("os").environ["PATH"]}
    return subprocess.run(["python", "-c", script], capture_output=True, text=True, env=env, check=True).stdout


def test_conversion_is_deterministic():
    """Same input, byte-identical output, whatever the hash seed (set and dict orders)."""
    assert _digest_in_fresh_process("1") == _digest_in_fresh_process("2")


def test_generated_code_has_no_undefined_or_unused_names():
    files = sorted(str(p) for p in (ROOT / "generated").rglob("*_*.py"))
    result = subprocess.run(["ruff", "check", "--isolated", "--select", "F", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_generated_models_import_no_other_model():
    for path in (ROOT / "generated").rglob("*.py"):
        text = path.read_text()
        assert "from generated." not in text and "import generated" not in text, path
        assert "from .." not in text, path
