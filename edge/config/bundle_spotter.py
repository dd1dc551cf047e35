"""The bundle's spotter defaults: the ``[spotter]`` settings chosen when the model was trained.

``edge-mer train`` chooses the spotter's settings on the training subjects' streams and
``edge-mer convert`` records them in the manifest (``spotter.settings``, with where they
were chosen in ``spotter.chosen_on``). A config built for a bundle takes them as its
``[spotter]`` defaults; every key the config (or a command-line flag) sets itself wins.
Precedence, per key: the config's value > the manifest's > the built-in default.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from edge_mer.config.loader import ConfigError, explain
from edge_mer.config.models import Config, SpotterConfig

__all__ = ["apply_bundle_spotter", "manifest_spotter", "spotter_origins"]


def manifest_spotter(manifest: dict[str, Any], where: str) -> dict[str, Any]:
    """The manifest's spotter settings (keys this edge-mer knows; a newer writer's others
    are ignored), checked as a ``[spotter]`` table; {} when the manifest has none."""
    block = manifest.get("spotter") or {}
    settings = block.get("settings") if isinstance(block, dict) else None
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise ConfigError("spotter.settings must be an object", file=where)
    known = {k: v for k, v in settings.items() if k in SpotterConfig.model_fields}
    try:
        SpotterConfig.model_validate(known)
    except ValidationError as exc:
        key, message = explain(exc, SpotterConfig)
        raise ConfigError(message, file=where, key=f"spotter.settings.{key}") from None
    return known


def spotter_origins(explicit: set[str], manifest: dict[str, Any]) -> dict[str, str]:
    """Where each ``[spotter]`` key's value comes from: ``config``, ``bundle`` or
    ``default``."""
    return {
        k: "config" if k in explicit else "bundle" if k in manifest else "default"
        for k in SpotterConfig.model_fields
    }


def apply_bundle_spotter(cfg: Config) -> Config:
    """``cfg`` with the bundle's spotter settings under the keys its ``[spotter]`` table
    does not set (the bundle must open: the config was validated with its files)."""
    from edge_mer.bundle import Bundle

    bundle = Bundle.open(cfg.model.bundle, verify_hashes=False)
    where = str(bundle.path / "manifest.json")
    defaults = manifest_spotter(bundle.manifest, where)
    explicit = set(cfg.spotter.model_fields_set)
    if not defaults or set(defaults) <= explicit:
        return cfg
    own = {k: getattr(cfg.spotter, k) for k in explicit}
    try:
        merged = SpotterConfig.model_validate({**defaults, **own})
    except ValidationError as exc:
        key, message = explain(exc, SpotterConfig)
        raise ConfigError(
            f"{message} (the bundle's manifest sets "
            + ", ".join(f"{k} = {v}" for k, v in defaults.items() if k not in explicit)
            + "; set the other keys of [spotter] too)",
            key=f"spotter.{key}",
        ) from None
    return cfg.model_copy(update={"spotter": merged})
