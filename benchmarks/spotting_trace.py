"""Where does the stream lose the clip classifier? Per-frame probabilities along synthetic
streams against their ground truth, window by window (docs/spotting.md, issue 11 item 1).

For each seed, the synthetic stream ``synthetic://?seconds=S&seed=N`` runs through the real
live pipeline (:func:`edge_mer.bench.spotting.run_stream`); the probabilities the spotter
saw are recorded. Every model frame is then put in one category by what its window (the
last T frames at the model's fps, exactly what the state cache classifies) contains:

- ``neutral``: nothing but the still face, noise and head drift;
- ``blink``: a blink, no expression;
- ``macro``: part of a macro-expression;
- ``micro (trained)``: a micro-expression, window ending between its apex and a quarter
  window after its offset (the windows the reference trainer labels with the emotion);
- ``micro (edge)``: a micro-expression, any other window touching it (before the apex,
  or long after the offset: the event sits at the window's start).

and, for comparison, the trainer's own windows of the training clips (``--train-clips``):
``train neutral`` (background clips) and ``train micro``. Per category: windows, the share
whose top class is not "none", mean p(none). The spotter is replayed on the same
probabilities to expose its smoothed score and rolling baseline.

    .venv/bin/python benchmarks/spotting_trace.py --bundle B --train-clips S/casme2 \\
        --seeds 1 2 3 --plot docs/spotting-trace.png --json out.json

Needs the ``plots`` extra for --plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bench.spotting import SpotStream, TruthEvent, lag_seconds, run_stream
from edge_mer.bundle import Bundle
from edge_mer.calibration.labels import MEGC3_WITH_BACKGROUND
from edge_mer.calibration.synth_stream import _stream_timeline
from edge_mer.config.models import SpotterConfig
from edge_mer.pipeline.spotter import MACRO_LABEL, spotter_from_config

CATEGORIES = ("neutral", "blink", "macro", "micro (trained)", "micro (edge)")


def stream_truth(seconds: float, fps: float, seed: int, subject: int) -> dict[str, Any]:
    """Events and blinks (seconds) of ``synthetic://`` with these options (size 128)."""
    tl = _stream_timeline(seconds, fps, (128, 128), seed, subject, 0.5, True)
    events = [s.event for s in tl.events]
    blinks = [(b[0] / fps, (b[0] + b[1]) / fps) for b in tl.blinks]
    return {"events": events, "blinks": blinks}


def categorize(end_ts: np.ndarray, window_s: float, lag_q: float, truth: dict) -> np.ndarray:
    """Category index per window ending at ``end_ts`` (capture time of its last frame)."""
    start = end_ts - window_s
    cat = np.zeros(len(end_ts), np.int64)  # neutral
    for a, b in truth["blinks"]:
        cat[(start <= b) & (end_ts >= a)] = 1
    for e in truth["events"]:
        touch = (start <= e.offset_s) & (end_ts >= e.onset_s)
        if e.kind == "macro":
            cat[touch] = 2
        else:
            trained = (end_ts >= e.apex_s) & (end_ts <= e.offset_s + lag_q)
            cat[touch & trained] = 3
            cat[touch & ~trained] = 4
    return cat


def spotter_internals(
    labels: list[str], fps: float, ts: np.ndarray, probs: np.ndarray, sp: SpotterConfig
) -> dict[str, np.ndarray]:
    """Replay the spotter the live pipeline builds (``spotter_from_config``); per frame: raw
    score (1 - p(none), minus p(macro) for a model with the macro class, as the spotter
    scores it), smoothed score, baseline (NaN until set)."""
    spotter = spotter_from_config(labels, fps, sp)
    score = 1.0 - probs[:, labels.index("none")]
    if MACRO_LABEL in labels:
        score = score - probs[:, labels.index(MACRO_LABEL)]
    base = np.full(len(ts), np.nan)
    for i, (t, p) in enumerate(zip(ts, probs, strict=True)):
        spotter.update(0, float(t), p)
        base[i] = spotter._tracks[0].baseline  # the replayed spotter's own state
    k = sp.smoothing_frames
    smooth = np.convolve(score, np.ones(k) / k, mode="full")[: len(score)]
    smooth[: k - 1] = np.nan
    return {"score": score, "smooth": smooth, "baseline": base}


