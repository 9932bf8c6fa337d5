"""The package keeps its layers (scripts/import_graph.py), and the checker catches a breach."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "import_graph.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asyncstart_import_graph", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


graph = _load_script()


def _package(root: Path, files: dict[str, str]) -> Path:
    """A package named asyncstart under ``root`` with ``files`` (relative path -> source)."""
    package = root / "asyncstart"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def _rules(violations: list[object]) -> set[tuple[str, str, str]]:
    return {(v.rule, v.module, v.target) for v in violations}  # type: ignore[attr-defined]


def test_the_package_keeps_its_layers() -> None:
    violations = graph.check(graph.load_package(ROOT / "asyncstart"))
    assert not violations, "\n".join(str(v) for v in violations)


def test_check_command_passes_on_the_package() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "largest:" in result.stdout


def test_a_driver_importing_the_daemon_is_reported_in_memory() -> None:
    modules = {
        name: graph.Module(name, name, 10)
        for name in ("asyncstart.daemon", "asyncstart.errors", "asyncstart.runtime.runc")
    }
    modules["asyncstart.runtime.runc"].imports += [
        graph.Import("asyncstart.errors", 1),
        graph.Import("asyncstart.daemon", 2),
    ]
    found = _rules(graph.check(modules))
    assert ("layers", "asyncstart.runtime.runc", "asyncstart.daemon") in found
    assert ("drivers-below-daemon", "asyncstart.runtime.runc", "asyncstart.daemon") in found
    assert all(target != "asyncstart.errors" for _, _, target in found)


def test_a_driver_importing_the_daemon_is_reported_from_source(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "daemon.py": "from .runtime import runc\n",
            "runtime/__init__.py": "",
            # relative, inside a function, under TYPE_CHECKING: each counts
            "runtime/runc.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from ..daemon import Daemon\n"
                "def f() -> None:\n"
                "    from .. import daemon\n"
            ),
        },
    )
    modules = graph.load_package(package)
    imports = modules["asyncstart.runtime.runc"].imports
    assert [(i.target, i.where) for i in imports if i.target.startswith("asyncstart")] == [
        ("asyncstart.daemon", "TYPE_CHECKING"),
        ("asyncstart.daemon", "function"),
    ]
    assert [i.target for i in modules["asyncstart.daemon"].imports] == ["asyncstart.runtime.runc"]
    lines = [v.line for v in graph.check(modules) if v.rule == "layers"]
    assert lines == [3, 5]
    assert graph.main(["--check", "--package-dir", str(package)]) == 1


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"brandnew.py": ""}, ("unplaced", "asyncstart.brandnew", "")),
        ({"stdin.py": "import os\n"}, ("sans-io", "asyncstart.stdin", "")),
        (
            {"stdin.py": "", "events.py": "", "restart.py": "from . import events\n"},
            ("sans-io", "asyncstart.restart", "asyncstart.events"),
        ),
        (
            {"client.py": "from asyncstart import config\n", "config.py": ""},
            ("client-standalone", "asyncstart.client", "asyncstart.config"),
        ),
        (
            {"api/__init__.py": "", "api/engine.py": "from ..store import x\n", "store.py": ""},
            ("api-via-daemon", "asyncstart.api.engine", "asyncstart.store"),
        ),
        (
            {"images/__init__.py": "", "spec.py": "import asyncstart.images\n"},
            ("layers", "asyncstart.spec", "asyncstart.images"),
        ),
    ],
)
def test_extra_rules(tmp_path: Path, files: dict[str, str], expected: tuple[str, str, str]) -> None:
    assert expected in _rules(graph.check(graph.load_package(_package(tmp_path, files))))


def test_a_clean_package_passes(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "errors.py": "",
            "lifecycle.py": "from enum import Enum\nfrom . import errors\n",
            "daemon.py": "from .lifecycle import Enum\nimport asyncio\n",
            "__main__.py": "from asyncstart import daemon\n",
        },
    )
    assert graph.check(graph.load_package(package)) == []
