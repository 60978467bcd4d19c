"""The layer rules of the code base, checked by walking imports: cheap, and keeps them true."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"
#: The packages that know how the SDK names and stores promises.
OWNERS = ("ledger", "engine")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(*parts: str) -> list[Path]:
    base = SERVICE.joinpath(*parts)
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def _violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(SERVICE.parent)} imports {name}"
        for path in paths
        for name in sorted(_imports(path))
        if name.startswith(forbidden)
    ]


def test_domain_and_errors_import_nothing_of_service():
    assert _violations(_modules("domain") + _modules("errors"), ("service",)) == []


def test_steps_know_nothing_of_resonate():
    assert _violations(_modules("steps"), ("resonate",)) == []


def test_transports_do_not_reach_into_the_workflow_engine_or_steps():
    paths = _modules("gateway") + _modules("inbox")
    assert _violations(paths, ("service.workflow", "service.engine", "service.steps")) == []


def test_engine_does_not_know_the_product():
    forbidden = ("service.domain", "service.workflow", "service.steps", "service.gateway")
    assert _violations(_modules("engine"), forbidden) == []


def test_sdk_internals_stay_in_the_engine():
    outside = [p for p in SERVICE.rglob("*.py") if "engine" not in p.parts]
    assert _violations(outside, ("resonate.connections",)) == []


def test_only_the_composition_root_and_cli_read_config():
    allowed = {SERVICE / "app.py", SERVICE / "cli.py", SERVICE / "config.py", SERVICE / "health.py"}
    paths = [p for p in SERVICE.rglob("*.py") if p not in allowed]
    assert _violations(paths, ("service.config",)) == []


def test_nothing_in_service_imports_the_test_fakes():
    paths = [p for p in SERVICE.rglob("*.py") if p.name != "testing.py"]
    assert _violations(paths, ("service.testing",)) == []


def test_only_the_ledger_and_the_engine_know_how_promises_are_stored():
    """``.promises.`` calls and the SDK's ``resonate:`` tags appear nowhere else, so an SDK
    upgrade is checked in one package (the engine has its own reasons: it is the server)."""
    found = [
        f"{path.relative_to(SERVICE.parent)}: {token}"
        for path in SERVICE.rglob("*.py")
        if not any(part in OWNERS for part in path.relative_to(SERVICE).parts[:1])
        for token in (".promises.", '"resonate:')
        if token in path.read_text()
    ]
    assert found == []


def _names_an_id(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return name == "id" or name.endswith("_id")


def _ids_by_hand(path: Path) -> list[str]:
    """``some_id.partition(":")`` and the like, and ``f"{some_id}:{n}"`` (not a message's
    ``f"{some_id}: …"``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"partition", "rpartition", "split", "rsplit"}
            and [getattr(arg, "value", None) for arg in node.args[:1]] == [":"]
            and _names_an_id(node.func.value)
        ):
            found.append(f"{path.relative_to(SERVICE.parent)}:{node.lineno}")
        if (
            isinstance(node, ast.JoinedStr)
            and len(node.values) > 1
            and isinstance(first := node.values[0], ast.FormattedValue)
            and _names_an_id(first.value)
            and str(getattr(node.values[1], "value", "")).startswith(":")
            and not str(getattr(node.values[1], "value", "")).startswith(": ")
        ):
            found.append(f"{path.relative_to(SERVICE.parent)}:{node.lineno}")
    return found


def test_promise_ids_are_formed_only_where_the_sdk_is_known():
    """``resonate.ids`` (``join_id``, ``origin_of``) is the SDK's id rule: the ledger and the
    engine use it, everything else asks the ledger (``ledger.ids``) and never joins or splits
    an id on ``:`` by hand."""
    outside = [p for p in SERVICE.rglob("*.py") if p.relative_to(SERVICE).parts[0] not in OWNERS]
    assert _violations(outside, ("resonate.ids",)) == []
    assert [spot for path in outside for spot in _ids_by_hand(path)] == []


def test_one_retry_policy():
    """Every step waits out trouble under ``service.retry``; no step keeps a backoff of its own."""
    paths = [p for p in SERVICE.rglob("*.py") if p != SERVICE / "retry.py"]
    assert _violations(paths, ("tenacity", "stamina", "backoff")) == []
