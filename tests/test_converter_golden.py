"""Golden cases: each `tests/golden/<case>/` tree is converted and compared with `expected/`, and
each derived model is run twice, once from the generated file and once through the independent
runtime loader (`load_modular`), by the case's `scenario.run`. The two must agree.

Regenerate the expected files after a deliberate change with `UPDATE_GOLDEN=1 pytest tests/test_converter_golden.py`.
"""

import os
import subprocess

import pytest
from golden_tree import CASES, GOLDEN, convert_tree, import_generated, scenario

from modbuild.runtime import load_modular


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("golden")
    return {case: convert_tree(case, base) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_output_matches_expected(trees, case):
    _, results = trees[case]
    expected_dir = GOLDEN / case / "expected"
    for model, files in results.items():
        for name, text in files.items():
            expected = expected_dir / model / name
            if os.environ.get("UPDATE_GOLDEN") == "1":
                expected.parent.mkdir(parents=True, exist_ok=True)
                expected.write_text(text)
            assert expected.is_file(), f"no expected output {expected}"
            assert text == expected.read_text(), f"{case}/{model}/{name} differs from {expected}"


@pytest.mark.parametrize("case", CASES)
def test_generated_agrees_with_runtime_loader(trees, case):
    root, results = trees[case]
    run = scenario(case).run
    derived = [m for m in results if any(p != m for p in _parents(root, m))]
    assert derived, "a golden case needs at least one derived model"
    for model in derived:
        generated = import_generated(root, model)
        loaded = load_modular(root / "modular" / model / f"modular_{model}.py", root=root)
        assert run(generated, model) == run(loaded, model), model


def _parents(root, model):
    from modbuild.graph import load

    models, _ = load(root / "modular")
    return list(models[model].parents)


def test_every_expected_output_is_ruff_formatted():
    """The header included: a file that opens with a class needs two blank lines after the header's comment."""
    from modbuild.convert.emit import _RUFF_ARGS, _ruff

    files = sorted(str(p) for p in GOLDEN.glob("*/expected/**/*.py"))
    result = subprocess.run([_ruff(), "format", "--check", *_RUFF_ARGS, *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
