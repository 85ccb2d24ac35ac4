"""The package stays mypy --strict clean (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_mypy_strict() -> None:
    root = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
