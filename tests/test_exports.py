"""The three lists of the public API in `callbridge/__init__.py` agree.

Names are loaded lazily (importing a protocol module must not pull in trio), so the
public API is written down three times: `__all__` (what `import *` and the docs
see), `_EXPORTS` (where `__getattr__` finds each name) and the `TYPE_CHECKING`
imports (what mypy and editors see). A name added to one and not the others fails
only for whoever uses it that way; these tests fail at once instead. They read the
module and its source when they run, so they cover names added later.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

import callbridge

INIT = Path(callbridge.__file__)
PYPROJECT = INIT.parents[2] / "pyproject.toml"


def _type_checking_imports(source: str) -> dict[str, str]:
    """name -> submodule (relative to the package) of the module-level
    `if TYPE_CHECKING:` block; raises on anything else in it."""
    blocks = [node for node in ast.parse(source).body
              if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
              and node.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1, f"expected one `if TYPE_CHECKING:` block, found {len(blocks)}"
    found: dict[str, str] = {}
    for statement in blocks[0].body:
        assert isinstance(statement, ast.ImportFrom), ast.unparse(statement)
        if statement.level == 1 and statement.module:
            module = statement.module
        elif statement.level == 0 and (statement.module or "").startswith("callbridge."):
            module = (statement.module or "").removeprefix("callbridge.")
        else:
            raise AssertionError(f"not an import from a callbridge submodule: "
                                 f"{ast.unparse(statement)}")
        for alias in statement.names:
            assert alias.asname in (None, alias.name), ast.unparse(statement)
            assert alias.name not in found, f"{alias.name} imported twice"
            found[alias.name] = module
    return found


def test_the_checker_reads_the_type_checking_block() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    from ._call import Call, run_call\n"
        "    from callbridge.agent import Agent\n"
        "_EXPORTS = {}\n"
    )
    assert _type_checking_imports(source) == {"Call": "_call", "run_call": "_call",
                                              "Agent": "agent"}
    with pytest.raises(AssertionError, match="twice"):
        _type_checking_imports("if TYPE_CHECKING:\n    from .a import X\n    from .b import X\n")
    with pytest.raises(AssertionError):
        _type_checking_imports("if TYPE_CHECKING:\n    from .a import X as Y\n")


def test_all_names_every_lazy_export_and_nothing_else() -> None:
    names = list(callbridge.__all__)
    assert len(names) == len(set(names)), f"duplicates in __all__: {names}"
    missing = sorted(set(names) - set(callbridge._EXPORTS))
    unlisted = sorted(set(callbridge._EXPORTS) - set(names))
    assert (missing, unlisted) == ([], []), (
        f"in __all__ but not in _EXPORTS: {missing}; in _EXPORTS but not in __all__: {unlisted}")


def test_type_checking_imports_match_the_lazy_table() -> None:
    imported = _type_checking_imports(INIT.read_text(encoding="utf-8"))
    exported = dict(callbridge._EXPORTS)
    differ = {name: (imported.get(name), exported.get(name))
              for name in set(imported) | set(exported)
              if imported.get(name) != exported.get(name)}
    assert differ == {}, f"name: (TYPE_CHECKING import from, _EXPORTS module): {differ}"


@pytest.mark.parametrize("name", sorted(callbridge._EXPORTS))
def test_each_lazy_export_is_the_object_of_its_module(name: str) -> None:
    module = importlib.import_module(f"callbridge.{callbridge._EXPORTS[name]}")
    assert getattr(callbridge, name) is getattr(module, name)
    assert name in dir(callbridge)


def test_star_import_gets_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from callbridge import *", namespace)  # only exec can star-import
    assert set(callbridge.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        callbridge.no_such_name  # noqa: B018


def test_version_is_eager_and_matches_the_project() -> None:
    # a plain attribute: reading it loads no submodule, and it is not an API name
    assert "__version__" not in callbridge._EXPORTS
    assert "__version__" not in callbridge.__all__
    assert "__version__" in vars(callbridge)
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    if "version" in project.get("dynamic", []):
        pytest.skip("the version is dynamic in pyproject.toml")
    assert callbridge.__version__ == project["version"]
