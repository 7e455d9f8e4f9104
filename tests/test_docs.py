"""Every Python block of the docs runs, each in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for number, match in enumerate(BLOCK.finditer(page.read_text()), 1):
            found.append((f"{page.name}#{number}", match.group(1)))
    return found


def _params() -> list:
    """One per block; those that import torch need it (and run in CI's second phase)."""
    return [pytest.param(where, code, id=where,
                         marks=[pytest.mark.needs_torch] if "import torch" in code else [])
            for where, code in _blocks()]


def test_docs_have_examples() -> None:
    assert len(_blocks()) >= 8


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("where", "code"), _params())
def test_example_runs(where: str, code: str, tmp_path: Path) -> None:
    if "import torch" in code:
        pytest.importorskip("torch")  # an optional dependency
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=220, check=False,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
