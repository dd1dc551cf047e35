"""Two-stage training of any protocol model, as MER researchers do it.

1. The CNN (with a temporary linear probe) on frames: by default frame pairs from one clip,
   (neutral, near-apex) carrying the emotion, classified from their feature difference.
2. The temporal head on frozen per-frame features: every frame of every clip goes through
   the CNN ONCE per training run (the feature cache), then the head trains on windows of
   ``input.window`` frames cut from the cached features, for as many epochs as asked.
3. Optionally, an end-to-end fine-tune of the whole model on frame windows.

Library API (what ``edge-mer train`` and the experiment runner call)::

    result = fit(train_clips, config, options=TrainOptions(...), validation=val_clips)
    result.model      # the trained model, eval mode, follows the streaming protocol
    result.summary    # per-stage, per-epoch figures (validation UF1/UAR/accuracy/loss)
    result.save(path) # safetensors with the config in the metadata: `edge-mer convert` reads it

``config`` is a registry config (``arch`` picks the architecture) or, with ``factory``,
whatever the user's ``build(config)`` takes. Any protocol model trains: the CNN's
parameters are those ``encode`` uses, the head's all the others; a model without
``classify_features`` has its head trained through ``step`` unrolled over the window.

Reproducibility: with the same seed, data, options, thread count (``threads``), torch
build and CPU, two runs give bit-identical weights (every random draw comes from generators
seeded from ``seed``; global RNG state is restored afterwards). Not bit-reproducible across
thread counts (parallel reductions sum in another order), torch versions, CPU instruction
sets (oneDNN/MKL pick other kernels) or GPUs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_mer.calibration.labels import MEGC3_WITH_BACKGROUND
from edge_mer.convert.checkpoint import save_checkpoint
from edge_mer.convert.train_data import (
    SequenceData,
    TrainClip,
    check_clips,
    frame_set,
    jitter,
    pair_set,
    resolve_background,
    sequence_data,
    window_index,
)
from edge_mer.convert.train_loop import SELECTIONS, reproducible, run_stage, validation_figures
from edge_mer.convert.train_model import build_model, classifier, encode_all, split_parameters
from edge_mer.convert.train_streams import (
    TrainStream,
    check_streams,
    stream_pairs,
    stream_windows,
)
from edge_mer.convert.train_tune import tune_spotter
from edge_mer.errors import DataError, InputError

log = logging.getLogger(__name__)

__all__ = ["TrainClip", "TrainOptions", "TrainResult", "TrainStream", "fit", "jitter", "train"]

Say = Callable[[str], None]


@dataclass
class TrainOptions:
    """Everything a training run is asked to do (the ``[train]`` table of a study, the
    ``edge-mer train`` flags). ``rnn_epochs`` is the first release's name of ``head_epochs``."""

    config: dict[str, Any] = field(default_factory=dict)  # for train(): the model config
    cnn_epochs: int = 6
    head_epochs: int = 30
    finetune_epochs: int = 0  # end-to-end, after stage 2; 0 = off
    batch_size: int = 64
    lr: float = 2e-3
    finetune_lr: float = 2e-4
    seed: int = 0
    selection: str = "fixed"  # "fixed" | "inner-val" (needs validation clips)
    patience: int = 10  # inner-val: epochs without a better validation UF1 before stopping
    background: str | None = "auto"  # "auto": "none" when it is a label, else no background
    label_map: dict[str, str] = field(default_factory=lambda: dict(MEGC3_WITH_BACKGROUND))
    stage1: str = "pairs"  # "pairs": (neutral, apex) feature differences | "frames"
    augment: bool = True  # independent per-frame shift and gain in stage 1
    cache_features: bool = True  # stage 2 on features computed once; False: every epoch
    threads: int | None = None  # torch threads during training (None: leave as is)
    rnn_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.rnn_epochs is not None:
            self.head_epochs = self.rnn_epochs

    def check(self) -> None:
        for key in ("cnn_epochs", "head_epochs", "batch_size", "patience"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"train option {key}={value!r} must be an integer >= 1")
        if not isinstance(self.finetune_epochs, int) or self.finetune_epochs < 0:
            raise InputError(f"train option finetune_epochs={self.finetune_epochs!r} must be >= 0")
        if self.selection not in SELECTIONS:
            raise InputError(f"train option selection={self.selection!r}: one of {SELECTIONS}")
        if self.stage1 not in ("pairs", "frames"):
            raise InputError(f"train option stage1={self.stage1!r}: 'pairs' or 'frames'")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"train option threads={self.threads!r} must be >= 1")


