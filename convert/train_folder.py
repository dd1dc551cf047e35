"""``edge-mer train``: a dataset folder (clips, and the streams beside them) -> checkpoint.

The folder is a CASME II-layout root; if it holds ``streams/`` (what ``edge-mer synth``
writes: one continuous stream per training subject with its ground truth, see
:mod:`edge_mer.calibration.stream_files`), training also learns from them what a stream
holds between micro-expressions (:mod:`edge_mer.convert.train_streams`), and the spotter's
settings are chosen on them and saved with the checkpoint. Without streams (a real dataset
of clips) it trains on the clips as before.

Registry models get the stream recipe's defaults where their config does not say
otherwise (:data:`TRAIN_DEFAULTS`): a 4x4 feature grid, and for the recurrent heads the
window-start reference; with streams that hold macro-expressions, also a ``macro`` class
(:func:`with_macro_class`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_mer.convert.train import TrainOptions, fit
from edge_mer.convert.train_data import load_clip_folder, resolve_background
from edge_mer.convert.train_model import build_model
from edge_mer.convert.train_streams import load_streams
from edge_mer.errors import InputError

__all__ = ["TRAIN_DEFAULTS", "train_config", "train_folder"]

# What `edge-mer train` sets for registry models unless the config sets it (docs/spotting.md):
# where on the face a change happens (4x4 grid), and motion rather than faces (reference).
TRAIN_DEFAULTS: dict[str, Any] = {"pool": 4, "reference": "window-start"}


def train_config(config: dict[str, Any], factory: str | None) -> dict[str, Any]:
    """``config`` with :data:`TRAIN_DEFAULTS` filled in where the registry arch has the key
    and the config does not set it (a factory's config is left alone); a default grid
    larger than the CNN's output map for a small input shrinks to what fits."""
    if factory is not None:
        return dict(config)
    from edge_mer.convert.registry import build, resolve_config

    keys = resolve_config(config)  # the arch's keys (and a check of the config)
    out = {**{k: v for k, v in TRAIN_DEFAULTS.items() if k in keys}, **config}
    if "pool" not in config:  # the largest grid up to 4x4 that the CNN's output map allows
        for pool in range(int(out["pool"]), 1, -1):
            try:
                build({**out, "pool": pool})
                return {**out, "pool": pool}
            except InputError:
                continue
        out["pool"] = 1
    return out


def with_macro_class(
    config: dict[str, Any],
    asked: dict[str, Any],
    factory: str | None,
    labels: list[str],
    streams: Sequence[Any],
) -> dict[str, Any]:
    """``config`` with a ``macro`` class after ``labels`` when the streams hold
    macro-expressions, the model has a background class and the config (``asked``) did not
    choose its labels: the spotter counts it as background and vetoes micro events that go
    on into a macro-expression (:mod:`edge_mer.pipeline.spotter`)."""
    from edge_mer.pipeline.spotter import MACRO_LABEL

    has_macro = any(e.kind == "macro" for s in streams for e in s.events)
    if factory is not None or "labels" in asked or not has_macro or "none" not in labels:
        return config
    if MACRO_LABEL in labels:
        return config
    return {**config, "labels": [*labels, MACRO_LABEL]}


def train_folder(
    clips_root: Path,
    out: Path,
    opts: TrainOptions | None = None,
    say: Callable[[str], None] | None = None,
    *,
    val_subjects: Sequence[str] = (),
    factory: str | None = None,
    streams: bool = True,
) -> dict[str, Any]:
    """Train on ``clips_root`` and write ``out`` (safetensors); return the summary.

    ``val_subjects``: subjects held out of training and used as the validation set
    (``opts.selection = "inner-val"`` then picks the epoch on them); their streams are left
    out too. ``streams=False`` ignores ``streams/``.
    """
    opts = opts or TrainOptions()
    say = say or (lambda _m: None)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"--out {str(out)!r} must end in .safetensors")
    if not out.parent.is_dir():
        raise InputError(f"the folder of --out {str(out)!r} does not exist")
    opts.check()
    config = train_config(opts.config, factory)
    probe = build_model(config, factory)
    from edge_mer.convert.protocol import model_spec

    spec, labels, _ = model_spec(probe, "the model to train")
    background = resolve_background(opts.background, labels)
    root = Path(clips_root)
    clips = load_clip_folder(root, spec, labels, opts.label_map, background, say)
    found = load_streams(root, spec, labels, opts.label_map, say) if streams else []
    held = {str(s) for s in val_subjects}
    missing = held - {c.subject for c in clips}
    if missing:
        raise InputError(
            f"--val-subjects {sorted(missing)} are not subjects of {str(clips_root)!r} "
            f"(it has {sorted({c.subject for c in clips})})"
        )
    val = [c for c in clips if c.subject in held]
    config = with_macro_class(config, opts.config, factory, labels, found)
    result = fit(
        [c for c in clips if c.subject not in held],
        config,
        options=opts,
        validation=val or None,
        factory=factory,
        say=say,
        streams=[s for s in found if s.subject not in held],
    )
    result.save(out)
    if result.spotter:
        st = result.spotter["settings"]
        on = result.spotter["chosen_on"]
        say(
            f"spotter chosen on the {on['streams']} training streams (micro F1 {on['f1']:.2f}): "
            + ", ".join(f"{k} {v}" for k, v in st.items())
        )
    say(f"checkpoint written to {out}")
    return {**result.summary, "checkpoint": str(out), "spotter": result.spotter}
