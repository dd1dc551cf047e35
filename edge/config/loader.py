"""Load a TOML file into a pydantic model; every failure is one line naming file, line, key.

    load_toml_model("edge-mer.toml", Config)  ->  Config(...)
    ConfigError: edge-mer.toml:8: sinks.mqtt.hots: unknown key; did you mean 'host'?

Generic: the daemon config (:mod:`edge_mer.config.models`) and the experiment study files
use the same loader with their own :class:`~edge_mer.config.toml_model.TomlModel` classes.
Pydantic finds every problem; :func:`explain` turns the first one into the words of this
project: the key path, the expected type or range and the value given, a suggestion for a
misspelt key or choice, and :func:`line_of` the line where the key is written.
"""

from __future__ import annotations

import difflib
import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from edge_mer.config.toml_model import FIELD_ERROR, number, type_name
from edge_mer.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "explain",
    "line_of",
    "load_toml_model",
    "read_toml",
    "validate_data",
]

M = TypeVar("M", bound=BaseModel)


class ConfigError(InputError):
    """A config file or value that cannot be used: names the file, key path and the fix."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file, self.key, self.line = file, key, line
        where = file or "config"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def read_toml(path: str | Path, *, example: str = "") -> tuple[dict[str, Any], str]:
    """The parsed document and its text.

    Raises:
        ConfigError: missing or unreadable file, or a TOML syntax error (with its line).
            ``example`` is named in the message for a missing file.
    """
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        fix = f" (see {example})" if example else ""
        raise ConfigError(f"no such file; pass an existing TOML file{fix}", file=label) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc})", file=label) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            f"TOML syntax error: {msg}; fix the file",
            file=label,
            line=int(m.group(1)) if m else None,
        ) from None


def load_toml_model(
    path: str | Path, model: type[M], *, context: dict[str, Any] | None = None, example: str = ""
) -> M:
    """Read the TOML file at ``path`` and validate it as ``model``.

    Relative :data:`~edge_mer.config.toml_model.ConfigPath` values resolve against the
    file's folder. ``context`` reaches the model's validators (``info.context``).

    Raises:
        ConfigError: ``file:line: key.path: message`` for the first problem found.
    """
    data, text = read_toml(path, example=example)
    return validate_data(
        data,
        model,
        origin=str(path),
        text=text,
        base_dir=Path(path).resolve().parent,
        context=context,
    )


def validate_data(
    data: Any,
    model: type[M],
    *,
    origin: str = "config",
    text: str | None = None,
    base_dir: Path | None = None,
    context: dict[str, Any] | None = None,
) -> M:
    """Validate parsed TOML (or any dict) as ``model``; ``origin`` names the file in errors
    and ``text``, when given, lets them point at a line."""
    ctx = {"base_dir": base_dir or Path.cwd(), **(context or {})}
    try:
        return model.model_validate(data, context=ctx)
    except ValidationError as exc:
        key, message = explain(exc, model)
        line = line_of(text, key) if text else None
        raise ConfigError(message, file=origin, key=key or None, line=line) from None


# ------------------------------------------------------------------------- messages


def explain(exc: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(key path, message) for the first problem in ``exc``; unknown keys come first,
    because a misspelt key also makes its correct spelling look missing."""
    errors = exc.errors(include_url=False)
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    return describe_error(errors[0], model)


