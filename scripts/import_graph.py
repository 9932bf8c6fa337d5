#!/usr/bin/env python3
"""The asyncstart import graph: who imports whom, how big each module is, and the layer rules.

    python scripts/import_graph.py            # per module: lines and asyncstart imports; sizes
    python scripts/import_graph.py --check    # exit 1 and list violations of the rules below
    python scripts/import_graph.py --dot      # Graphviz (violating edges in red)

Every module of the package is parsed with ``ast`` (never imported): module-level,
function-level and ``if TYPE_CHECKING:`` imports all count, relative ones are resolved, and
``from . import x`` names the submodule ``x`` when there is one. A literal
``importlib.import_module("asyncstart.x")`` counts too.

The rules are data (``LAYERS``, ``RULES``), kept in step with docs/ARCHITECTURE.md. Patterns are
``fnmatch`` globs over dotted names (``*`` also matches dots), so a new module lands in the layer
its name says; a module no pattern matches is itself a violation: place it in a layer.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final

PACKAGE: Final = "asyncstart"
DEFAULT_PACKAGE_DIR: Final = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES: Final = 450

# --- The rules ------------------------------------------------------------------------------
# Layers, lowest first. A module may import modules of its own layer and of lower ones only.

CORE: Final = (  # pure, no I/O
    "asyncstart._version",
    "asyncstart._log",  # the engine's loggers: silent unless the program asks
    "asyncstart.errors",
    "asyncstart.ids",  # random IDs: secrets.token_hex's randomness, read a page at a time
    "asyncstart.lifecycle",
    "asyncstart.stdin",
    "asyncstart.signals",
    "asyncstart.restart",
    "asyncstart.config",
    "asyncstart.security",  # SecurityOpt, parsed once
    "asyncstart.seccomp",  # seccomp profiles: format, checks, resolution (cached)
    "asyncstart.seccomp_policy",  # dockerd's default seccomp policy, as data
    "asyncstart.settings",
    "asyncstart.clock",
    "asyncstart.faults",
    "asyncstart.record",
    "asyncstart.logconfig",
    "asyncstart.hostinfo",
    "asyncstart.mounts",  # mount points: Binds, Mounts, image volumes, volumes-from (pure)
)
SUPPORT: Final = (
    "asyncstart.spec",
    "asyncstart.views",
    "asyncstart.store",
    "asyncstart.recordwriter",  # the records' database, and the process that writes it
    "asyncstart.events",
    "asyncstart.attach",
    "asyncstart.detach",
    "asyncstart.execs",  # docker exec: config, OCI process, inspect (pure)
    "asyncstart.exec_io",  # a started exec's stdio
    "asyncstart.fdio",  # reading a non-blocking descriptor as it becomes readable
    "asyncstart.fsdirs",  # placement hints for the directories the engine makes
    "asyncstart.filters",
    "asyncstart.names",
)
DRIVERS: Final = (
    "asyncstart.images",
    "asyncstart.images.*",
    "asyncstart.network*",
    "asyncstart.runtime*",
    "asyncstart.logs*",
    "asyncstart.volumes",  # the local volume driver and store
)
STEPS: Final = ("asyncstart.steps", "asyncstart.saga")
ACTOR: Final = ("asyncstart.actor", "asyncstart.container", "asyncstart.mailbox")
DAEMON: Final = (
    "asyncstart.daemon",
    "asyncstart.wiring",
    "asyncstart.reconcile",
    "asyncstart.rmi",
    "asyncstart.create",
)
API: Final = ("asyncstart.api*", "asyncstart.client", "asyncstart.client_http")
ENTRY: Final = ("asyncstart", "asyncstart.__main__")

LAYERS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("core", CORE),
    ("support", SUPPORT),
    ("drivers", DRIVERS),
    ("steps", STEPS),
    ("actor", ACTOR),
    ("daemon", DAEMON),
    ("api", API),
    ("entry", ENTRY),
)


@dataclass(frozen=True)
class Rule:
    """An extra rule for the modules matching ``importers``.

    ``only``: if set, the package modules they may import (anything else is a violation).
    ``never``: package modules they must not import. ``never_external``: top-level names of
    outside modules (stdlib or third-party) they must not import.
    """

    name: str
    importers: tuple[str, ...]
    why: str
    only: tuple[str, ...] | None = None
    never: tuple[str, ...] = ()
    never_external: tuple[str, ...] = ()


SANS_IO: Final = (
    "asyncstart.lifecycle",
    "asyncstart.stdin",
    "asyncstart.restart",
    "asyncstart.record",
)

RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "sans-io",
        importers=SANS_IO,
        why="the sans-io core uses core modules only and does no I/O",
        only=CORE,
        never_external=("anyio", "trio", "os", "socket", "subprocess", "pathlib", "asyncio"),
    ),
    Rule(
        "client-standalone",
        importers=("asyncstart.client", "asyncstart.client_http"),
        why="the client speaks HTTP to the daemon; it never imports it",
        only=(
            "asyncstart.errors",
            "asyncstart._version",
            "asyncstart.client_http",
            "asyncstart.detach",
        ),
    ),
    Rule(
        "api-via-daemon",
        importers=("asyncstart.api*",),
        why="the API talks to the daemon's public methods only",
        never=(
            "asyncstart.actor",
            "asyncstart.mailbox",
            "asyncstart.container",
            "asyncstart.lifecycle",
            "asyncstart.steps",
            "asyncstart.saga",
            "asyncstart.store",
            "asyncstart.record",
            *DRIVERS,
        ),
    ),
    Rule(
        "drivers-below-daemon",
        importers=DRIVERS,
        why="drivers know the OS, never the daemon, the actor or the steps",
        never=("asyncstart.daemon", "asyncstart.actor", "asyncstart.steps"),
    ),
)

# --- The graph ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import statement's target: a dotted module name, resolved when it is relative."""

    target: str
    line: int
    where: str = "module"  # "module", "function" or "TYPE_CHECKING"


