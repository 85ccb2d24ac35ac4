"""The protocol layer stays sans-I/O, and production code stays off the test peers.

Message types, the codec, errors, playback tracking and TwiML are pure code: no
async framework, no websocket or HTTP library, no clocks, no sockets. This test
fails as soon as one of those modules imports one, directly or through another
module, so the I/O can only live at the edges.

`callbridge.testing` (the synthetic Twilio, loopback servers, WAV helpers) is for
tests: the service must run without it, so only the demo and the pytest plugin,
which are test tooling themselves, may import it.
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
    "_wsframes", "_mulaw", "_bridge", "events", "agent", "_conversation", "_calldata",
    "_playout", "_payload", "tools", "_history", "_inbound", "records", "_viewer",
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
    assert {"twilio", "realtime", "codec", "_errors", "_playback", "_bridge", "events"} <= set(
        SANS_IO_MODULES)


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


# Test and demo tooling that drives the Twilio-side peers (`TwilioCaller`,
# `simulate_call`, loopback servers): the only modules outside the package that
# may import `callbridge.testing`.
TESTING_CLIENTS = frozenset({"_demo.py", "_democall.py", "_pytest_plugin.py"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module an import statement in `module` may load, relative imports resolved;
    `from x import y` counts `x.y` too, since `y` may be a submodule."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _imports_testing(imported: set[str]) -> bool:
    return any(name == "callbridge.testing" or name.startswith("callbridge.testing.")
               for name in imported)


def test_testing_import_checker_resolves_relative_imports() -> None:
    def imports_testing(source: str, module: str, is_package: bool = False) -> bool:
        return _imports_testing(_imported_modules(source, module, is_package=is_package))

    assert imports_testing("from .testing import TwilioCaller", "callbridge.app")
    assert imports_testing("from . import testing", "callbridge.app")
    assert imports_testing("from ..testing._wav import read_wav", "callbridge.local._model")
    assert imports_testing("from .. import testing", "callbridge.local._model")
    assert imports_testing("from .testing import x", "callbridge", is_package=True)
    assert imports_testing("import callbridge.testing._net", "callbridge.app")
    assert imports_testing("from callbridge import testing", "callbridge.app")
    assert imports_testing("def f():\n    from .testing import x\n", "callbridge.app")
    assert not imports_testing("from .local import LocalRealtimeServer", "callbridge.app")
    assert not imports_testing("from ._testing_helpers import x", "callbridge.app")
    assert not imports_testing("import trio.testing", "callbridge._cli")
    assert not imports_testing("from .. import _mulaw", "callbridge.testing._wav")


def test_only_test_tooling_imports_callbridge_testing() -> None:
    testing_dir = PACKAGE_DIR / "testing"
    importers = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.is_relative_to(testing_dir):
            continue
        imported = _imported_modules(path.read_text(encoding="utf-8"), _module_name(path),
                                     is_package=path.name == "__init__.py")
        if _imports_testing(imported):
            importers.add(str(path.relative_to(PACKAGE_DIR)))
    assert importers <= TESTING_CLIENTS, (
        f"{sorted(importers - TESTING_CLIENTS)} import callbridge.testing; production code "
        "must not depend on the test peers (the local model is in callbridge.local)")
    # the allow-list stays as short as true: drop a name once it no longer needs the peers
    assert importers == TESTING_CLIENTS, f"no longer import callbridge.testing: "\
        f"{sorted(TESTING_CLIENTS - importers)}"


def test_offline_service_loads_no_test_peer() -> None:
    """The app and the local model import, and build the offline backend, without
    `callbridge.testing` (a check at run time, so an indirect import counts too)."""
    script = (
        "import sys\n"
        "import callbridge.app, callbridge.local\n"
        "from callbridge.config import Settings\n"
        "backend = callbridge.app.backend_for(Settings(openai_api_key=None))\n"
        "assert isinstance(backend, callbridge.local.LocalRealtimeServer), backend\n"
        "print(sorted(m for m in sys.modules if m.startswith('callbridge.testing')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
