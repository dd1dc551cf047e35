"""Fast spotting scores on cached streams (``exp_streams.py``), for the experiments.

What ``edge-mer spot-eval`` measures through the live pipeline, computed straight from the
model: features once per frame, then the clip over the last T frames from zero state at
every model frame (what the state cache yields), the probabilities into the real
:class:`~edge_mer.pipeline.spotter.Spotter` (via :func:`edge_mer.bench.spotting.replay`)
dated back by the lag, scored by :func:`edge_mer.bench.spotting.score_stream`. A torch
checkpoint (``--ckpt``) or a bundle's ONNX graphs (``--bundle``, ``--graph``) run the model.

    .venv/bin/python benchmarks/spotting/exp_eval.py --ckpt m.safetensors --cache CACHE \\
        --streams eval-50000 distr-50000 [--tune train-0] [--spotter threshold_on=0.3 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bench.spotting import SpotStream, TruthEvent, replay, score_stream, summarize
from edge_mer.config.models import SpotterConfig

LABELS = ["none", "positive", "negative", "surprise"]


@dataclasses.dataclass
class Cached:
    name: str
    frames: np.ndarray  # uint8 [N, H, W, 1]
    ts: np.ndarray  # float64 [N]
    stream: SpotStream
    raw: dict[str, np.ndarray]


def load_cached(cache: Path, prefixes: list[str]) -> list[Cached]:
    out = []
    for item in prefixes:  # PREFIX or PREFIX:A-B (subjects A..B-1)
        prefix, _, span = item.partition(":")
        paths = sorted(cache.glob(f"{prefix}-*.npz"), key=lambda p: int(p.stem.split("-")[-1]))
        if span:
            a, b = (int(v) for v in span.split("-"))
            paths = [p for p in paths if a <= int(p.stem.split("-")[-1]) < b]
        if not paths:
            raise SystemExit(f"no {prefix}-*.npz in {cache}")
        for p in paths:
            d = dict(np.load(p))
            truth = tuple(
                TruthEvent(float(a), float(b), "micro" if k == 0 else "macro", LABELS[int(lab)])
                for a, b, k, lab in zip(
                    d["ev_onset"], d["ev_offset"], d["ev_kind"], d["ev_label"], strict=True
                )
            )
            seconds = float(d["ts"][-1] + (d["ts"][1] - d["ts"][0]))
            stream = SpotStream(
                p.stem, "cache", truth, seconds, distractors_only=p.stem.startswith("distr")
            )
            out.append(Cached(p.stem, d["frames"], d["ts"], stream, d))
    return out


class Trace:
    """What :func:`replay` needs of a recorded trace."""

    def __init__(self, ts: np.ndarray, probs: np.ndarray, lag_s: float) -> None:
        self.ts, self.probs, self.lag_s = ts - lag_s, probs, lag_s
        self.tracks = [0] * len(ts)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class TorchModel:
    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        self.window = int(model.input_spec["window"])
        self.fps = float(model.input_spec["fps"])

    def features(self, frames: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.cat(
                [
                    self.model.encode(torch.from_numpy(frames[i : i + 512]))
                    for i in range(0, len(frames), 512)
                ]
            ).numpy()

    def window_logits(self, feats: np.ndarray) -> np.ndarray:
        """Logits of the clip over frames [t-T+1, t] for t = T-1 .. N-1."""
        import torch

        f = torch.from_numpy(feats)
        win = f.unfold(0, self.window, 1).permute(0, 2, 1)  # [N-T+1, T, D]
        with torch.no_grad():
            return torch.cat(
                [self.model.classify_features(win[i : i + 2048]) for i in range(0, len(win), 2048)]
            ).numpy()


class OrtModel:
    """A bundle's encoder graph (``encoder``, ``encoder_int8``...) and its step graph."""

    def __init__(self, bundle_path: Path, graph: str) -> None:
        from edge_mer.bundle import Bundle
        from edge_mer.streaming import ort_session

        b = Bundle.open(bundle_path)
        self.window = int(b.input["window"])
        self.fps = float(b.input["fps"])
        self.enc = ort_session(b.graph_path(graph))
        self.step = ort_session(b.graph_path("step"))
        self.states = b.states

    def features(self, frames: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                self.enc.run(None, {"frames": frames[i : i + 512]})[0]
                for i in range(0, len(frames), 512)
            ]
        )

    def window_logits(self, feats: np.ndarray) -> np.ndarray:
        t = self.window
        n = len(feats) - t + 1
        out = []
        for s in range(0, n, 2048):
            m = min(2048, n - s)
            state = {st.name: np.zeros((m, *st.shape), np.float32) for st in self.states}
            for k in range(t):
                res = self.step.run(None, {"features": feats[s + k : s + k + m], **state})
                logits = res[0]
                state = {st.name: res[1 + i] for i, st in enumerate(self.states)}
            out.append(logits)
        return np.concatenate(out)


