"""The protocol layer stays sans-I/O.

Message types, the codec, errors, playback tracking and TwiML are pure code: no
async framework, no websocket or HTTP library, no clocks, no sockets. This test
fails as soon as one of those modules imports one, directly or through another
module, so the I/O can only live at the edges.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "src" / "callbridge"

_CANDIDATES = [
    "twilio", "realtime", "codec", "_errors", "_playback", "twiml", "signature", "streamtoken",
    "_wsframes",
]
# Modules that may not exist yet are included only when their file is there.
SANS_IO_MODULES = [name for name in _CANDIDATES if (PACKAGE_DIR / f"{name}.py").is_file()]

FORBIDDEN = frozenset(
    {
        "trio",
        "trio_websocket",
        "quart",
        "quart_trio",
        "hypercorn",
        "websockets",
        "wsproto",
        "h11",
        "asyncio",
        "time",
        "socket",
    }
)

# What must not be loaded even indirectly (stdlib `time`/`socket` come in with
# almost anything, so only the I/O libraries are checked at run time).
FORBIDDEN_AT_RUNTIME = sorted(FORBIDDEN - {"time", "socket", "asyncio"})


def _imported_top_levels(source: str, filename: str) -> set[str]:
    """Top-level names of every absolute import, anywhere in the module."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_core_sans_io_modules_exist() -> None:
    assert {"twilio", "realtime", "codec", "_errors", "_playback"} <= set(SANS_IO_MODULES)


@pytest.mark.parametrize("module", SANS_IO_MODULES)
def test_module_imports_no_io_library(module: str) -> None:
    path = PACKAGE_DIR / f"{module}.py"
    imported = _imported_top_levels(path.read_text(encoding="utf-8"), str(path))
    assert not imported & FORBIDDEN, f"callbridge.{module} imports {sorted(imported & FORBIDDEN)}"


def test_checker_sees_every_import_form() -> None:
    source = (
        "import trio\n"
        "import trio_websocket as tw\n"
        "from h11 import Request\n"
        "import os, socket\n"
        "from wsproto.events import Message\n"
        "from . import codec\n"
        "def f():\n"
        "    import time\n"
        "if False:\n"
        "    from asyncio import sleep\n"
    )
    assert _imported_top_levels(source, "<test>") & FORBIDDEN == {
        "trio", "trio_websocket", "h11", "socket", "wsproto", "time", "asyncio"
    }


def test_importing_sans_io_modules_loads_no_io_library() -> None:
    modules = ", ".join(f"callbridge.{name}" for name in SANS_IO_MODULES)
    script = (
        "import json, sys\n"
        f"import {modules}\n"
        f"forbidden = {FORBIDDEN_AT_RUNTIME!r}\n"
        "top = {m.partition('.')[0] for m in sys.modules}\n"
        "print(json.dumps({'loaded': sorted(top & set(forbidden)),\n"
        "                  'callbridge': sorted(m for m in sys.modules\n"
        "                                       if m.startswith('callbridge'))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # Name the culprits: the package __init__ counts, since `import callbridge.codec` runs it.
    why = f"importing {modules} loaded {report['loaded']} via {report['callbridge']}"
    assert "trio" not in report["loaded"], why
    assert report["loaded"] == [], why