@dataclass
class Module:
    name: str
    path: str
    lines: int
    imports: list[Import] = field(default_factory=list)

    @property
    def internal(self) -> list[Import]:
        return [i for i in self.imports if is_internal(i.target)]

    @property
    def external(self) -> list[Import]:
        return [i for i in self.imports if not is_internal(i.target)]


@dataclass(frozen=True)
class Violation:
    rule: str
    module: str
    message: str
    line: int = 0
    target: str = ""

    def __str__(self) -> str:
        at = f"{self.module}:{self.line}" if self.line else self.module
        return f"{at}: [{self.rule}] {self.message}"


def is_internal(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def layers_of(name: str) -> list[str]:
    return [layer for layer, patterns in LAYERS if matches(name, patterns)]


def layer_rank(layer: str) -> int:
    return [name for name, _ in LAYERS].index(layer)


def module_name(package_dir: Path, path: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class _ImportCollector(ast.NodeVisitor):
    """Collects raw imports (relative ones unresolved) with their line and context."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.Import | ast.ImportFrom | str, int, str]] = []
        self._functions = 0
        self._type_checking = 0

    def _where(self) -> str:
        if self._type_checking:
            return "TYPE_CHECKING"
        return "function" if self._functions else "module"

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        self.visit(node.test)
        self._type_checking += guarded
        for child in node.body:
            self.visit(child)
        self._type_checking -= guarded
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append((node, node.lineno, self._where()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append((node, node.lineno, self._where()))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if (
            name in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            self.found.append((node.args[0].value, node.lineno, self._where()))
        self.generic_visit(node)


def resolve(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]
) -> list[str]:
    """The dotted names ``node`` imports, seen from ``module``; "" for one out of the tree."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        drop = node.level - 1
        if drop > len(parts) - 1:
            return [""]
        parts = parts[: len(parts) - drop]
        base = ".".join([*parts, base] if base else parts)
    targets = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        targets.append(sub if sub in known else base)
    return list(dict.fromkeys(targets))


def load_package(package_dir: Path = DEFAULT_PACKAGE_DIR) -> dict[str, Module]:
    """Parse every module under ``package_dir``; a module that does not parse is skipped."""
    files = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    names = {module_name(package_dir, p): p for p in files}
    known = set(names)
    modules: dict[str, Module] = {}
    for name, path in names.items():
        text = path.read_text(encoding="utf-8")
        display = str(path.relative_to(package_dir.parent))
        module = Module(name, display, len(text.splitlines()))
        modules[name] = module
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            module.imports.append(Import(f"<syntax error: {exc.msg}>", exc.lineno or 0))
            continue
        collector = _ImportCollector()
        collector.visit(tree)
        for node, line, where in collector.found:
            if isinstance(node, str):
                targets = [node]
            else:
                targets = resolve(name, path.name == "__init__.py", node, known)
            for target in targets:
                module.imports.append(Import(target or "<beyond the package>", line, where))
    return modules


# --- The check ------------------------------------------------------------------------------


def check(modules: Mapping[str, Module]) -> list[Violation]:
    """Every broken rule of ``modules`` (a pure function of the graph)."""
    found: list[Violation] = []
    for name in sorted(modules):
        layers = layers_of(name)
        if not layers:
            found.append(Violation("unplaced", name, "matches no layer: add it to LAYERS"))
        elif len(layers) > 1:
            found.append(Violation("ambiguous", name, f"matches layers {', '.join(layers)}"))
    for name in sorted(modules):
        rules = [r for r in RULES if matches(name, r.importers)]
        for imp in modules[name].imports:
            found += _import_violations(name, imp, rules, modules)
    return found


def _import_violations(
    name: str, imp: Import, rules: Sequence[Rule], modules: Mapping[str, Module]
) -> Iterator[Violation]:
    target = imp.target
    if target.startswith("<"):
        yield Violation("parse", name, f"import of {target}", imp.line)
        return
    if not is_internal(target):
        top = target.split(".")[0]
        for rule in rules:
            if top in rule.never_external:
                yield Violation(rule.name, name, f"imports {target}: {rule.why}", imp.line)
        return
    if target not in modules:
        yield Violation("missing", name, f"imports {target}, no such module", imp.line, target)
    mine, theirs = layers_of(name), layers_of(target)
    if len(mine) == len(theirs) == 1 and layer_rank(theirs[0]) > layer_rank(mine[0]):
        message = f"{mine[0]} imports {target} of the higher layer {theirs[0]}"
        yield Violation("layers", name, message, imp.line, target)
    for rule in rules:
        outside = rule.only is not None and not matches(target, rule.only)
        if outside or matches(target, rule.never):
            yield Violation(rule.name, name, f"imports {target}: {rule.why}", imp.line, target)


def oversized(modules: Mapping[str, Module], limit: int = MAX_LINES) -> list[Module]:
    return sorted((m for m in modules.values() if m.lines > limit), key=lambda m: -m.lines)


# --- Output ---------------------------------------------------------------------------------


def _layer_label(name: str) -> str:
    layers = layers_of(name)
    return "/".join(layers) if layers else "UNPLACED"


def report(modules: Mapping[str, Module]) -> list[str]:
    out = ["# Modules and their asyncstart imports", ""]
    for name in sorted(modules):
        module = modules[name]
        out.append(f"{name}  ({module.lines} lines, {_layer_label(name)})")
        seen: dict[str, Import] = {}
        for imp in module.internal:
            seen.setdefault(imp.target, imp)
        for target, imp in sorted(seen.items()):
            note = "" if imp.where == "module" else f"  [{imp.where}]"
            out.append(f"    -> {target}  ({_layer_label(target)}, line {imp.line}){note}")
    out += ["", "# Line counts", ""]
    width = max((len(n) for n in modules), default=6)
    out.append(f"{'lines':>6}  {'module':<{width}}  layer")
    for module in sorted(modules.values(), key=lambda m: (-m.lines, m.name)):
        out.append(f"{module.lines:>6}  {module.name:<{width}}  {_layer_label(module.name)}")
    total = sum(m.lines for m in modules.values())
    out.append(f"{total:>6}  total ({len(modules)} modules)")
    return out


def dot(modules: Mapping[str, Module], violations: Sequence[Violation]) -> list[str]:
    bad = {(v.module, v.target) for v in violations if v.target}
    out = ["digraph asyncstart {", "  rankdir=BT;", "  node [shape=box, fontsize=10];"]
    for i, (layer, _) in enumerate(LAYERS):
        members = [n for n in sorted(modules) if layers_of(n)[:1] == [layer]]
        if members:
            out.append(f'  subgraph cluster_{i} {{ label="{layer}";')
            out += [f'    "{n}" [label="{n}\\n{modules[n].lines}"];' for n in members]
            out.append("  }")
    for n in sorted(modules):
        if not layers_of(n):
            out.append(f'  "{n}" [color=red, label="{n}\\n{modules[n].lines}"];')
    for name in sorted(modules):
        for target in sorted({i.target for i in modules[name].internal}):
            style = " [color=red, penwidth=2]" if (name, target) in bad else ""
            out.append(f'  "{name}" -> "{target}"{style};')
    out.append("}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--package-dir", type=Path, default=DEFAULT_PACKAGE_DIR)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 on a violated rule")
    mode.add_argument("--dot", action="store_true", help="print the graph for Graphviz")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES, help="warning threshold")
    args = parser.parse_args(argv)

    modules = load_package(args.package_dir)
    if not modules:
        print(f"no modules under {args.package_dir}", file=sys.stderr)
        return 2
    violations = check(modules)
    if args.dot:
        print("\n".join(dot(modules, violations)))
        return 0
    if not args.check:
        print("\n".join(report(modules)))
        return 0
    for v in violations:
        print(f"error: {v}")
    for m in oversized(modules, args.max_lines):
        print(f"warning: {m.path}: {m.lines} lines (over {args.max_lines})")
    largest = max(modules.values(), key=lambda m: m.lines)
    print(f"largest: {largest.name} ({largest.lines} lines)")
    print(f"{len(modules)} modules, {len(violations)} violation(s)")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
