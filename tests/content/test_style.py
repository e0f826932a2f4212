"""House style over all code: ruff is clean and every module starts with its purpose and future annotations."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("plugin", "ml", "tests", "scripts")


def _modules():
    for d in CODE_DIRS:
        yield from sorted((REPO / d).rglob("*.py"))


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed (it is in the test extras)")
    proc = subprocess.run([ruff, "check", *CODE_DIRS], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_every_module_has_a_docstring_and_future_annotations():
    offenders = []
    for path in _modules():
        text = path.read_text()
        if not text.strip():
            continue
        tree = ast.parse(text)
        has_doc = ast.get_docstring(tree) is not None
        has_future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                         and any(a.name == "annotations" for a in n.names) for n in tree.body)
        if not (has_doc and has_future):
            offenders.append(f"{path.relative_to(REPO)}: "
                             f"{'' if has_doc else 'no module docstring '}"
                             f"{'' if has_future else 'no `from __future__ import annotations`'}")
    assert not offenders, "\n".join(offenders)


def test_ml_imports_nothing_from_plugin():
    """The models stay usable without the CLI and the engine clients: ``ml`` never imports
    ``plugin`` (``plugin`` translates ``ml``'s errors for the user)."""
    offenders = []
    for path in sorted((REPO / "ml").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}"
                          for n in names if n == "plugin" or n.startswith("plugin.")]
    assert not offenders, "\n".join(offenders)