def describe_error(err: Any, model: type[BaseModel]) -> tuple[str, str]:
    """(key path, message) for one entry of ``ValidationError.errors()``."""
    kind, loc, value = err["type"], tuple(err["loc"]), err.get("input")
    ctx = err.get("ctx") or {}
    if kind == FIELD_ERROR and ctx.get("key"):
        loc = (*loc, *str(ctx["key"]).split("."))
    if kind == "missing" and loc and isinstance(loc[-1], int):
        kind, loc = "too_short", loc[:-1]  # a fixed-length array with too few items
    if isinstance(value, tuple):
        value = list(value)  # TOML arrays arrive as tuples after a tuple field's pre-step
    key = key_path(loc)
    tp = annotation_at(model, loc)
    got = f"got {value!r} ({type(value).__name__})"
    if kind == FIELD_ERROR:
        return key, str(ctx.get("message", err["msg"]))
    if kind == "extra_forbidden":
        parent = _unwrap(annotation_at(model, loc[:-1]))
        names = list(_fields(parent)) if _is_model(parent) else []
        close = suggest(str(loc[-1]), names)
        fix = f"did you mean {close!r}?" if close else f"valid keys: {', '.join(names)}"
        return key, f"unknown key; {fix}" if names else "unknown key"
    if kind == "missing":
        desc = _field_description(model, loc)
        return key, f"missing required key{'; ' + desc if desc else ''}"
    if kind == "literal_error":
        choices = typing.get_args(_unwrap(tp)) if tp is not None else ()
        close = suggest(str(value), [str(c) for c in choices])
        hint = f"; did you mean {close!r}?" if close else ""
        expected = ", ".join(repr(c) for c in choices) or ctx.get("expected", "?")
        return key, f"{value!r} is not one of {expected}{hint}"
    for bound, words in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx and kind.endswith(("_than", "_than_equal")):
            return key, f"{value!r} is out of range: must be {words} {number(ctx[bound])}"
    if kind == "finite_number":
        return key, f"expected a finite number, {got}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return key, "must not be empty"
    if kind in ("too_short", "too_long") and typing.get_origin(_unwrap(tp)) is list:
        n = ctx.get("actual_length")
        if kind == "too_short" and ctx.get("min_length") == 1:
            return key, "must not be empty"
        lo, hi = ctx.get("min_length"), ctx.get("max_length")
        need = f"at least {lo}" if kind == "too_short" else f"at most {hi}"
        return key, f"needs {need} items, got {n}"
    if kind.endswith(("_type", "_parsing")) or kind in ("is_instance_of", "too_short", "too_long"):
        want = type_name(tp) if tp is not None else kind.removesuffix("_type")
        return key, f"expected {want}, {got}"
    return key, f"{err['msg']}, {got}"


def suggest(word: str, choices: list[str]) -> str | None:
    """The choice ``word`` was probably meant to be (case and small typos forgiven)."""
    lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def key_path(loc: tuple[Any, ...]) -> str:
    """``("face", "roi", 2)`` -> ``face.roi[2]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            tp = args[0]
        elif args and type(None) in args and origin is not Literal:
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def annotation_at(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The declared type at ``loc`` inside ``model`` (None where the path leaves it)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if _is_model(tp) and isinstance(part, str) and part in _fields(tp):
            tp = _fields(tp)[part].annotation
        elif origin is tuple and isinstance(part, int):
            variadic = len(args) == 2 and args[1] is Ellipsis
            tp = args[0] if variadic else args[min(part, len(args) - 1)]
        elif origin is list and isinstance(part, int):
            tp = args[0]
        elif origin is dict and isinstance(part, str):
            tp = args[1]
        else:
            return None
    return tp


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key written in the file (the alias, where one is set)."""
    return {f.alias or name: f for name, f in model.model_fields.items()}


def _field_description(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    parent = _unwrap(annotation_at(model, loc[:-1]))
    if _is_model(parent) and loc and loc[-1] in _fields(parent):
        return _fields(parent)[loc[-1]].description or ""
    return ""


# ------------------------------------------------------------------------- lines

_HEADER = re.compile(r"^\[\[?\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_BARE_OR_QUOTED = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
_KEY = re.compile(rf"^({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")


def _parts(dotted: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.findall(rf"{_BARE_OR_QUOTED}", dotted)]


def line_of(text: str | None, key: str) -> int | None:
    """The line (1-based) where ``key`` (``a.b.c`` or ``a.b[2]``) is written in ``text``;
    failing that, the line of the nearest enclosing table that is written; else None.

    Best effort over ``[table]`` headers and ``a.b = ...`` keys (dotted keys and inline
    tables included); a key that is not written (a missing one) points at its table.
    """
    if not text or not key:
        return None
    target = _parts(re.sub(r"\[\d+\]", "", key))
    found: dict[int, int] = {}  # matched prefix length -> first line
    table: list[str] = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group(1))
            path = table
        else:
            m = _KEY.match(line)
            if not m:
                continue
            path = table + _parts(m.group(1))
        if path == target[: len(path)]:
            found.setdefault(len(path), no)
        elif target == path[: len(target)]:
            found.setdefault(len(target), no)  # a key inside the table `key` names
    return found[max(found)] if found else None
