"""The daemon's config: typed models (:mod:`.models`) read from TOML by a generic loader
(:mod:`.loader`) that the experiment study files share.

Loading rejects unknown keys with the full key path and a suggestion, wrong types with
the expected type and the value given, values out of range, and a bundle that is missing
or broken. Every failure is one :class:`ConfigError` line naming the file, the line, the
key path and the fix. Relative paths in a file resolve against the file's folder, so the
loaded config, and :meth:`Config.to_toml`, hold absolute paths.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from edge_mer.config.bundle_spotter import apply_bundle_spotter
from edge_mer.config.loader import ConfigError, load_toml_model, read_toml, validate_data
from edge_mer.config.models import SOURCE_SCHEMES, Config, SpotterConfig
from edge_mer.config.toml_model import TomlModel
from edge_mer.config.toml_model import describe_fields as _describe_fields

__all__ = [
    "SOURCE_SCHEMES",
    "Config",
    "ConfigError",
    "SpotterConfig",
    "TomlModel",
    "config_from_args",
    "config_from_dict",
    "describe_fields",
    "load_config",
    "load_toml_model",
    "read_toml",
    "validate_data",
]

EXAMPLE = "systemd/edge-mer.toml"


def describe_fields(cls: type[TomlModel] = Config, prefix: str = "") -> list[tuple[str, ...]]:
    """(key path, type, default, description) for every leaf key of ``cls``, in file order."""
    return _describe_fields(cls, prefix)


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read, validate and return the daemon config at ``path``.

    Args:
        check_files: also open the bundle (``Bundle.open``, hashes per ``model.verify_hashes``)
            and check other referenced files exist, and take the bundle's spotter settings
            (manifest ``spotter``) for the ``[spotter]`` keys the file does not set
            (:mod:`.bundle_spotter`). Off only for rendering/inspection.

    Raises:
        ConfigError: unreadable file, TOML syntax (with line), unknown key, wrong type,
            value out of range, missing or broken bundle.
    """
    cfg = load_toml_model(path, Config, context={"check_files": check_files}, example=EXAMPLE)
    return apply_bundle_spotter(cfg) if check_files else cfg


def config_from_dict(
    data: dict[str, Any],
    *,
    origin: str = "config",
    base_dir: Path | None = None,
    text: str | None = None,
    check_files: bool = True,
) -> Config:
    """Validate a parsed TOML document (see :func:`load_config`)."""
    cfg = validate_data(
        data,
        Config,
        origin=origin,
        text=text,
        base_dir=base_dir,
        context={"check_files": check_files},
    )
    return apply_bundle_spotter(cfg) if check_files else cfg


def config_from_args(
    bundle: str | Path,
    source: str,
    *,
    events: str | Path | None = None,
    stdout: bool | None = None,
    runner: str = "auto",
    tables: dict[str, dict[str, Any]] | None = None,
    check_files: bool = True,
) -> Config:
    """A config from command-line flags (``edge-mer run --bundle B --source URI``).

    Args:
        events: JSON-lines events file; ``stdout`` defaults to on when it is not given.
        tables: more keys as parsed TOML, e.g. ``{"face": {"detector": "none"}}``.
    """
    data: dict[str, Any] = copy.deepcopy(tables or {})
    data.setdefault("model", {}).update(bundle=str(bundle), runner=runner)
    data.setdefault("source", {})["uri"] = source
    sinks = data.setdefault("sinks", {})
    if events is not None:
        sinks.setdefault("jsonl", {})["path"] = str(events)
    sinks.setdefault("stdout", {})["enabled"] = events is None if stdout is None else stdout
    return config_from_dict(data, origin="command line", check_files=check_files)