@dataclass
class TrainResult:
    """A trained model (eval mode), the config that rebuilds it, and what training did."""

    model: nn.Module
    config: dict[str, Any]
    summary: dict[str, Any]
    spotter: dict[str, Any] | None = None  # chosen on the training streams (tune_spotter)

    def save(self, path: Path) -> None:
        """Safetensors with the config (and the spotter settings chosen on the training
        streams) in the metadata: ``edge-mer convert`` reads both."""
        save_checkpoint(self.model, Path(path), self.config, spotter=self.spotter)


def fit(
    train: Sequence[TrainClip],
    config: dict[str, Any],
    *,
    options: TrainOptions | None = None,
    validation: Sequence[TrainClip] | None = None,
    factory: str | Callable[[dict[str, Any]], nn.Module] | None = None,
    say: Say | None = None,
    streams: Sequence[TrainStream] | None = None,
) -> TrainResult:
    """Train a model on clips (and streams) in memory; see the module docstring.

    Args:
        train: training clips at the model's fps and size (:class:`TrainClip`).
        config: the model config (registry: ``arch`` + overrides; factory: its own).
        options: epochs, learning rates, ``seed``, ``selection``, ``threads``...
        validation: clips of validation subjects (never test subjects): scored after every
            epoch of stage 2 and the fine-tune; ``selection="inner-val"`` keeps the best.
        factory: ``"file.py:build"``, ``"package.module:build"`` or a callable; None = registry.
        streams: continuous streams of the training subjects (:class:`TrainStream`): the
            background class then learns what a stream holds between micro-expressions
            (:mod:`edge_mer.convert.train_streams`), and the spotter's settings are chosen
            on them (``result.spotter``). Needs a background label.

    Raises:
        InputError: bad options, labels or frame shapes (one line).
    """
    opts = options or TrainOptions()
    opts.check()
    say = say or (lambda _m: None)
    if opts.selection == "inner-val" and not validation:
        raise InputError(
            "selection 'inner-val' needs validation clips (subjects of the training side); "
            "pass validation=..., or use selection 'fixed'"
        )
    started = time.perf_counter()
    with reproducible(opts.seed, opts.threads):
        model = build_model(config, factory)
        result = _fit(model, list(train), list(validation or []), opts, say, list(streams or []))
    spotter = result.pop("spotter_choice", None)
    cfg = dict(getattr(model, "config", None) or config)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return TrainResult(model.eval(), cfg, result, spotter)