def train_windows(bundle: Bundle, root: Path) -> dict[str, np.ndarray]:
    """The reference trainer's stage-2 windows of the training clips, run through the
    bundle (FP32 encoder + step, from zero state): p(none) and top class per window."""
    from edge_mer.calibration.readers import discover_clips
    from edge_mer.pipeline.preprocess import FramePreprocessor
    from edge_mer.streaming import ort_session, stream_logits

    spec = bundle.input
    t, fps = int(spec["window"]), float(spec["fps"])
    pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
    wins, kinds = [], []
    for src in discover_clips(root):
        c = src.coded
        if c is None:
            continue
        name = MEGC3_WITH_BACKGROUND.get(c.emotion, c.emotion)
        frames = src.load(pre, fps=fps)
        n = len(frames)
        if n < t:
            frames = np.concatenate([frames, np.repeat(frames[-1:], t - n, axis=0)])
            n = t
        if name == "none":
            for s in range(0, n - t + 1, max(1, t // 4)):
                wins.append(frames[s : s + t])
                kinds.append(0)
            continue
        r = fps / c.fps
        apex = min(n - 1, round((c.apex_index if c.apex is not None else c.onset_index) * r))
        off = min(n - 1, round(c.offset_index * r))
        lo = max(t - 1, apex)
        for last in range(lo, min(n - 1, max(lo, off + t // 4)) + 1):
            wins.append(frames[last - t + 1 : last + 1])
            kinds.append(1)
    enc = ort_session(bundle.graph_path("encoder"))
    step = ort_session(bundle.graph_path("step"))
    names = [s.name for s in bundle.states]
    shapes = [s.shape for s in bundle.states]
    x = np.stack(wins)
    logits = np.concatenate(
        [stream_logits(enc, step, x[i : i + 64], names, shapes) for i in range(0, len(x), 64)]
    )
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return {"probs": p, "kind": np.asarray(kinds)}


def category_table(p_none: np.ndarray, top: np.ndarray, cat: np.ndarray, names) -> list[dict]:
    rows = []
    for i, name in enumerate(names):
        m = cat == i
        rows.append(
            {
                "category": name,
                "windows": int(m.sum()),
                "top_not_none": float((top[m] != 0).mean()) if m.any() else None,
                "mean_p_none": float(p_none[m].mean()) if m.any() else None,
            }
        )
    return rows


def timing(truth: dict, events: list[dict]) -> list[dict]:
    """Per ground-truth micro-expression: the overlapping micro event with the best IoU,
    its onset and offset errors (event minus truth, ms)."""
    from edge_mer.pipeline.spotting_eval import interval_iou

    out = []
    micro = [e for e in events if e["type"] == "micro_expression"]
    for e in truth["events"]:
        if e.kind != "micro":
            continue
        best = max(
            micro,
            key=lambda r: interval_iou((r["onset_ts"], r["offset_ts"]), (e.onset_s, e.offset_s)),
            default=None,
        )
        iou = (
            interval_iou((best["onset_ts"], best["offset_ts"]), (e.onset_s, e.offset_s))
            if best
            else 0.0
        )
        row = {"duration_ms": (e.offset_s - e.onset_s) * 1e3, "iou": iou}
        if best is not None and iou > 0:
            row["onset_err_ms"] = (best["onset_ts"] - e.onset_s) * 1e3
            row["offset_err_ms"] = (best["offset_ts"] - e.offset_s) * 1e3
        out.append(row)
    return out


def plot(path: Path, runs: list[dict], labels: list[str], sp: SpotterConfig, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"none": "0.5", "positive": "tab:green", "negative": "tab:red", "surprise": "tab:blue"}
    fig, axes = plt.subplots(2 * len(runs), 1, figsize=(13, 3.2 * len(runs)), sharex=True)
    for r, run in enumerate(runs):
        ax, ax2 = axes[2 * r], axes[2 * r + 1]
        t = run["t"]
        for k, name in enumerate(labels):
            ax.plot(t, run["probs"][:, k], lw=0.9, color=colors.get(name), label=f"p({name})")
        for a in (ax, ax2):
            for e in run["truth"]["events"]:
                label = MEGC3_WITH_BACKGROUND.get(e.emotion)
                c = colors.get(label, "k") if e.kind == "micro" else "0.75"
                a.axvspan(e.onset_s, e.offset_s, color=c, alpha=0.25 if e.kind == "micro" else 0.4)
            for b0, b1 in run["truth"]["blinks"]:
                a.axvspan(b0, b1, ymin=0.0, ymax=0.06, color="k", alpha=0.6)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probability")
        ax.set_title(
            f"{run['name']}: micro F1 {run['f1']:.2f} ({run['tp']} TP, {run['fp']} FP, "
            f"{run['fn']} FN); shaded: micro (by label), macro (grey); black ticks: blinks",
            fontsize=9,
        )
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        s = run["internals"]
        ax2.plot(t, s["smooth"], color="k", lw=0.9, label="smoothed 1 - p(none)")
        ax2.plot(t, s["baseline"], color="tab:orange", lw=1.2, label="rolling baseline")
        ax2.plot(
            t,
            s["baseline"] + sp.threshold_on,
            color="tab:orange",
            ls="--",
            lw=0.8,
            label=f"baseline + on ({sp.threshold_on:g})",
        )
        for ev in run["events"]:
            c = "tab:purple" if ev["type"] == "micro_expression" else "tab:brown"
            ax2.plot([ev["onset_ts"], ev["offset_ts"]], [1.05, 1.05], color=c, lw=4)
        ax2.set_ylim(-0.05, 1.6)
        ax2.set_ylabel("spotter")
        ax2.legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("seconds (capture clock; probabilities at the window's last frame)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--train-clips", type=Path, help="the CASME II-layout training folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--subject", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=200.0)
    ap.add_argument("--plot", type=Path, help="PNG of the traces (first --plot-seeds seeds)")
    ap.add_argument("--plot-seeds", type=int, default=2)
    ap.add_argument("--plot-seconds", type=float, default=30.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    bundle = Bundle.open(args.bundle)
    labels = list(bundle.labels)
    fps_m, window = float(bundle.input["fps"]), int(bundle.input["window"])
    sp = SpotterConfig()
    runs, table_cat, table_pn, table_top = [], [], [], []
    for seed in args.seeds:
        truth = stream_truth(args.seconds, args.fps, seed, args.subject)
        stream = SpotStream(
            f"seed {seed}",
            f"synthetic://?seconds={args.seconds:g}&fps={args.fps:g}&seed={seed}"
            f"&subject={args.subject}",
            tuple(
                TruthEvent(e.onset_s, e.offset_s, e.kind, MEGC3_WITH_BACKGROUND[e.emotion])
                for e in truth["events"]
            ),
            args.seconds,
        )
        res = run_stream(args.bundle, stream)
        from edge_mer.bench.spotting import score_stream

        s = score_stream(stream, res.records)
        tr = res.trace
        t = tr.ts + tr.lag_s  # capture time of the window's last frame
        probs = tr.probs.astype(np.float64)
        cat = categorize(t, (window - 1) / fps_m, (window // 4) / fps_m, truth)
        table_cat.append(cat)
        table_pn.append(probs[:, labels.index("none")])
        table_top.append(probs.argmax(1))
        runs.append(
            {
                "name": f"synthetic://?seed={seed} (subject {seed}/{args.subject})",
                "t": t,
                "probs": probs,
                "truth": truth,
                "events": res.records,
                "internals": spotter_internals(labels, fps_m, tr.ts, probs, sp),
                "timing": timing(truth, res.records),
                **{k: s[k] for k in ("tp", "fp", "fn", "f1")},
            }
        )
        print(
            f"seed {seed}: {s['truth_micro']} micro, {s['events_micro']} micro events, "
            f"F1 {s['f1']:.2f}; mean p(none) {probs[:, 0].mean():.2f}; top class "
            f"{dict(zip(*np.unique(probs.argmax(1), return_counts=True), strict=True))}",
            file=sys.stderr,
        )
    names = list(CATEGORIES)
    cat = np.concatenate(table_cat)
    rows = category_table(np.concatenate(table_pn), np.concatenate(table_top), cat, names)
    if args.train_clips is not None:
        tw = train_windows(bundle, args.train_clips)
        rows += category_table(
            tw["probs"][:, 0], tw["probs"].argmax(1), tw["kind"], ["train neutral", "train micro"]
        )
    for r in rows:
        print(
            f"{r['category']:<16} {r['windows']:5d} windows  top != none "
            f"{r['top_not_none'] if r['top_not_none'] is None else round(r['top_not_none'], 3)}"
            f"  mean p(none) "
            f"{r['mean_p_none'] if r['mean_p_none'] is None else round(r['mean_p_none'], 3)}"
        )
    tim = [row for r in runs for row in r["timing"]]
    hit = [row for row in tim if "onset_err_ms" in row]
    timing_summary = {
        "truth_micro": len(tim),
        "overlapped": len(hit),
        "iou_ge_0.5": sum(row["iou"] >= 0.5 for row in tim),
        "median_iou_overlapped": float(np.median([r["iou"] for r in hit])) if hit else None,
        "median_onset_err_ms": float(np.median([r["onset_err_ms"] for r in hit])) if hit else None,
        "median_offset_err_ms": float(np.median([r["offset_err_ms"] for r in hit]))
        if hit
        else None,
    }
    print(f"timing: {timing_summary}")
    base = np.concatenate([r["internals"]["baseline"] for r in runs])
    base = base[np.isfinite(base)]
    unreachable = float((base + sp.threshold_on > 1.0).mean())
    print(
        f"share of frames where baseline + threshold_on > 1 (no event possible): {unreachable:.3f}"
    )
    out = {
        "bundle": str(args.bundle),
        "unreachable_share": unreachable,
        "timing": timing_summary,
        "timing_events": tim,
        "seeds": args.seeds,
        "seconds": args.seconds,
        "spotter": sp.__dict__,
        "lag_s": lag_seconds(sp, window, fps_m),
        "categories": rows,
        "streams": [
            {k: r[k] for k in ("name", "tp", "fp", "fn", "f1")}
            | {"mean_p_none": float(r["probs"][:, 0].mean())}
            for r in runs
        ],
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if args.plot:
        sel = runs[: args.plot_seeds]
        for r in sel:
            m = r["t"] <= args.plot_seconds
            r["t"], r["probs"] = r["t"][m], r["probs"][m]
            r["internals"] = {k: v[m] for k, v in r["internals"].items()}
        plot(args.plot, sel, labels, sp, f"bundle {bundle.name}: live pipeline probabilities")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
