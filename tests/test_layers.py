"""The layering of the package, checked on every module's import statements.

- the core (``edge_mer`` without ``convert`` and ``calibration``) never imports ``convert``,
  ``calibration`` or torch at module level, and no core module imports torch anywhere;
- the pipeline stages and the runners never import the service, the bench or the CLI;
- the shared contracts (errors, bundle, manifest, metrics, streaming, config) import only
  each other;
- ``convert -> calibration -> core``: calibration never imports convert.

Module level means the import runs when the module is imported (also inside ``if`` or
``try`` at top level); imports inside functions run only when that code path runs, which is
how the CLI reaches ``convert`` for ``train`` and ``convert``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import REPO

FOLDERS = {"edge": "edge_mer", "convert": "edge_mer.convert", "calibration": "edge_mer.calibration"}
CONTRACTS = ("errors", "bundle", "manifest", "metrics", "streaming", "config")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = [FOLDERS[rel.parts[0]], *rel.with_suffix("").parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str) -> Iterator[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for every import in ``source``."""
    tree = ast.parse(source)
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    package = module.rsplit(".", 1)[0] if "." in module else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) not in nested, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                # `from edge_mer import x` may name a submodule: count it as edge_mer.x.
                yield (
                    (f"{base}.{alias.name}" if base == "edge_mer" else base),
                    (id(node) not in nested),
                    node.lineno,
                )


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(module: str, source: str) -> list[str]:
    """What ``module`` (given its source) imports against the rules above."""
    out = []
    core = under(module, "edge_mer") and not under(
        module, "edge_mer.convert", "edge_mer.calibration"
    )
    for name, top, line in imports(source, module):
        where = f"{module}:{line} imports {name}"
        if core and under(name, "torch"):
            out.append(f"{where}: the core never imports torch")
        if core and top and under(name, "edge_mer.convert", "edge_mer.calibration"):
            out.append(f"{where} at module level: import it inside the function that needs it")
        if under(module, "edge_mer.pipeline", "edge_mer.runners") and under(
            name, "edge_mer.service", "edge_mer.bench", "edge_mer.cli"
        ):
            out.append(f"{where}: pipeline stages and runners never reach up")
        contract = any(under(module, f"edge_mer.{c}") for c in CONTRACTS)
        allowed = ("edge_mer.__version__", *(f"edge_mer.{c}" for c in CONTRACTS))
        if (
            contract
            and top
            and name != "edge_mer"
            and under(name, "edge_mer")
            and not under(name, *allowed)
        ):
            out.append(f"{where}: a contract imports only other contracts")
        if under(module, "edge_mer.calibration") and under(name, "edge_mer.convert"):
            out.append(f"{where}: calibration never imports convert")
    return out


def package_modules() -> list[tuple[str, Path]]:
    return [
        (module_name(p), p)
        for folder in FOLDERS
        for p in sorted((REPO / folder).rglob("*.py"))
        if "__pycache__" not in p.parts
    ]


def test_the_package_keeps_its_layers() -> None:
    found = [v for mod, path in package_modules() for v in violations(mod, path.read_text())]
    assert not found, "\n".join(found)


MAX_LINES = 450  # a module over this carries two ideas: split it


def test_no_module_outgrows_one_idea() -> None:
    long = [
        f"{path.relative_to(REPO)}: {n} lines"
        for _, path in package_modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"over {MAX_LINES} lines: " + ", ".join(long)


def test_layers_cover_the_tree() -> None:
    names = {mod for mod, _ in package_modules()}
    for expected in ("edge_mer.pipeline.live", "edge_mer.runners.trt", "edge_mer.service.daemon"):
        assert expected in names


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("edge_mer.pipeline.face", "import torch\n", "never imports torch"),
        ("edge_mer.bench.run", "def f():\n    import torch.nn\n", "never imports torch"),
        ("edge_mer.service.daemon", "from edge_mer.convert import x\n", "module level"),
        ("edge_mer.pipeline.live", "def f():\n    from edge_mer.service import d\n", "reach up"),
        ("edge_mer.runners.ort", "from edge_mer.cli.common import errors\n", "reach up"),
        ("edge_mer.bundle", "from edge_mer.pipeline.ring import Ring\n", "only other contracts"),
        ("edge_mer.calibration.synth", "def f():\n    import edge_mer.convert\n", "calibration"),
        ("edge_mer.pipeline.sinks", "from . import ring\n", None),
        ("edge_mer.cli.run_cmd", "def f():\n    from edge_mer.convert import x\n", None),
        ("edge_mer.convert.train", "import torch\nfrom edge_mer.calibration import s\n", None),
    ],
)
def test_the_rules_catch_what_they_forbid(module: str, source: str, rule: str | None) -> None:
    found = violations(module, source)
    if rule is None:
        assert not found
    else:
        assert found and rule in found[0], found
