"""`modbuild convert` on a PyTorch tree laid out like HF transformers (`models/<m>/modular_<m>.py`)."""

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