def stream_probs(model: Any, streams: list[Cached]) -> list[np.ndarray]:
    """Per stream: probabilities [N - T + 1, K] at model frames T-1 .. N-1."""
    return [softmax(model.window_logits(model.features(s.frames))) for s in streams]


def fp_causes(s: Cached, records: list[dict[str, Any]], iou: float = 0.5) -> dict[str, int]:
    """What each unmatched micro event overlaps: a micro-expression (badly timed or a
    duplicate), a macro-expression, a blink, or nothing but the still face."""
    from edge_mer.pipeline.spotting_eval import match_events

    micro = [r for r in records if r["type"] == "micro_expression"]
    truth = [(t.onset_s, t.offset_s) for t in s.stream.truth if t.kind == "micro"]
    _, _, _, pairs = match_events([(r["onset_ts"], r["offset_ts"]) for r in micro], truth, iou)
    matched = {i for i, _, _ in pairs}
    out = {"micro (timing/duplicate)": 0, "macro": 0, "blink": 0, "still face": 0}
    d = s.raw
    for i, r in enumerate(micro):
        if i in matched:
            continue
        a, b = r["onset_ts"] - 0.1, r["offset_ts"] + 0.1

        def hit(lo, hi, a=a, b=b):
            return bool(np.any((lo <= b) & (hi >= a)))

        if hit(d["ev_onset"][d["ev_kind"] == 0], d["ev_offset"][d["ev_kind"] == 0]):
            out["micro (timing/duplicate)"] += 1
        elif hit(d["ev_onset"][d["ev_kind"] == 1], d["ev_offset"][d["ev_kind"] == 1]):
            out["macro"] += 1
        elif len(d["blinks"]) and hit(d["blinks"][:, 0], d["blinks"][:, 1]):
            out["blink"] += 1
        else:
            out["still face"] += 1
    return out


