"""`modbuild convert` on a PyTorch tree laid out like HF transformers (`models/<m>/modular_<m>.py`)."""

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

LLAMA = """
import torch
from torch import nn


class LlamaMLP(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.up = nn.Linear(hidden, 2 * hidden, bias=False)
        self.down = nn.Linear(2 * hidden, hidden, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class LlamaModel(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.mlp = LlamaMLP(hidden)

    def forward(self, x):
        return self.mlp(x) + x
"""

QWEN2 = """
import torch

from ..llama.modeling_llama import LlamaMLP, LlamaModel


class Qwen2MLP(LlamaMLP):
    def forward(self, x):
        return self.down(torch.tanh(self.up(x)))


class Qwen2Model(LlamaModel):
    pass
"""


def make_tree(tmp_path):
    models = tmp_path / "pkg" / "models"
    for name, text in {"llama/modeling_llama.py": LLAMA, "qwen2/modular_qwen2.py": QWEN2}.items():
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_text(textwrap.dedent(text))
    for init in ("pkg", "pkg/models", "pkg/models/llama", "pkg/models/qwen2"):
        (tmp_path / init / "__init__.py").touch()
    return models


def test_converts_a_torch_tree_without_importing_torch(tmp_path):
    models = make_tree(tmp_path)
    script = (
        "import sys; from modbuild.cli import main; "
        f"code = main(['convert', '{models / 'qwen2' / 'modular_qwen2.py'}', '--root', '{models}']); "
        "assert 'torch' not in sys.modules and 'paddle' not in sys.modules; sys.exit(code)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    generated = (models / "qwen2" / "modeling_qwen2.py").read_text()
    assert "from ..llama" not in generated and "class Qwen2MLP(nn.Module)" in generated

    check = (
        f"import sys; sys.path.insert(0, '{tmp_path}'); import torch\n"
        "from pkg.models.qwen2.modeling_qwen2 import Qwen2Model\n"
        "torch.manual_seed(0); model = Qwen2Model(4); x = torch.randn(2, 4)\n"
        "expected = model.mlp.down(torch.tanh(model.mlp.up(x))) + x\n"
        "assert torch.equal(model(x), expected), 'tanh MLP not used by the inherited model'\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_cli_check_mode_and_errors(tmp_path):
    models = make_tree(tmp_path)
    modular = models / "qwen2" / "modular_qwen2.py"
    run = lambda *extra: subprocess.run(  # noqa: E731
        ["modbuild", "convert", str(modular), "--root", str(models), *extra], capture_output=True, text=True
    )
    assert run("--check").returncode == 1  # nothing generated yet
    assert run().returncode == 0
    assert run("--check").returncode == 0
    modular.write_text(modular.read_text() + "\nclass Broken(:\n    pass\n")
    result = run()
    assert result.returncode == 1 and f"{modular}:" in result.stderr and "syntax error" in result.stderr


def test_runs_by_absolute_path_without_an_activated_environment(tmp_path):
    """`/path/to/venv/bin/modbuild convert ...` with the venv's bin/ not on PATH: ruff is found through the
    ruff package, not PATH."""
    models = make_tree(tmp_path)
    script = Path(sys.executable).parent / "modbuild"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(script), "convert", str(models / "qwen2" / "modular_qwen2.py")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "class Qwen2MLP(nn.Module)" in (models / "qwen2" / "modeling_qwen2.py").read_text()


def test_bad_paths_get_a_clear_error(tmp_path, capsys):
    from modbuild.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.py").write_text("x = 1\n")
    for path, message in [
        (tmp_path / "missing", "no such file or directory"),
        (tmp_path / "empty", "no modular_<model>.py files in this tree"),
        (tmp_path / "notes.py", "not a modular file"),
    ]:
        assert main(["convert", str(path)]) == 1
        assert f"{path}: {message}" in capsys.readouterr().err


# --- a whole tree: a crash, a summary, --check, --help -------------------------------------------------------------

# The CLI in a process where the converter crashes on child1 (as libcst did on some real files): the property under
# test is that any exception fails only its model, whatever the converter bug behind it.
CRASH_CHILD1 = """
import sys
import modbuild.convert as convert

real = convert._convert


def crashing(path, layout, read):
    if path.name == "modular_child1.py":
        raise AttributeError("'FunctionDef' object has no attribute 'semicolon'")
    return real(path, layout, read)


convert._convert = crashing
from modbuild.cli import main

sys.exit(main(sys.argv[1:]))
"""


def family_tree(root: Path) -> Path:
    from synthetic import FAMILY, write_tree

    return write_tree(root, FAMILY, dodo=False)


def test_a_crash_fails_only_its_model_and_the_run_ends_with_a_summary(tmp_path):
    root = family_tree(tmp_path / "tree")
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-c", CRASH_CHILD1, "convert", str(root), "-j", "2", *extra], capture_output=True, text=True
    )
    result = run()
    child1, grand = (root / "modular" / m / f"modular_{m}.py" for m in ("child1", "grand"))
    assert result.returncode == 1, result.stderr
    message = rf"^{re.escape(str(child1))}(:\d+)?: internal error: AttributeError: 'FunctionDef' object has no attri"
    assert re.search(message, result.stderr, re.MULTILINE), result.stderr
    assert f"{grand}: not converted: parent child1 failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines()[-1] == (
        "modbuild convert: 3 converted, 0 unchanged, 2 failed (child1: internal error; grand: parent child1 failed); "
        "run with -v for the internal errors' tracebacks"
    )
    for model in ("base", "child2", "solo"):
        assert (root / "generated" / model / f"modeling_{model}.py").is_file()
    verbose = run("-v")
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr and "in crashing" in verbose.stderr
    assert verbose.stdout.splitlines()[-1] == (
        "modbuild convert: 0 converted, 3 unchanged, 2 failed (child1: internal error; grand: parent child1 failed)"
    )


