"""Do the tests' fake TensorRT classes have the members and arities of the real ones?

:func:`fake_members` reads a fake class's public surface from its test module (AST): methods
with their argument counts, properties, instance attributes set in ``__init__``, aliases, and
``SimpleNamespace`` enums. :func:`check_fake` compares it with one real class in the
:class:`trt_api.Api` of every checked version.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass

from trt_api import Api


@dataclass(frozen=True)
class FakeMember:
    name: str
    kind: str  # method | property | attribute | enum (a SimpleNamespace of members)
    required: int = 0
    maximum: int = 0
    members: tuple[str, ...] = ()


def fake_members(source: str, class_name: str) -> list[FakeMember]:
    """The public surface of a fake class in a test module (found at any nesting depth)."""
    tree = ast.parse(source)
    cls = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name),
        None,
    )
    if cls is None:
        raise ValueError(f"no class {class_name!r}")
    out = []
    for item in cls.body:
        if isinstance(item, ast.FunctionDef):
            decorators = {ast.unparse(d) for d in item.decorator_list}
            if item.name.startswith("_") and item.name != "__init__":
                continue
            params = item.args.args[0 if "staticmethod" in decorators else 1 :]
            n, defaults = len(params), len(item.args.defaults)
            kind = "property" if "property" in decorators else "method"
            out.append(FakeMember(item.name, kind, n - defaults, n))
            if item.name == "__init__":  # instance attributes stand in for properties
                for node in ast.walk(item):
                    if (
                        isinstance(node, ast.Attribute)
                        and isinstance(node.ctx, ast.Store)
                        and isinstance(node.value, ast.Name)
                        and node.value.id == "self"
                    ):
                        out.append(FakeMember(node.attr, "attribute"))
        elif isinstance(item, ast.Assign):
            for target in item.targets:
                if not isinstance(target, ast.Name) or target.id.startswith("_"):
                    continue
                value = item.value
                if isinstance(value, ast.Call) and ast.unparse(value.func) == "SimpleNamespace":
                    keys = tuple(k.arg for k in value.keywords if k.arg)
                    out.append(FakeMember(target.id, "enum", members=keys))
                elif isinstance(value, ast.Name):
                    alias = next((m for m in out if m.name == value.id), None)
                    if alias is not None:
                        out.append(FakeMember(target.id, alias.kind, alias.required, alias.maximum))
    return out


def check_fake(
    members: list[FakeMember], real: str, apis: list[Api], internal: Callable[[str], bool]
) -> list[str]:
    """Problems of one fake class against the real class ``real`` ("" = the module) in any of
    ``apis``. ``internal(name)`` says a fake-only helper name is allowed (not TensorRT's)."""
    problems = []
    prefix = f"{real}." if real else ""
    for m in members:
        path = f"{prefix}{m.name}"
        methods = [s for a in apis for s in (a.methods if real else a.functions).get(path, [])]
        is_prop = any(path in a.properties for a in apis)
        enum_members = {
            e.rsplit(".", 1)[-1] for a in apis for e in a.enums if e.startswith(path + ".")
        }
        if m.kind == "method":
            if not methods:
                if not internal(m.name):
                    problems.append(f"{path}: the fake has a method TensorRT does not have")
            elif not any(s.accepts(n) for s in methods for n in range(m.required, m.maximum + 1)):
                have = "/".join(dict.fromkeys(s.arity() for s in methods))
                problems.append(
                    f"{path}: the fake takes {m.required}-{m.maximum} argument(s), TensorRT {have}"
                )
        elif m.kind == "property":
            if not is_prop:
                what = "a method" if methods else "no such member"
                problems.append(f"{path}: a property in the fake, {what} in TensorRT")
        elif m.kind == "attribute":
            if methods and not is_prop:
                problems.append(f"{path}: a plain attribute in the fake, a method in TensorRT")
        elif m.kind == "enum":
            missing = [k for k in m.members if k not in enum_members]
            if missing:
                problems.append(f"{path}: the fake has {missing}, which TensorRT's enum lacks")
    return problems
