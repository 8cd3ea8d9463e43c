"""The package's wings stay what the README says they are (checked on the source, fast).

* the **core** (top-level modules) imports no wing and no third-party package but numpy:
  it decides, it does not do I/O;
* **stream** (the worker: Faust, aiokafka, Prometheus) never imports ``offline`` or
  ``local``, so the worker image needs neither scikit-learn nor matplotlib nor Maven;
* **offline** (train, replay, evaluate, simulate) never imports ``stream`` or ``local``;
* **review** (the analysts' queue: aiohttp, aiokafka) never imports ``offline`` or ``local``,
  and of ``stream`` only ``metrics`` (all metrics live there) and ``topics`` (topic creation);
* **client** (the wallet client: kafka-python) imports the core only, so a wallet service
  needs neither Faust nor the lab nor Maven;
* **local** (broker, demo, processes) may use everything; ``cli`` imports lazily.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "detector"
CORE = {
    "config",
    "errors",
    "events",
    "features",
    "labels",
    "policy",
    "scoring",
    "model",
    "pipeline",
    "gctune",
}
ENTRY = {"__init__", "__main__", "cli"}
WINGS = {"stream", "offline", "local", "review", "client"}
# What each wing may import from the others (the core is always allowed).
ALLOWED_WINGS = {
    "stream": set(),
    "offline": set(),
    "local": {"stream", "offline", "client"},
    "review": {"stream"},
    "client": set(),
}
# Where a wing may use another only in part: the modules it may import.
ALLOWED_MODULES = {("review", "stream"): {"detector.stream.metrics", "detector.stream.topics"}}
STDLIB = set(sys.stdlib_module_names)
# Third-party packages the core may use: numpy, and `cryptography` for the model artifact's
# Ed25519 signatures (imported only when a key is configured).
CORE_THIRD_PARTY = {"numpy": set(CORE), "cryptography": {"model"}}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "detector":  # `from detector import x`: x is a module
                names.update(f"detector.{alias.name}" for alias in node.names)
    return names


def _place(module: str) -> str:
    """'core', 'entry' or the wing a ``detector`` module belongs to."""
    head = module.split(".", maxsplit=1)[0]
    if head in WINGS:
        return head
    return "entry" if head in ENTRY else "core"


def test_every_top_level_module_is_core_or_entry() -> None:
    top = {name for name, _ in _modules() if "." not in name}
    assert top - ENTRY == CORE, (
        "a new top-level module must be core (plain decision logic) or go into a wing"
    )
    assert all((PACKAGE / wing / "__init__.py").is_file() for wing in WINGS)


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_follow_the_layers(module: str, path: Path) -> None:
    place = _place(module)
    if place == "entry":
        return
    for name in sorted(_imports(path)):
        top = name.split(".")[0]
        if top == "detector":
            parts = name.split(".")
            target = _place(".".join(parts[1:])) if len(parts) > 1 else "entry"
            if target in ("core",):
                continue
            assert place != "core", f"core module {module} imports the {target} wing ({name})"
            assert target == place or target in ALLOWED_WINGS[place], (
                f"{module} ({place}) imports {name} ({target})"
            )
            only = ALLOWED_MODULES.get((place, target))
            assert only is None or name in only, (
                f"{module} ({place}) imports {name}; of {target} it may use only {sorted(only)}"
            )
        elif place == "core":
            assert top in STDLIB or module in CORE_THIRD_PARTY.get(top, set()), (
                f"core module {module} imports {name}: the core is stdlib + numpy only"
            )


def test_only_config_reads_the_environment() -> None:
    offenders = []
    for module, path in _modules():
        if module == "config":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            reads = (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv", "environb")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            )
            if reads:
                offenders.append(f"{module}:{node.lineno}")
    assert offenders == [], "read settings through detector.config, not os.environ"


def test_the_client_wing_needs_only_kafka_python_besides_the_core() -> None:
    third_party: set[str] = set()
    for module, path in _modules():
        if _place(module) == "client":
            third_party |= {
                name.split(".")[0]
                for name in _imports(path)
                if name.split(".")[0] not in STDLIB and name.split(".")[0] != "detector"
            }
    assert third_party == {"kafka"}, "a wallet service installs the client without Faust"
