"""Experimental two-stage trainer for the spotting experiments (docs/spotting.md).

A copy of the reference trainer's recipe (``edge_mer.convert.train``: stage 1 trains the CNN
on (neutral, apex) frame pairs through a linear probe on the feature difference; stage 2
freezes it and trains the recurrent head on windows of T frames from zero state) with the
knobs the experiments turn:

- ``--clips DIR``: coded clips (CASME II layout, what ``edge-mer synth`` writes), and/or
  ``--streams CACHE PREFIX --stream-subjects N``: cached streams of the training subjects
  (``exp_streams.py train``), labelled window by window from their ground truth;
- ``--reference none|first|first+raw`` (``exp_models.py``);
- ``--augment jitter|appearance``: per-frame shift and gain (the reference trainer's), plus,
  with ``appearance``, one random look per sample (brightness, contrast, gamma, mirror,
  shift, scale) shared by its frames, so appearance varies across samples, not within;
- window labels (``--pos-from``, ``--straddle``, ``--macro``): which windows carry the
  emotion, and whether windows that straddle an event's end or touch a macro-expression
  are background or left out.

    .venv/bin/python benchmarks/spotting/exp_train.py --out ck.safetensors \\
        --streams CACHE train-0 --stream-subjects 16 --reference first --augment appearance
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from exp_models import build

from edge_mer.calibration.labels import MEGC3_WITH_BACKGROUND
from edge_mer.convert.checkpoint import save_checkpoint
from edge_mer.convert.models import DEFAULT_CONFIG
from edge_mer.convert.train_data import jitter  # the trainer's per-frame shift and gain

LABELS = ["none", "positive", "negative", "surprise"]
DEMO = {**DEFAULT_CONFIG, "input": {**DEFAULT_CONFIG["input"], "window": 12}, "pool": 4}
CONFIGS = {"default": DEFAULT_CONFIG, "demo": DEMO}
IGNORE = -1


@dataclass
class Event:
    onset: int  # frame indices at the model fps
    apex: int
    offset: int
    label: int  # index into LABELS
    micro: bool


@dataclass
class Seq:
    frames: np.ndarray  # uint8 [N, H, W, C], model fps, preceded by `pad` copies of frame 0
    events: list[Event]
    blinks: list[tuple[int, int]]
    pad: int = 0


def load_clip_seqs(root: Path, cfg: dict[str, Any]) -> list[Seq]:
    from edge_mer.calibration.readers import discover_clips
    from edge_mer.pipeline.preprocess import FramePreprocessor

    inp = cfg["input"]
    fps, t = float(inp["fps"]), int(inp["window"])
    pre = FramePreprocessor(inp["height"], inp["width"], inp["channels"])
    seqs = []
    for src in discover_clips(root):
        c = src.coded
        if c is None:
            continue
        name = MEGC3_WITH_BACKGROUND.get(c.emotion, c.emotion)
        frames = src.load(pre, fps=fps)
        pad = t - 1  # the face before the clip started: its first (neutral) frame
        frames = np.concatenate([np.repeat(frames[:1], pad, axis=0), frames])
        r = fps / c.fps
        events = []
        if name != "none":
            apex = c.apex_index if c.apex is not None else (c.onset_index + c.offset_index) // 2
            n = len(frames) - 1
            events.append(
                Event(
                    min(n, pad + round(c.onset_index * r)),
                    min(n, pad + round(apex * r)),
                    min(n, pad + round(c.offset_index * r)),
                    LABELS.index(name),
                    True,
                )
            )
        seqs.append(Seq(frames, events, [], pad))
    return seqs


def load_stream_seqs(cache: Path, prefix: str, subjects: int, fps: float) -> list[Seq]:
    seqs = []
    for i in range(subjects):
        d = np.load(cache / f"{prefix}-{i}.npz")

        def fr(s: float) -> int:
            return round(s * fps)

        events = [
            Event(fr(a), fr(p), fr(b), int(lab), int(k) == 0)
            for a, p, b, k, lab in zip(
                d["ev_onset"],
                d["ev_apex"],
                d["ev_offset"],
                d["ev_kind"],
                d["ev_label"],
                strict=True,
            )
        ]
        blinks = [(fr(a), fr(b)) for a, b in d["blinks"]]
        seqs.append(Seq(d["frames"], events, blinks))
    return seqs


# ---------------------------------------------------------------- labels


def window_labels(seq: Seq, t: int, lag: int, opts: argparse.Namespace) -> np.ndarray:
    """Label per window end e (index into frames; IGNORE for e < t - 1 and left-out ones)."""
    n = len(seq.frames)
    y = np.zeros(n, np.int64)
    y[: t - 1] = IGNORE
    e = np.arange(n)
    start = e - t + 1
    for ev in seq.events:
        touch = (start <= ev.offset) & (e >= ev.onset)
        if not ev.micro and opts.macro != "emotion":
            if opts.macro == "ignore":
                y[touch] = IGNORE
            continue  # "none": background
        first = ev.apex if opts.pos_from == "apex" else ev.onset + max(1, (ev.apex - ev.onset) // 2)
        last = ev.offset + lag
        pos = (e >= first) & (e <= last)
        edge = touch & ~pos
        if opts.straddle == "ignore":
            y[edge] = IGNORE
        else:  # background, but not right next to the positive run
            y[touch & (((e >= ev.onset) & (e < first)) | ((e > last) & (e <= last + 2)))] = IGNORE
        y[pos] = ev.label
    y[: t - 1] = IGNORE  # no full window yet
    return y


def hard_windows(seq: Seq, t: int) -> np.ndarray:
    """Per window end: does the window touch a macro-expression, a blink or a
    micro-expression (hard background when labelled so)?"""
    n = len(seq.frames)
    e = np.arange(n)
    start = e - t + 1
    hard = np.zeros(n, bool)
    for a, b in [(ev.onset, ev.offset) for ev in seq.events] + list(seq.blinks):
        hard |= (start <= b) & (e >= a)
    return hard


def pair_set(
    seqs: list[Seq], t: int, rng: np.random.Generator, per_event: int, opts: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray]:
    """(reference, target) index pairs per sequence: (neutral before onset, near apex) for
    each micro-expression; background pairs within a window that touch no micro-expression."""
    pairs, ys = [], []
    for si, s in enumerate(seqs):
        n = len(s.frames)
        busy = np.zeros(n, bool)
        for ev in s.events:
            if ev.micro or opts.macro != "none":
                busy[max(0, ev.onset - 1) : ev.offset + 2] = True
            if not ev.micro and opts.macro != "emotion":
                continue
            lo_ref = max(0, ev.onset - t + 1) if s.pad == 0 else max(0, s.pad - 1)
            hi_ref = max(lo_ref + 1, ev.onset)
            for _ in range(per_event):
                r = int(rng.integers(lo_ref, hi_ref))
                a = int(np.clip(ev.apex + rng.integers(-2, 3), ev.onset, n - 1))
                pairs.append((si, r, a))
                ys.append(ev.label)
        n_bg = max(per_event, per_event * sum(ev.micro for ev in s.events))
        free = np.flatnonzero(~busy)
        if len(free) < 2:
            continue
        for _ in range(n_bg):
            b = int(rng.choice(free))
            a = b - int(rng.integers(1, t))
            if a < 0 or busy[a : b + 1].any():
                continue
            pairs.append((si, a, b))
            ys.append(0)
    return np.asarray(pairs), np.asarray(ys)


# ---------------------------------------------------------------- augmentation


def appearance(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """uint8 ``[B, K, H, W, C]`` -> one random look per sample, shared by its K frames."""
    b, k, h, w, c = x.shape
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    f = x.permute(0, 1, 4, 2, 3).reshape(b, k * c, h, w).float() / 255.0
    scale = 1.0 + strength * 0.08 * (2 * u(b) - 1)
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    shift = strength * 0.06 * (2 * u(b, 2) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = nn.functional.affine_grid(theta, (b, k * c, h, w), align_corners=False)
    f = nn.functional.grid_sample(f, grid, padding_mode="border", align_corners=False)
    gamma = torch.exp(strength * 0.35 * (2 * u(b, 1, 1, 1) - 1))
    f = f.clamp(1e-4, 1.0) ** gamma
    gain = 1.0 + strength * 0.3 * (2 * u(b, 1, 1, 1) - 1)
    bias = strength * 0.12 * (2 * u(b, 1, 1, 1) - 1)
    f = (f - 0.5) * gain + 0.5 + bias
    out = (f.clamp(0, 1) * 255).round().to(torch.uint8)
    return out.reshape(b, k, c, h, w).permute(0, 1, 3, 4, 2)


# ---------------------------------------------------------------- fitting


def fit(
    params, x_of, y: torch.Tensor, forward, epochs: int, lr: float, bs: int, seed: int, say, stage
):
    optim = torch.optim.Adam(params, lr=lr)
    counts = torch.bincount(y, minlength=len(LABELS)).float().clamp(min=1)
    loss_fn = nn.CrossEntropyLoss(weight=(counts.sum() / counts) / len(counts))
    gen = torch.Generator().manual_seed(seed)
    acc = 0.0
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        correct, total = 0, 0.0
        for s in range(0, len(y), bs):
            idx = order[s : s + bs]
            logits = forward(x_of(idx))
            loss = loss_fn(logits, y[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += float(loss) * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        acc = correct / len(y)
        if (epoch + 1) % max(1, epochs // 4) == 0 or epoch + 1 == epochs:
            say(f"{stage} epoch {epoch + 1}/{epochs}: loss {total / len(y):.3f}, acc {acc:.3f}")
    return acc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="default")
    ap.add_argument("--set", nargs="*", default=[], help="model config key=json-value")
    ap.add_argument("--reference", default="none", choices=("none", "first", "first+raw"))
    ap.add_argument("--clips", type=Path)
    ap.add_argument("--streams", nargs=2, metavar=("CACHE", "PREFIX"))
    ap.add_argument("--stream-subjects", type=int, default=16)
    ap.add_argument(
        "--extra-streams",
        nargs=3,
        metavar=("CACHE", "PREFIX", "N"),
        help="more cached streams, e.g. the training subjects' distractor-only ones",
    )
    ap.add_argument("--augment", default="jitter", choices=("none", "jitter", "appearance"))
    ap.add_argument("--aug-copies", type=int, default=2, help="stage-2 appearance copies")
    ap.add_argument("--pos-from", default="onset", choices=("onset", "apex"))
    ap.add_argument("--lag", type=int, default=None, help="frames (default T/4)")
    ap.add_argument("--straddle", default="none", choices=("none", "ignore"))
    ap.add_argument("--macro", default="none", choices=("none", "ignore", "emotion"))
    ap.add_argument("--bg-ratio", type=float, default=2.0, help="background windows per positive")
    ap.add_argument(
        "--hard-bg",
        action="store_true",
        help="keep every background window that touches an event or a blink (the rest are sampled)",
    )
    ap.add_argument(
        "--macro-dup", type=int, default=1, help="repeat background windows touching a macro"
    )
    ap.add_argument("--pairs-per-event", type=int, default=8)
    ap.add_argument("--cnn-epochs", type=int, default=8)
    ap.add_argument("--rnn-epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cnn-from", type=Path, help="skip stage 1: the CNN of a .cnn.pt or a checkpoint"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"{time.perf_counter() - t0:6.1f}s {msg}", file=sys.stderr)

    cfg = json.loads(json.dumps(CONFIGS[args.config]))
    for item in args.set:  # key=json or input.key=json
        key, _, value = item.partition("=")
        head, _, sub = key.partition(".")
        if sub:
            cfg[head][sub] = json.loads(value)
        else:
            cfg[key] = json.loads(value)
    cfg["reference"] = args.reference
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build(cfg)
    t = int(cfg["input"]["window"])
    lag = t // 4 if args.lag is None else args.lag
    seqs: list[Seq] = []
    if args.clips:
        seqs += load_clip_seqs(args.clips, cfg)
    if args.streams:
        seqs += load_stream_seqs(
            Path(args.streams[0]), args.streams[1], args.stream_subjects, cfg["input"]["fps"]
        )
    if args.extra_streams:
        seqs += load_stream_seqs(
            Path(args.extra_streams[0]),
            args.extra_streams[1],
            int(args.extra_streams[2]),
            cfg["input"]["fps"],
        )
    say(f"{len(seqs)} sequences, {sum(len(s.frames) for s in seqs)} frames")

    # Stage 1: CNN on frame pairs, probe on the feature difference.
    pairs, py = pair_set(seqs, t, rng, args.pairs_per_event, args)
    if args.cnn_from is not None:
        if args.cnn_from.suffix == ".safetensors":  # the CNN of an earlier checkpoint
            from safetensors.torch import load_file

            w = load_file(str(args.cnn_from))
            model.cnn.load_state_dict({k[4:]: v for k, v in w.items() if k.startswith("cnn.")})
        else:
            model.cnn.load_state_dict(torch.load(args.cnn_from, weights_only=True))
        say(f"stage 1 skipped: CNN from {args.cnn_from}")
        pairs = pairs[:0]
    say(f"stage 1: {len(pairs)} pairs ({np.bincount(py, minlength=4).tolist()})")
    probe = nn.Linear(cfg["feature_dim"], len(LABELS))
    stage1 = nn.ModuleDict({"cnn": model.cnn, "probe": probe})
    gen = torch.Generator().manual_seed(args.seed)
    shift = max(1, round(cfg["input"]["width"] / 32))

    def x_pairs(idx: torch.Tensor) -> torch.Tensor:
        rows = pairs[idx.numpy()]
        return torch.from_numpy(
            np.stack([seqs[s].frames[[a, b]] for s, a, b in rows])
        )  # [B, 2, H, W, C]

    def fwd1(x: torch.Tensor) -> torch.Tensor:
        if args.augment == "appearance":
            x = appearance(x, gen)
        if args.augment != "none":
            x = jitter(x, gen, shift)
        f = model.encode(x.reshape(-1, *x.shape[2:])).reshape(x.shape[0], 2, -1)
        return probe(f[:, 1] - f[:, 0])

    model.train()
    acc1 = float("nan")
    if len(pairs):
        acc1 = fit(
            stage1.parameters(),
            x_pairs,
            torch.from_numpy(py),
            fwd1,
            args.cnn_epochs,
            args.lr,
            args.batch,
            args.seed,
            say,
            "stage 1",
        )
        torch.save(model.cnn.state_dict(), args.out.with_suffix(".cnn.pt"))
    model.eval()
    model.cnn.requires_grad_(False)

    # Stage 2: windows over frozen features (appearance copies: one look per sequence).
    copies = args.aug_copies if args.augment == "appearance" else 0
    feats, labels, hards, macros = [], [], [], []
    agen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for s in seqs:
            y = window_labels(s, t, lag, args)
            hard = hard_windows(s, t)
            macro = hard_windows(Seq(s.frames, [ev for ev in s.events if not ev.micro], []), t)
            for c in range(1 + copies):
                fr = torch.from_numpy(s.frames)
                if c:
                    # one look for the whole sequence: the same random draw for every chunk
                    state = agen.get_state()
                    parts = []
                    for i in range(0, len(fr), 512):
                        agen.set_state(state)
                        parts.append(appearance(fr[None, i : i + 512], agen)[0])
                    fr = torch.cat(parts)
                feats.append(
                    torch.cat([model.encode(fr[i : i + 512]) for i in range(0, len(fr), 512)])
                )
                labels.append(y)
                hards.append(hard)
                macros.append(macro)
    wins = []  # (sequence copy, end index)
    ys = []
    for ci, y in enumerate(labels):
        pos = np.flatnonzero(y > 0)
        bg = np.flatnonzero(y == 0)
        hard = bg[hards[ci][bg]] if args.hard_bg else bg[:0]
        rest = np.setdiff1d(bg, hard)
        k = min(len(rest), max(math.ceil(args.bg_ratio * len(pos)) - len(hard), 8))
        bg = np.concatenate([hard, rng.choice(rest, size=k, replace=False) if k else rest[:0]])
        for e in np.concatenate([pos, bg]):
            reps = args.macro_dup if y[e] == 0 and macros[ci][e] else 1
            wins.extend([(ci, int(e))] * reps)
            ys.extend([int(y[e])] * reps)
    wins_a = np.asarray(wins)
    wy = torch.tensor(ys)
    say(f"stage 2: {len(wins_a)} windows ({np.bincount(ys, minlength=4).tolist()}), lag {lag}")

    def x_wins(idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([feats[c][e - t + 1 : e + 1] for c, e in wins_a[idx.numpy()]])

    head = nn.ModuleDict({"rnn": model.rnn, "head": model.head})
    head.train()
    acc2 = fit(
        head.parameters(),
        x_wins,
        wy,
        model.classify_features,
        args.rnn_epochs,
        args.lr,
        args.batch,
        args.seed,
        say,
        "stage 2",
    )
    model.requires_grad_(True)
    model.eval()
    save_checkpoint(model, args.out, model.config)
    say(f"wrote {args.out}: stage 1 acc {acc1:.3f}, stage 2 acc {acc2:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
