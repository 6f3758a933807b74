"""The import rules of openbell's layers (docs/architecture.md), read from the source with ``ast``.

Layers, from the bottom:

- ``eventstore``: the append-only store; imports nothing from ``services``.
- ``services.model``: the shared domain model; imports only ``eventstore`` (and third-party libraries).
- ``services.core``, ``services.clock``, ``services.broker``: the platform; never a domain service.
- the domain services ``strategy``, ``orders``, ``positions``, ``alerts``: each imports the model and the
  platform, never another domain service.
- the web app ``services.web`` (dashboard and HTTP API, an adapter over every read model): it reads a
  domain service only through that service's ``queries`` (its read model's query functions) and
  ``commands`` (the operator's commands) modules; only the command line imports it.
- command-line modules (``services.cli``, ``services.cli_support``, ``services.demo``, every ``cli.py``):
  only other command-line modules import them, and none imports the root command ``services.cli``.
- the composition root ``services.stack`` (the one list of services, each declared in its
  ``definition.py``): it may import anything; only the command line imports it (the host below it is given
  the list, it never looks a service up).

And the pure decision modules (``PURE_MODULES``) import neither asyncpg nor nats nor faststream, directly
or through anything they import (the packages above a module included). A name taken from a package
(``from eventstore import NewEvent``) counts as an import of the module the package takes it from, which
is how ``eventstore`` loads it (on first use).

Each rule is also tested against a planted violation in a small synthetic tree, so a checker that
quietly stopped seeing imports would fail here too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("eventstore", "services")
DOMAIN = frozenset({"strategy", "orders", "positions", "alerts"})
PLATFORM = frozenset({"core", "clock", "broker"})
WEB = "web"
COMPOSITION_ROOT = "services.stack"
# What the web app may take from a domain service: the read side and the operator's commands.
WEB_FACING_MODULES = frozenset({"queries", "commands"})
IO_LIBRARIES = frozenset({"asyncpg", "nats", "faststream"})

# Decision logic: plain functions over immutable values, testable without any server.
PURE_MODULES = (
    "services.model",  # the whole package: every module below it
    "services.strategy.decide",
    "services.strategy.risk",
    "services.strategy.sizing",
    "services.strategy.strategies",
    "services.strategy.config",
    "services.orders.lifecycle",
    "services.positions.reconcile",
    "services.positions.valuation",
    "services.positions.planning",
    "services.alerts.conditions",
    "services.alerts.state",
    "services.alerts.notifications",
    "services.clock.calendar",
    "services.clock.schedule",
    "services.core.jobs.breaker",
    "services.core.limits",
    "services.core.feeds",
    "eventstore.codec",
    "eventstore.records",
)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name (internal) or top-level library name (external)
    line: int  # 0: the implicit import of a package above the module
    internal: bool


@dataclass(frozen=True)
class Tree:
    root: Path
    files: dict[str, Path]  # dotted module name -> file
    parsed: dict[str, ast.Module] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, root: Path) -> Tree:
        files: dict[str, Path] = {}
        for package in PACKAGES:
            for path in sorted((root / package).rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                files[name] = path
        return cls(root, files)

    def is_package(self, name: str) -> bool:
        return name in self.files and self.files[name].name == "__init__.py"

    def _parse(self, name: str) -> ast.Module:
        if name not in self.parsed:
            self.parsed[name] = ast.parse(self.files[name].read_text(), filename=str(self.files[name]))
        return self.parsed[name]

    def _absolute(self, importer: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = importer if self.is_package(importer) else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{node.module}" if node.module else package

    def _source_of(self, package: str, name: str, seen: frozenset[str] = frozenset()) -> str:
        """The module a package's ``__init__`` takes ``name`` from (the package itself if it defines it)."""
        if f"{package}.{name}" in self.files:
            return f"{package}.{name}"
        if not self.is_package(package) or package in seen:
            return package
        for node in ast.walk(self._parse(package)):
            if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
                source = self._absolute(package, node)
                if source in self.files:
                    return self._source_of(source, name, seen | {package}) if self.is_package(source) else source
        return package

    def imports(self, name: str) -> Iterator[Import]:
        """Every import statement of a module, module-level or inside a function, and the packages above
        it (Python runs ``a/__init__.py`` before ``a/b.py``)."""
        parts = name.split(".")
        for depth in range(1, len(parts)):
            yield Import(name, ".".join(parts[:depth]), 0, internal=True)
        for node in _runtime_nodes(self._parse(name)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield self._import(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                module = self._absolute(name, node)
                if module.split(".")[0] not in PACKAGES:
                    yield self._import(name, module, node.lineno)
                    continue
                for alias in node.names:
                    yield self._import(name, self._source_of(module, alias.name), node.lineno)

    def _import(self, importer: str, module: str, line: int) -> Import:
        top = module.split(".")[0]
        if top in PACKAGES:
            return Import(importer, module, line, internal=True)
        return Import(importer, top, line, internal=False)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (imports for the type checker only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for orelse in node.orelse for n in [orelse, *_runtime_nodes(orelse)])
            continue
        yield node
        yield from _runtime_nodes(node)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "eventstore":
        return "eventstore"
    if is_cli(module):
        return "cli"
    if len(parts) > 1 and parts[1] == "model":
        return "model"
    if len(parts) > 1 and parts[1] in PLATFORM:
        return parts[1]
    if len(parts) > 1 and parts[1] in DOMAIN:
        return f"domain:{parts[1]}"
    if len(parts) > 1 and parts[1] == WEB:
        return WEB
    return "other"


def is_cli(module: str) -> bool:
    return module in ("services.cli", "services.cli_support", "services.demo") or module.endswith(".cli")


def forbidden(imp: Import) -> str | None:
    """Why an internal import breaks a layer rule, or None."""
    source, target = layer_of(imp.importer), layer_of(imp.target)
    if source == "eventstore" and imp.target.startswith("services"):
        return "the event store imports nothing from services"
    if target == "cli" and source != "cli":
        return "only command-line modules import a command-line module"
    if imp.target == "services.cli" and imp.importer != "services.cli":
        return "nothing imports the root command (shared helpers are in services.cli_support)"
    if source == "model" and target != "model" and target != "eventstore":
        return "the shared model imports only itself and the event store"
    if source in PLATFORM and target.startswith("domain:"):
        return f"{source} is below the domain services and never imports one"
    if source.startswith("domain:") and target.startswith("domain:") and source != target:
        return "a domain service never imports another (shared things live in services.model)"
    if imp.target == COMPOSITION_ROOT and source != "cli":
        return "only the command line imports the composition root (the host is given the list of services)"
    if target == WEB and source not in (WEB, "cli") and imp.importer != COMPOSITION_ROOT:
        return "only the command line (and the composition root, which hosts it) imports the web app"
    if source == WEB and target.startswith("domain:") and imp.target.rpartition(".")[2] not in WEB_FACING_MODULES:
        return "the web app reads a domain service only through its queries and commands modules"
    return None


def layer_violations(tree: Tree) -> list[str]:
    found = []
    for module in tree.files:
        for imp in tree.imports(module):
            reason = forbidden(imp) if imp.internal and imp.line else None
            if reason:
                found.append(f"{imp.importer}:{imp.line} imports {imp.target}: {reason}")
    return found


def pure_modules(tree: Tree) -> list[str]:
    chosen = []
    for entry in PURE_MODULES:
        members = [m for m in tree.files if m == entry or (tree.is_package(entry) and m.startswith(entry + "."))]
        if not members:
            raise AssertionError(f"pure module {entry} does not exist: update PURE_MODULES")
        chosen.extend(members)
    return chosen


def io_violations(tree: Tree, modules: list[str]) -> list[str]:
    """A pure module that reaches asyncpg, nats or faststream, with the chain of imports that does."""
    found = []
    for start in modules:
        path_to = {start: [start]}
        queue = [start]
        while queue:
            module = queue.pop(0)
            for imp in tree.imports(module):
                if not imp.internal:
                    if imp.target in IO_LIBRARIES:
                        chain = " -> ".join([*path_to[module], imp.target])
                        found.append(f"{start} reaches {imp.target}: {chain} (line {imp.line} of {module})")
                elif imp.target in tree.files and imp.target not in path_to:
                    path_to[imp.target] = [*path_to[module], imp.target]
                    queue.append(imp.target)
    return found


# ---------------------------------------------------------------------------------- tables and owners

# SQL is written in capitals here: a table named after FROM / JOIN / INTO / UPDATE in a string literal.
SQL_TABLE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+([a-z_][a-z0-9_]*)")
SQL_CREATE = re.compile(r"\bCREATE TABLE IF NOT EXISTS\s+([a-z_][a-z0-9_]*)")


def owner_of(module: str) -> str:
    """Who owns what a module creates: ``eventstore`` or a folder of ``services`` (``services.orders``)."""
    parts = module.split(".")
    return parts[0] if parts[0] == "eventstore" else ".".join(parts[:2])


def _strings(tree: Tree, module: str) -> Iterator[str]:
    for node in ast.walk(tree._parse(module)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def table_owners(tree: Tree) -> dict[str, str]:
    """Every table a module creates, and the owner of that module."""
    owners: dict[str, str] = {}
    for module in tree.files:
        for text in _strings(tree, module):
            for table in SQL_CREATE.findall(text):
                owners.setdefault(table, owner_of(module))
    return owners


def sql_violations(tree: Tree) -> list[str]:
    """A module that writes SQL against a table another folder owns (read models are read through their
    owner's query functions; the log through the event store's)."""
    owners = table_owners(tree)
    found = []
    for module in tree.files:
        for text in _strings(tree, module):
            for table in SQL_TABLE.findall(text):
                if table in owners and owners[table] != owner_of(module):
                    found.append(f"{module} reads {table}, which {owners[table]} owns")
    return sorted(set(found))


# ------------------------------------------------------------------------------------- the real tree


def test_no_module_writes_sql_against_another_folders_tables() -> None:
    tree = Tree.of(ROOT)
    owners = table_owners(tree)
    assert owners["trades"] == "services.orders" and owners["events"] == "eventstore"  # the checker sees them
    assert sql_violations(tree) == []


def test_sql_on_another_services_table_is_found(tmp_path: Path) -> None:
    tree = plant(tmp_path, {
        **CLEAN,
        "services/orders/projection.py": 'SCHEMA = "CREATE TABLE IF NOT EXISTS trades (id text)"\n',
        "services/orders/queries.py": 'Q = "SELECT id FROM trades"\n',
        "services/strategy/risk.py": 'def f():\n    return "SELECT count(*) FROM trades WHERE x"\n',
        "services/strategy/help.py": 'TEXT = "Create or update trades from a file."\n',
    })
    assert sql_violations(tree) == ["services.strategy.risk reads trades, which services.orders owns"]


def test_no_layer_rule_is_broken() -> None:
    assert layer_violations(Tree.of(ROOT)) == []


def test_pure_modules_reach_no_database_or_messaging_library() -> None:
    tree = Tree.of(ROOT)
    assert io_violations(tree, pure_modules(tree)) == []


def test_pure_modules_load_no_database_or_messaging_library_at_run_time() -> None:
    """The same rule as Python sees it: importing every pure module loads none of those libraries."""
    modules = pure_modules(Tree.of(ROOT))
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += f"print(sorted(m for m in {sorted(IO_LIBRARIES)!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ planted violations


def plant(root: Path, files: dict[str, str]) -> Tree:
    """A synthetic tree: every package gets an ``__init__.py``; ``files`` maps paths to source."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        for parent in path.relative_to(root).parents:
            if str(parent) != ".":
                (root / parent / "__init__.py").touch(exist_ok=True)
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch(exist_ok=True)
    return Tree.of(root)


CLEAN = {
    "eventstore/records.py": "import msgspec\n",
    "eventstore/store.py": "import asyncpg\nfrom eventstore.records import NewEvent\n",
    "eventstore/__init__.py": (  # names loaded on first use, as the real one does
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from eventstore.records import NewEvent\n    from eventstore.store import EventStore\n"
    ),
    "services/model/vocabulary.py": "from eventstore import NewEvent\n",
    "services/core/host.py": "from services.model.vocabulary import Side\nimport nats\n",
    "services/orders/lifecycle.py": "from eventstore import NewEvent\nfrom services.model import vocabulary\n",
    "services/orders/service.py": "from services.orders.lifecycle import x\nfrom services.core.host import y\n",
    "services/orders/cli.py": "from services.cli_support import console\n",
    "services/cli_support.py": "import typer\n",
    "services/cli.py": "from services.orders.cli import register\n",
    "services/orders/queries.py": "from services.orders.lifecycle import OrderStatus\n",
    "services/web/app.py": "from services.orders.queries import OrderStatus\nfrom services.core.host import y\n",
    "services/demo.py": "from services.web.app import create_app\nfrom services.stack import hosted\n",
    "services/stack.py": "from services.orders.service import setup\nfrom services.core.host import Catalog\n",
}


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        (
            {"eventstore/relay.py": "from services.core.host import x\n"},
            "eventstore.relay:1 imports services.core.host",
        ),
        (
            {"services/orders/service.py": "def f():\n    from services.positions.books import load_book\n"},
            "services.orders.service:2 imports services.positions.books",
        ),
        (
            {"services/strategy/service.py": "from ..alerts import state\n"},
            "services.strategy.service:1 imports services.alerts",
        ),
        (
            {"services/broker/views.py": "import services.orders.lifecycle\n"},
            "services.broker.views:1 imports services.orders",
        ),
        (
            {"services/core/host.py": "from services.strategy import service\n"},
            "services.core.host:1 imports services.strategy",
        ),
        (
            {"services/model/streams.py": "from services.core.host import x\n"},
            "services.model.streams:1 imports services.core",
        ),
        (
            {"services/model/streams.py": "from services.orders import lifecycle\n"},
            "services.model.streams:1 imports services.orders",
        ),
        (
            {"services/core/jobs/runner.py": "from services.cli import app\n"},
            "services.core.jobs.runner:1 imports services.cli",
        ),
        (
            {"services/orders/service.py": "from services.cli_support import fail\n"},
            "imports services.cli_support",
        ),
        (
            {"services/orders/cli.py": "def f():\n    from services.cli import run_async\n"},
            "services.orders.cli:2 imports services.cli: nothing imports the root command",
        ),
        (
            {"services/core/host.py": "from services.web import app\n"},
            "services.core.host:1 imports services.web.app: only the command line (and the composition root",
        ),
        (
            {"services/positions/service.py": "def f():\n    from services.web.app import create_app\n"},
            "services.positions.service:2 imports services.web.app",
        ),
        (
            {"services/web/app.py": "from services.orders.lifecycle import OrderStatus\n"},
            "services.web.app:1 imports services.orders.lifecycle: the web app reads a domain service only",
        ),
        (
            {"services/web/app.py": "from services.cli_support import console\n"},
            "services.web.app:1 imports services.cli_support",
        ),
        (
            {"services/core/host.py": "def f():\n    from services.stack import SERVICES\n"},
            "services.core.host:2 imports services.stack: only the command line imports the composition root",
        ),
        (
            {"services/orders/service.py": "from services.stack import hosted\n"},
            "services.orders.service:1 imports services.stack",
        ),
    ],
)
def test_a_planted_layer_violation_is_found(tmp_path: Path, planted: dict[str, str], expected: str) -> None:
    assert layer_violations(plant(tmp_path, CLEAN)) == []
    found = layer_violations(plant(tmp_path, planted))
    assert any(expected in line for line in found), found


def test_a_pure_module_reaching_io_through_its_imports_is_found(tmp_path: Path) -> None:
    tree = plant(tmp_path, CLEAN)
    assert io_violations(tree, ["services.orders.lifecycle", "services.model.vocabulary"]) == []
    # Two steps away: the pure module imports a helper that imports a shell that imports nats.
    tree = plant(tmp_path, {"services/model/vocabulary.py": "from services.model.helpers import x\n",
                            "services/model/helpers.py": "from eventstore import EventStore\n"})
    found = io_violations(tree, ["services.orders.lifecycle"])
    assert found == [
        "services.orders.lifecycle reaches asyncpg: services.orders.lifecycle -> services.model.vocabulary"
        " -> services.model.helpers -> eventstore.store -> asyncpg (line 1 of eventstore.store)"
    ]


def test_a_pure_module_importing_io_directly_is_found(tmp_path: Path) -> None:
    tree = plant(tmp_path, {**CLEAN, "services/orders/lifecycle.py": "def f():\n    import faststream.nats\n"})
    assert io_violations(tree, ["services.orders.lifecycle"]) == [
        "services.orders.lifecycle reaches faststream: services.orders.lifecycle -> faststream"
        " (line 2 of services.orders.lifecycle)"
    ]


def test_a_copy_of_the_real_tree_with_a_planted_import_fails(tmp_path: Path) -> None:
    """The checker over a copy of the real source, one forbidden line added: that line, and only it."""
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    lifecycle = tmp_path / "services/orders/lifecycle.py"
    lifecycle.write_text(lifecycle.read_text() + "\nfrom services.strategy.service import SERVICE  # noqa\n")
    tree = Tree.of(tmp_path)
    found = layer_violations(tree)
    assert len(found) == 1 and found[0].startswith("services.orders.lifecycle:") and "services.strategy" in found[0]
    assert any("services.orders.lifecycle reaches" in line for line in io_violations(tree, pure_modules(tree)))