def _stage1(
    model: nn.Module,
    cnn_params: list,
    data: SequenceData,
    bg: int | None,
    spec: dict,
    opts: TrainOptions,
    rng: np.random.Generator,
    common: dict[str, Any],
    streams: list[TrainStream],
    labels: list[str],
) -> tuple[Any, int]:
    """The CNN (and a temporary linear probe on its features) on frame pairs or frames."""
    dim = int(model.encode(torch.from_numpy(data.frames[0][:1])).shape[1])
    probe = nn.Linear(dim, common["n_classes"])
    gen = torch.Generator().manual_seed(opts.seed)
    if opts.stage1 == "pairs":
        n_clips = len(data.events)
        parts = []
        if n_clips:
            parts.append(pair_set(data.frames[:n_clips], data.events, bg, rng))
        if streams:
            parts.append(stream_pairs(streams, labels, spec["window"], bg, rng))
        px = np.concatenate([p[0] for p in parts])
        py = np.concatenate([p[1] for p in parts])
        x = torch.from_numpy(px)
        shift = max(1, round(spec["width"] / 32))
        where = " and ".join(w for w, n in (("clips", n_clips), ("streams", len(streams))) if n)
        common["say"](f"stage 1: CNN on {len(px)} frame pairs of the {where} (neutral -> apex)")

        def forward(idx: torch.Tensor) -> torch.Tensor:
            pairs = x[idx]
            if model.training and opts.augment:
                pairs = jitter(pairs, gen, shift)
            f = model.encode(pairs.reshape(-1, *pairs.shape[2:])).reshape(len(idx), 2, -1)
            return probe(f[:, 1] - f[:, 0])

        n_frames = 2 * len(px)
    else:
        if streams:
            raise InputError("training on streams needs stage1 'pairs' (the default)")
        fx, py = frame_set(data.frames, data.events, bg)
        x = torch.from_numpy(fx)
        common["say"](f"stage 1: CNN on {len(fx)} frames")

        def forward(idx: torch.Tensor) -> torch.Tensor:
            return probe(torch.relu(model.encode(x[idx])))

        n_frames = len(fx)
    result = run_stage(
        "stage 1",
        params=[*cnn_params, *probe.parameters()],
        labels=torch.from_numpy(py).long(),
        forward=forward,
        epochs=opts.cnn_epochs,
        lr=opts.lr,
        seed=opts.seed,
        **common,
    )
    return result, n_frames