def test_check_reports_each_stale_model_on_its_own(tmp_path, capsys):
    from modbuild.cli import main

    root = family_tree(tmp_path / "tree")
    assert main(["convert", str(root)]) == 0
    modular = root / "modular" / "base" / "modular_base.py"
    modular.write_text(modular.read_text().replace("return x + 1\n", "return x + 3\n"))
    expected = tmp_path / "expected"  # what a real conversion changes: the edited parent and its children
    shutil.copytree(root, expected)
    before = {p.relative_to(expected): p.read_text() for p in expected.rglob("generated/*/*.py")}
    assert main(["convert", str(expected)]) == 0
    stale = sorted(p for p in before if (expected / p).read_text() != before[p])
    assert len({p.parent.name for p in stale}) > 1  # the children too, not just base
    capsys.readouterr()

    assert main(["convert", "--check", str(root)]) == 1
    out, err = capsys.readouterr()
    assert sorted(err.splitlines()) == sorted(f"{root / p}: stale: differs from a fresh conversion" for p in stale)
    models = ", ".join(sorted({p.parent.name for p in stale}))
    fresh = len(list((root / "modular").iterdir())) - len({p.parent.name for p in stale})
    assert (
        out.splitlines()[-1]
        == f"modbuild convert --check: {fresh} up to date, {len(stale)} stale ({models}), 0 failed"
    )


def test_help_lists_every_command_and_says_what_config_is():
    result = subprocess.run([sys.executable, "-m", "modbuild.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for command in ("convert", "new", "train", "evaluate"):
        assert f"\n    {command} " in result.stdout, result.stdout
    assert "CONFIG (train, evaluate) is a YAML training config with the sections Global, Engine, Model" in text
    assert "configs/tiny_qwen2.yaml" in text
    evaluate = subprocess.run(
        [sys.executable, "-m", "modbuild.cli", "evaluate", "--help"], capture_output=True, text=True
    )
    assert "CONFIG.yaml is a training config (YAML)" in " ".join(evaluate.stdout.split())