def score(
    streams: list[Cached],
    probs: list[np.ndarray],
    window: int,
    fps: float,
    settings: SpotterConfig,
    causes: bool = False,
) -> dict[str, Any]:
    per = []
    default_lag = (window // 4) / fps
    total: dict[str, int] = {}
    for s, p in zip(streams, probs, strict=True):
        tr = Trace(s.ts[window - 1 :], p, default_lag)
        records = replay(tr, LABELS, fps, window, settings)
        per.append(score_stream(s.stream, records))
        if causes:
            for k, v in fp_causes(s, records).items():
                total[k] = total.get(k, 0) + v
    rep = summarize(per)
    rep["streams"] = per
    if causes:
        rep["fp_causes"] = total
    return rep


GRID = {
    "threshold_on": [0.3, 0.5, 0.7, 0.8, 0.9, 0.95],
    "off_ratio": [0.5, 0.75],
    "smoothing_frames": [3, 5, 7],
    "lag_frames": [None, "-1", "+1"],
    "min_duration_ms": [40, 80],
}


def tune(
    streams: list[Cached], probs: list[np.ndarray], window: int, fps: float
) -> tuple[SpotterConfig, dict[str, Any]]:
    """The spotter settings with the best pooled micro F1 on ``streams`` (never the scored
    ones), ties to fewer false positives."""
    best: tuple[float, int] | None = None
    best_cfg, best_rep = SpotterConfig(), {}
    base_lag = window // 4
    for on, ratio, k, lag, min_ms in itertools.product(*GRID.values()):
        lag_frames = None if lag is None else max(0, base_lag + int(lag))
        cfg = SpotterConfig().model_copy(
            update={
                "threshold_on": on,
                "threshold_off": round(on * ratio, 3),
                "smoothing_frames": k,
                "lag_frames": lag_frames,
                "min_duration_ms": min_ms,
            }
        )
        rep = score(streams, probs, window, fps, cfg)
        key = (rep["micro"]["f1"], -rep["micro"]["fp"])
        if best is None or key > best:
            best, best_cfg, best_rep = key, cfg, rep
    return best_cfg, best_rep


def plot_streams(
    path: Path,
    streams: list[Cached],
    probs: list[np.ndarray],
    window: int,
    fps: float,
    settings: SpotterConfig,
    seconds: float = 30.0,
    title: str = "",
) -> None:
    """Per stream: the probabilities of every class at each window's last frame, the ground
    truth (micro by label, macro grey, blinks as black ticks) and the spotter's events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"none": "0.5", "positive": "tab:green", "negative": "tab:red", "surprise": "tab:blue"}
    fig, axes = plt.subplots(len(streams), 1, figsize=(13, 2.4 * len(streams)), sharex=True)
    axes = np.atleast_1d(axes)
    default_lag = (window // 4) / fps
    for ax, s, p in zip(axes, streams, probs, strict=True):
        t = s.ts[window - 1 :]
        m = t <= seconds
        for k, name in enumerate(LABELS):
            ax.plot(t[m], p[m, k], lw=0.9, color=colors[name], label=f"p({name})")
        d = s.raw
        for a, b, kind, lab in zip(
            d["ev_onset"], d["ev_offset"], d["ev_kind"], d["ev_label"], strict=True
        ):
            if a <= seconds:
                c = colors[LABELS[int(lab)]] if kind == 0 else "0.7"
                ax.axvspan(a, b, color=c, alpha=0.25 if kind == 0 else 0.45, lw=0)
        for a, b in d["blinks"]:
            if a <= seconds:
                ax.axvspan(a, b, ymin=0, ymax=0.06, color="k", alpha=0.6, lw=0)
        records = replay(Trace(t, p, default_lag), LABELS, fps, window, settings)
        res = score_stream(s.stream, records)
        for r in records:
            if r["onset_ts"] <= seconds:
                c = "tab:purple" if r["type"] == "micro_expression" else "tab:brown"
                ax.plot([r["onset_ts"], r["offset_ts"]], [1.06, 1.06], color=c, lw=4)
        label = "distractors only" if s.stream.distractors_only else f"micro F1 {res['f1']:.2f}"
        ax.set_title(
            f"{s.name}: {label} (TP {res['tp']}, FP {res['fp']}, FN {res['fn']} over the "
            f"whole {s.stream.seconds:g} s); bars: events (purple micro, brown macro)",
            fontsize=9,
        )
        ax.set_ylim(-0.02, 1.12)
    axes[0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("seconds; shaded: micro-expressions by label, macro grey; ticks: blinks")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def parse_spotter(items: list[str]) -> SpotterConfig:
    cfg = SpotterConfig()
    for item in items:
        key, _, value = item.partition("=")
        cur = getattr(cfg, key)
        cast = type(cur) if cur is not None else int
        cfg = cfg.model_copy(update={key: None if value == "none" else cast(value)})
    return cfg


def brief(rep: dict[str, Any]) -> dict[str, Any]:
    m, d = rep["micro"], rep["distractors"]
    return {
        "f1": round(m["f1"], 3),
        "precision": round(m["precision"], 3),
        "recall": round(m["recall"], 3),
        "tp_fp_fn": (m["tp"], m["fp"], m["fn"]),
        "f1_per_stream": [round(s["f1"], 2) for s in rep["streams"] if not s["distractors_only"]],
        "label_accuracy": None if m["label_accuracy"] is None else round(m["label_accuracy"], 3),
        "false_alarms_per_min": None
        if d["false_alarms_per_minute"] is None
        else round(d["false_alarms_per_minute"], 2),
        "delay_p50_ms": rep["latency"]["detection_delay"]["p50_ms"],
        **({"fp_causes": rep["fp_causes"]} if "fp_causes" in rep else {}),
    }


def load_torch(ckpt: Path) -> TorchModel:
    import torch

    from edge_mer.convert.checkpoint import read_weights

    sys.path.insert(0, str(Path(__file__).parent))
    from exp_models import build

    tensors, meta = read_weights(ckpt)
    model = build(json.loads(meta["edge_mer_config"]))
    model.load_state_dict(tensors)
    torch.set_grad_enabled(False)
    return TorchModel(model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--graph", default="encoder")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--streams", nargs="+", default=["eval-50000", "distr-50000"])
    ap.add_argument("--tune", nargs="*", help="choose the spotter on these cached streams")
    ap.add_argument("--spotter", nargs="*", default=[], help="key=value [spotter] settings")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="PNG of the first --plot-streams streams")
    ap.add_argument("--plot-streams", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--plot-seconds", type=float, default=30.0)
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    model = OrtModel(args.bundle, args.graph) if args.bundle else load_torch(args.ckpt)
    settings = parse_spotter(args.spotter)
    out: dict[str, Any] = {}
    if args.tune:
        tstreams = load_cached(args.cache, args.tune)
        settings, trep = tune(tstreams, stream_probs(model, tstreams), model.window, model.fps)
        out["tuned_on"] = {"streams": args.tune, **brief(trep)}
    out["spotter"] = settings.model_dump(mode="json")
    streams = load_cached(args.cache, args.streams)
    probs = stream_probs(model, streams)
    rep = score(streams, probs, model.window, model.fps, settings, causes=True)
    if args.plot:
        sel = args.plot_streams
        plot_streams(
            args.plot,
            [streams[i] for i in sel],
            [probs[i] for i in sel],
            model.window,
            model.fps,
            settings,
            args.plot_seconds,
            args.title,
        )
    out["eval"] = brief(rep)
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps({**out, "report": rep}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
