"""Two-stage training of the reference CNN-RNN, as MER researchers do it.

Stage 1 trains the CNN (with a temporary linear head) on single frames: frames around the
apex carry the clip's emotion, neutral frames before the onset carry the background label.
Stage 2 freezes the CNN, computes every frame's features once, and trains the recurrent
head on windows of ``input.window`` frames at the model's fps: windows that contain the
apex carry the emotion, windows of neutral frames the background label.

Clips come from a folder in the CASME II layout (``edge-mer synth`` writes one). This is
enough to make the embedded default and the test fixtures; LOSO protocols come later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_mer.calibration.labels import MEGC3_WITH_BACKGROUND
from edge_mer.convert.checkpoint import save_checkpoint
from edge_mer.convert.models import CnnRnn, resolve_config
from edge_mer.errors import DataError, InputError

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    config: dict[str, Any] = field(default_factory=dict)
    cnn_epochs: int = 6
    rnn_epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    label_map: dict[str, str] = field(default_factory=lambda: dict(MEGC3_WITH_BACKGROUND))
    background: str = "none"
    stage1: str = "pairs"  # "pairs": (neutral, apex) feature differences | "frames"
    augment: bool = True  # independent per-frame shift and gain in stage 1


@dataclass
class _Clip:
    frames: np.ndarray  # uint8 [T,H,W,C] at the model fps
    label: int
    onset: int | None  # indices at the model fps, None for background clips
    apex: int | None
    offset: int | None
    subject: str


def _load(
    root: Path, cfg: dict[str, Any], opts: TrainOptions, say: Callable[[str], None]
) -> list[_Clip]:
    from edge_mer.calibration.readers import discover_clips
    from edge_mer.pipeline.preprocess import FramePreprocessor

    inp = cfg["input"]
    labels = cfg["labels"]
    pre = FramePreprocessor(inp["height"], inp["width"], inp["channels"])
    sources = [s for s in discover_clips(root) if s.coded is not None]
    if not sources:
        raise DataError(
            f"no coded clips in {str(root)!r}: training needs a folder in the "
            "CASME II layout (CASME2-coding.csv + subXX/EPxx/imgN.jpg)"
        )
    clips: list[_Clip] = []
    skipped: dict[str, int] = {}
    for i, src in enumerate(sources):
        coded = src.coded
        name = opts.label_map.get(coded.canonical_emotion, coded.canonical_emotion)
        if name not in labels:
            skipped[coded.emotion] = skipped.get(coded.emotion, 0) + 1
            continue
        frames = src.load(pre, fps=inp["fps"])
        ratio = inp["fps"] / coded.fps

        def at(index: int | None, n: int = len(frames), r: float = ratio) -> int | None:
            return None if index is None else min(n - 1, round(index * r))

        background = name == opts.background
        apex = coded.apex_index if coded.apex is not None else None
        if apex is None and not background:
            apex = (coded.onset_index + coded.offset_index) // 2
        clips.append(
            _Clip(
                frames,
                labels.index(name),
                None if background else at(coded.onset_index),
                None if background else at(apex),
                None if background else at(coded.offset_index),
                coded.subject,
            )
        )
        if (i + 1) % 10 == 0:
            say(f"loaded {i + 1}/{len(sources)} clips")
    if skipped:
        log.warning("skipped clips whose emotion maps to no label: %s", skipped)
    present = {c.label for c in clips}
    if len(present) < 2:
        raise DataError(
            f"clips in {str(root)!r} cover {len(present)} of the labels {labels}: "
            "training needs at least two classes"
        )
    return clips


def _frame_set(clips: list[_Clip], bg: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for c in clips:
        if c.apex is None:
            idx = np.arange(0, len(c.frames), 2)
            xs.append(c.frames[idx])
            ys.append(np.full(len(idx), c.label))
            continue
        lo, hi = max(0, c.apex - 1), min(len(c.frames), c.apex + 2)
        xs.append(c.frames[lo:hi])
        ys.append(np.full(hi - lo, c.label))
        if c.onset and c.onset > 0:
            neutral = c.frames[: c.onset : 2]
            xs.append(neutral)
            ys.append(np.full(len(neutral), bg))
    return np.concatenate(xs), np.concatenate(ys)


def _pair_set(
    clips: list[_Clip], bg: int, rng: np.random.Generator, per_clip: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Frame pairs from one clip, ``[M, 2, H, W, C]``: (neutral, near-apex) pairs carry the
    emotion, (neutral, neutral) pairs the background label. Training the CNN on the pair's
    feature difference makes the difference encode facial motion, whoever the subject is."""
    xs, ys = [], []
    for c in clips:
        n = len(c.frames)
        if c.apex is None:
            for _ in range(per_clip // 2):
                a, b = rng.choice(n, size=2, replace=False)
                xs.append(c.frames[[a, b]])
                ys.append(c.label)
            continue
        ref_hi = max(1, c.onset or 0)
        lo, hi = max(0, c.apex - 2), min(n, c.apex + 3)
        for _ in range(per_clip):
            xs.append(c.frames[[int(rng.integers(0, ref_hi)), int(rng.integers(lo, hi))]])
            ys.append(c.label)
        if ref_hi >= 2:
            for _ in range(per_clip // 4):
                a, b = rng.choice(ref_hi, size=2, replace=False)
                xs.append(c.frames[[a, b]])
                ys.append(bg)
    return np.stack(xs), np.asarray(ys)


def _window_set(
    clips: list[_Clip], feats: list[torch.Tensor], window: int, bg: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for c, f in zip(clips, feats, strict=True):
        n = len(f)
        if n < window:
            f = torch.cat([f, f[-1:].expand(window - n, -1)])
            n = window
        if c.apex is None:
            starts = range(0, n - window + 1, max(1, window // 4))
            xs.extend(f[s : s + window] for s in starts)
            ys.extend([c.label] * len(starts))
            continue
        # Windows whose last frame lies between the apex and a little after the offset.
        last_lo = max(window - 1, c.apex)
        last_hi = min(n - 1, max(last_lo, (c.offset or c.apex) + window // 4))
        for last in range(last_lo, last_hi + 1):
            xs.append(f[last - window + 1 : last + 1])
            ys.append(c.label)
        if c.onset is not None and c.onset >= window:
            for last in rng.choice(
                np.arange(window - 1, c.onset), size=min(3, c.onset - window + 1), replace=False
            ):
                xs.append(f[last - window + 1 : last + 1])
                ys.append(bg)
    return torch.stack(xs), torch.tensor(ys)


def jitter(frames: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    """Each frame shifted by up to ``shift`` px (edges replicated) and its gain varied 5 %.

    Independent per frame, so a clip's own head drift and noise pattern cannot serve as a
    label shortcut: only the facial motion is common to the frames of a class.
    """
    flat = frames.reshape(-1, *frames.shape[-3:])
    n, h, w, _ = flat.shape
    padded = torch.nn.functional.pad(
        flat.permute(0, 3, 1, 2).float(), (shift,) * 4, mode="replicate"
    )
    offs = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen)
    out = torch.stack(
        [
            padded[i, :, int(dy) : int(dy) + h, int(dx) : int(dx) + w]
            for i, (dy, dx) in enumerate(offs)
        ]
    )
    gain = 1.0 + 0.1 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    out = (out * gain).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return out.reshape(frames.shape)


def _fit(
    module: nn.Module,
    params: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    epochs: int,
    opts: TrainOptions,
    say: Callable[[str], None],
    stage: str,
) -> float:
    optim = torch.optim.Adam(params, lr=opts.lr)
    counts = torch.bincount(y, minlength=int(y.max()) + 1).float().clamp(min=1)
    loss_fn = nn.CrossEntropyLoss(weight=(counts.sum() / counts) / len(counts))
    gen = torch.Generator().manual_seed(opts.seed)
    acc = 0.0
    for epoch in range(epochs):
        module.train()
        order = torch.randperm(len(x), generator=gen)
        correct = 0
        total_loss = 0.0
        for s in range(0, len(x), opts.batch_size):
            idx = order[s : s + opts.batch_size]
            logits = forward(x[idx])
            loss = loss_fn(logits, y[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
            total_loss += float(loss) * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        acc = correct / len(x)
        if (epoch + 1) % max(1, epochs // 5) and epoch + 1 != epochs:
            continue
        say(
            f"{stage} epoch {epoch + 1}/{epochs}: loss {total_loss / len(x):.3f}, "
            f"train accuracy {acc:.3f}"
        )
    module.eval()
    return acc


def train(
    clips_root: Path,
    out: Path,
    opts: TrainOptions | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the reference model on a CASME II-layout folder; write ``out`` (safetensors).

    Returns a summary: sample counts, stage accuracies, seconds.
    """
    opts = opts or TrainOptions()
    say = say or (lambda _m: None)
    if out.suffix != ".safetensors":
        raise InputError(f"--out {str(out)!r} must end in .safetensors")
    if not out.parent.is_dir():
        raise InputError(f"the folder of --out {str(out)!r} does not exist")
    cfg = resolve_config(opts.config)
    if opts.background not in cfg["labels"]:
        raise InputError(f"background label {opts.background!r} is not in labels {cfg['labels']}")
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    started = time.perf_counter()
    clips = _load(Path(clips_root), cfg, opts, say)
    bg = cfg["labels"].index(opts.background)
    model = CnnRnn(cfg)

    probe = nn.Linear(cfg["feature_dim"], len(cfg["labels"]))
    stage1 = nn.ModuleDict({"cnn": model.cnn, "probe": probe})
    if opts.stage1 == "pairs":
        px, py = _pair_set(clips, bg, rng)
        n_frames = px.shape[0] * 2
        say(f"stage 1: CNN on {len(px)} frame pairs (neutral -> apex) from {len(clips)} clips")

        gen = torch.Generator().manual_seed(opts.seed)
        shift = max(1, round(cfg["input"]["width"] / 32))

        def stage1_forward(x: torch.Tensor) -> torch.Tensor:
            if model.cnn.training and opts.augment:
                x = jitter(x, gen, shift)
            f = model.encode(x.reshape(-1, *x.shape[2:])).reshape(x.shape[0], 2, -1)
            return probe(f[:, 1] - f[:, 0])

        x1, y1 = torch.from_numpy(px), torch.from_numpy(py).long()
    else:
        fx, fy = _frame_set(clips, bg)
        n_frames = len(fx)
        say(f"stage 1: CNN on {len(fx)} frames from {len(clips)} clips")

        def stage1_forward(x: torch.Tensor) -> torch.Tensor:
            return probe(torch.relu(model.encode(x)))

        x1, y1 = torch.from_numpy(fx), torch.from_numpy(fy).long()
    acc1 = _fit(
        stage1, stage1.parameters(), x1, y1, stage1_forward, opts.cnn_epochs, opts, say, "stage 1"
    )

    model.cnn.requires_grad_(False)
    with torch.no_grad():
        feats = [
            torch.cat(
                [
                    model.encode(torch.from_numpy(c.frames[s : s + 256]))
                    for s in range(0, len(c.frames), 256)
                ]
            )
            for c in clips
        ]
    wx, wy = _window_set(clips, feats, cfg["input"]["window"], bg, rng)
    say(
        f"stage 2: {cfg['rnn'].upper()} on {len(wx)} windows of {cfg['input']['window']} "
        "frames (CNN frozen)"
    )
    head = nn.ModuleDict({"rnn": model.rnn, "head": model.head})
    acc2 = _fit(
        head,
        head.parameters(),
        wx,
        wy,
        model.classify_features,
        opts.rnn_epochs,
        opts,
        say,
        "stage 2",
    )
    model.requires_grad_(True)
    model.eval()
    save_checkpoint(model, out, cfg)
    summary = {
        "clips": len(clips),
        "frames": n_frames,
        "windows": len(wx),
        "stage1_train_accuracy": acc1,
        "stage2_train_accuracy": acc2,
        "seconds": round(time.perf_counter() - started, 1),
        "checkpoint": str(out),
        "labels": cfg["labels"],
    }
    say(f"checkpoint written to {out}")
    return summary
