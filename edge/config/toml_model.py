"""The base of every TOML-backed model: strict, closed, described, and writable as TOML.

A :class:`TomlModel` is a frozen pydantic model with ``extra="forbid"`` and strict types
(``"5"`` is not an integer, ``true`` is not a number), as Frigate's config is. Every field
carries a ``description``: :func:`describe_fields` lists them (``edge-mer validate-config
--keys``) and :meth:`TomlModel.to_toml` writes them back as comments.

Field types that TOML cannot give strictly come as annotated aliases: :data:`ConfigPath`
(a string, resolved against the file's folder), :data:`NonEmptyStr`, and :func:`int_tuple`
(a TOML array of a fixed length). Checks that involve several fields raise
:func:`field_error` from a validator, so the message still names one key.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError, PydanticUndefined

__all__ = [
    "ConfigPath",
    "NonEmptyStr",
    "TomlModel",
    "describe_fields",
    "field_error",
    "int_tuple",
    "number",
    "toml_value",
    "type_name",
    "value_range",
]

#: The ``type`` of errors raised by :func:`field_error` (the loader reads ``ctx["key"]``).
FIELD_ERROR = "edge_mer"


def field_error(message: str, key: str | None = None) -> PydanticCustomError:
    """An error for a validator to raise: ``key`` (relative to the model that validates,
    dotted) names the field the user must change; None means the field being validated."""
    return PydanticCustomError(FIELD_ERROR, "{message}", {"message": message, "key": key})


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        return value  # the strict Path check names the type
    if not value:
        raise field_error("must not be empty")
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir") or Path.cwd()
        path = Path(base) / path
    return path.resolve()


#: A path given as a string; relative paths resolve against the validation context's
#: ``base_dir`` (the TOML file's folder), else the working directory.
ConfigPath = Annotated[Path, BeforeValidator(_resolve_path)]

#: A string that must not be empty.
NonEmptyStr = Annotated[str, Field(min_length=1)]


def _array_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def int_tuple(n: int) -> Any:
    """``tuple[int, ...]`` of exactly ``n`` integers, given as a TOML array."""
    return Annotated[tuple[(int,) * n], BeforeValidator(_array_to_tuple)]  # type: ignore[misc]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


class TomlModel(BaseModel):
    """Strict, closed, frozen. A required sub-table that is absent validates as an empty
    table, so the message names the missing key inside it (``model.bundle``), not the table.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _absent_tables_are_empty(cls, data: Any) -> Any:
        if isinstance(data, dict):
            missing = {
                name: {}
                for name, f in cls.model_fields.items()
                if f.is_required() and _is_model(f.annotation) and name not in data
            }
            if missing:
                data = {**data, **missing}
        return data

    def flatten(self) -> dict[str, Any]:
        """Key path -> value for every leaf (e.g. ``"sinks.mqtt.port": 1883``)."""
        return dict(_leaves(self, ""))

    def changed_keys(self, other: TomlModel) -> list[str]:
        """Key paths whose values differ from ``other`` (for a reload's log line)."""
        a, b = self.flatten(), other.flatten()
        return [k for k in a if a[k] != b.get(k)]

    def to_toml(self, header: str = "") -> str:
        """The model as TOML with each key's description as a comment; unset (None) keys
        are written commented out. Validating the result gives back an equal model."""
        out = [f"# {line}" for line in header.splitlines()]
        if out:
            out.append("")
        _emit(self, "", out)
        return "\n".join(out).rstrip() + "\n"


def describe_fields(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every leaf key, in file order."""
    rows = []
    for name, f in cls.model_fields.items():
        key = f"{prefix}{name}"
        if _is_model(f.annotation):
            rows.extend(describe_fields(f.annotation, key + "."))  # type: ignore[arg-type]
            continue
        if f.default is not PydanticUndefined:
            default = toml_value(f.default)
        elif f.default_factory is not None:
            default = toml_value(f.default_factory())  # type: ignore[call-arg]
        else:
            default = "required"
        kind = type_name(f.annotation)
        bounds = value_range(f.metadata)
        rows.append((key, f"{kind}, {bounds}" if bounds else kind, default, f.description or ""))
    return rows


def number(v: Any) -> str:
    """A bound as people write it: ``1`` rather than ``1.0``."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else repr(v)


def value_range(metadata: list[Any]) -> str:
    """A field's bounds (its ``ge``/``gt``/``le``/``lt`` constraints): ``1..64``, ``> 0``."""
    b = {k: getattr(m, k) for m in metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
    if "ge" in b and "le" in b:
        return f"{number(b['ge'])}..{number(b['le'])}"
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{words[k]} {number(v)}" for k, v in b.items())


def type_name(tp: Any) -> str:
    """How a field's type reads in a message: ``an integer``, ``'a' | 'b'``, ``[...]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is tuple:
        return f"[{', '.join(type_name(a) for a in args if a is not Ellipsis)}]"
    if origin is list:
        return f"a list of {type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in rest)
    if _is_model(tp):
        return "a table"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path (string)",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def toml_value(v: Any) -> str:
    """``v`` as a TOML literal (None as ``unset``, for listings)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if v is None:
        return "unset"
    return json.dumps(str(v), ensure_ascii=False)


def _emit(obj: BaseModel, prefix: str, out: list[str]) -> None:
    nested = []
    fields = type(obj).model_fields
    for name, f in fields.items():
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            nested.append((name, value))
            continue
        out.append(f"# {f.description or ''}")
        out.append(f"# {name} = ..." if value is None else f"{name} = {toml_value(value)}")
    if prefix and not nested:
        out.append("")
    for name, value in nested:
        table = f"{prefix}{name}"
        if any(not isinstance(getattr(value, g), BaseModel) for g in type(value).model_fields):
            doc = (type(value).__doc__ or "").strip().splitlines()[0].split("]: ", 1)[-1]
            out.extend([f"[{table}]", f"# {doc}".rstrip()])
        _emit(value, table + ".", out)


def _leaves(obj: BaseModel, prefix: str) -> Iterator[tuple[str, Any]]:
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value