def _fit(
    model: nn.Module,
    train: list[TrainClip],
    val: list[TrainClip],
    opts: TrainOptions,
    say: Say,
    streams: list[TrainStream],
) -> dict[str, Any]:
    from edge_mer.convert.protocol import model_spec

    spec, labels, _ = model_spec(model, "the model to train")
    k, t = len(labels), spec["window"]
    check_clips(train, labels, spec, "training")
    check_clips(val, labels, spec, "validation")
    check_streams(streams, labels, spec)
    bg_name = resolve_background(opts.background, labels)
    bg = None if bg_name is None else labels.index(bg_name)
    if streams and bg is None:
        raise InputError(
            f"training on streams needs a background label (labels {labels}): add 'none', "
            "the class of everything that is not a micro-expression"
        )
    if not train and not streams:
        raise DataError("nothing to train on: no clips and no streams")
    rng = np.random.default_rng(opts.seed)
    data = sequence_data(train, val, labels, t, bg_name, streams)
    cnn_params, head_params = split_parameters(model, spec)
    common: dict[str, Any] = {
        "n_classes": k,
        "batch_size": opts.batch_size,
        "say": say,
        "snapshot_of": model,
        "train_mode": model.train,
    }
    s1, n_frames = _stage1(model, cnn_params, data, bg, spec, opts, rng, common, streams, labels)
    # Cut after stage 1, which draws its pairs from the same generator first.
    n_clips = len(train)
    parts = []
    if n_clips:
        parts.append(window_index([len(f) for f in data.frames[:n_clips]], data.events, t, bg, rng))
    if streams:
        assert bg is not None
        parts.append(stream_windows(streams, labels, t, bg, rng, first_index=n_clips))
    data.rows = np.concatenate([p[0] for p in parts])
    data.labels = np.concatenate([p[1] for p in parts])

    # Stage 2: the head on frozen features, every frame through the CNN once (the cache).
    for p in cnn_params:
        p.requires_grad_(False)
    model.eval()
    t0 = time.perf_counter()
    vw = data.val_windows
    cached = opts.cache_features
    feats = [encode_all(model, f) for f in data.frames] if cached else []
    val_feats = None
    if cached and len(vw):
        val_feats = encode_all(model, vw.reshape(-1, *vw.shape[2:])).reshape(len(vw), t, -1)
    cache_s = time.perf_counter() - t0
    classify = classifier(model)

    def feature_windows(idx: torch.Tensor) -> torch.Tensor:
        if cached:
            picked = data.rows[idx.numpy()]
            return torch.stack([feats[c][e - t + 1 : e + 1] for c, e in picked])
        was = model.training
        model.eval()  # the frozen CNN as the cache would have run it
        clip = data.frame_windows(idx, t)
        out = encode_all(model, clip.reshape(-1, *clip.shape[2:])).reshape(len(clip), t, -1)
        model.train(was)
        return out

    def validate_head() -> dict:
        x = val_feats
        if x is None:
            x = encode_all(model, vw.reshape(-1, *vw.shape[2:])).reshape(len(vw), t, -1)
        return validation_figures(classify(x), data.val_truth, k)

    say(
        f"stage 2: the temporal head on {len(data.rows)} windows of {t} frames (CNN frozen, "
        f"{'features cached once' if opts.cache_features else 'features recomputed each epoch'})"
    )
    stage = {"selection": opts.selection, "patience": opts.patience, **common}
    s2 = run_stage(
        "stage 2",
        params=head_params,
        labels=torch.from_numpy(data.labels),
        forward=lambda idx: classify(feature_windows(idx)),
        epochs=opts.head_epochs,
        lr=opts.lr,
        seed=opts.seed,
        validate=validate_head if val else None,
        **stage,
    )
    for p in cnn_params:
        p.requires_grad_(True)
    choice = None
    if streams and cached:  # before any fine-tune: the frozen CNN's cached features
        say(f"choosing the spotter's settings on the {len(streams)} training streams")
        choice = tune_spotter(model, feats[n_clips:], streams, labels, spec)

    s3 = None
    if opts.finetune_epochs:  # end to end, on frame windows
        say(f"fine-tune: the whole model on {len(data.rows)} windows of {t} frames")

        def validate_all() -> dict:
            logits = model(torch.from_numpy(data.val_windows))
            return validation_figures(logits, data.val_truth, k)

        s3 = run_stage(
            "fine-tune",
            params=[*cnn_params, *head_params],
            labels=torch.from_numpy(data.labels),
            forward=lambda idx: model(torch.from_numpy(data.frame_windows(idx, t))),
            epochs=opts.finetune_epochs,
            lr=opts.finetune_lr,
            seed=opts.seed,
            validate=validate_all if val else None,
            **stage,
        )
    model.eval()
    if streams and (choice is None or s3 is not None):  # features changed (or never cached)
        say(f"choosing the spotter's settings on the {len(streams)} training streams")
        feats_now = [encode_all(model, st.frames) for st in streams]
        choice = tune_spotter(model, feats_now, streams, labels, spec)
    return {
        "arch": getattr(model, "arch", type(model).__name__),
        "labels": labels,
        "background": bg_name,
        "clips": len(train),
        "streams": len(streams),
        "stream_frames": sum(len(st.frames) for st in streams),
        "spotter_choice": choice,
        "validation_clips": len(val),
        "frames": n_frames,
        "windows": len(data.rows),
        "selection": opts.selection,
        "seed": opts.seed,
        "threads": torch.get_num_threads(),
        "feature_cache": {"enabled": opts.cache_features, "seconds": round(cache_s, 3)},
        "stage1": s1.as_dict(),
        "stage2": s2.as_dict(),
        "finetune": s3.as_dict() if s3 else None,
        "stage1_train_accuracy": s1.train_accuracy,
        "stage2_train_accuracy": s2.train_accuracy,
    }


def train(
    clips_root: Path,
    out: Path,
    opts: TrainOptions | None = None,
    say: Say | None = None,
    *,
    val_subjects: Sequence[str] = (),
    factory: str | None = None,
    streams: bool = True,
) -> dict[str, Any]:
    """Train on a CASME II-layout folder (and the streams in its ``streams/``) and write
    ``out`` (safetensors); return the summary. See :func:`~.train_folder.train_folder`."""
    from edge_mer.convert.train_folder import train_folder

    return train_folder(
        clips_root,
        out,
        opts,
        say,
        val_subjects=val_subjects,
        factory=factory,
        streams=streams,
    )
