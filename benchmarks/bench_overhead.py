"""Per-frame overhead of the live pipeline around the model, several bundles interleaved.

For each round and each bundle (the order rotates every round), one
:func:`edge_mer.bench.measure.pipeline_vs_model` run, exactly what ``edge-mer bench`` times
per row (the synthetic stream replayed from memory, face detector ``none``, no sinks,
``chunks`` alternating chunks of pipeline and model-only frames; the replayed frames in the
model's camera format, or each of ``--frame-formats``), and, with ``--floor``, a
bookkeeping-free loop on the same runners: read the replayed frame, preprocess it into the
encoder input, encoder, state cache, softmax, spotter, nothing else (no resampler, face
stage, clocks, metrics or capture object). Reported per bundle: the median over rounds of
pipeline fps / model-only fps, its range, fps, the stage means (µs, the pipeline's own
StageClock) and the floor loop's ratio. Nothing asserts on time.

    python benchmarks/bench_overhead.py --bundle demo=edge-mer-demo/bundle \
        --bundle resnet18=/tmp/resnet/bundle --rounds 6 --threads 1 --floor --json r.json

Without ``--bundle`` it builds two FP32 bundles with random weights (``torch`` needed): the
demo architecture (64x64 gray, T = 12) and a ResNet-18 encoder (112x112 gray, T = 32).
It runs on any edge-mer with ``pipeline_vs_model`` (the figures before and after a change
come from running it on each).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("capture", "face", "preprocess", "encoder", "step", "spotting")


def _fmt_kw(fmt: str) -> dict[str, str]:
    """BGR is the replay's default, and the only format before ``format=gray`` existed."""
    return {} if fmt == "bgr" else {"fmt": fmt}


def _config(bundle: Any, frames: int, threads: int, fmt: str = "bgr") -> Any:
    from edge_mer.bench.measure import replay_uri
    from edge_mer.bench.run import BenchOptions, _config

    source = replay_uri(float(bundle.input["fps"]), frames, **_fmt_kw(fmt))
    return _config(bundle, source, "onnxruntime", "none", BenchOptions(threads=threads))


def pipeline_round(
    bundle: Any, frames: int, warmup: int, chunks: int, threads: int, fmt: str = "bgr"
) -> dict:
    """One ``edge-mer bench`` timing of ``bundle``: efficiency, fps, stage means (µs)."""
    from edge_mer.bench.measure import pipeline_vs_model

    cfg = _config(bundle, warmup + frames + 100, threads, fmt)
    out = pipeline_vs_model(cfg, frames=frames, warmup=warmup, chunks=chunks)
    stages = {s: out["stages"][s]["mean_ms"] * 1e3 for s in STAGES if s in out["stages"]}
    return {
        "efficiency": out["efficiency"],
        "pipeline_fps": out["pipeline_fps"],
        "model_only_fps": out["model_only_fps"],
        "stages_us": stages,
    }


def floor_round(bundle: Any, frames: int, warmup: int, threads: int, fmt: str = "bgr") -> dict:
    """The same runners without the pipeline's bookkeeping, against the model-only loop,
    in alternating chunks: what is left when only the work a frame needs remains."""
    from edge_mer.bench.measure import LOOP_S, pregenerated
    from edge_mer.pipeline.live import LivePipeline
    from edge_mer.pipeline.state_cache import StateCache, rows_per_track
    from edge_mer.runners import select_runner

    fps = float(bundle.input["fps"])
    window = int(bundle.input["window"])
    images = pregenerated(fps, (128, 128), 7, LOOP_S, **_fmt_kw(fmt))
    with LivePipeline(_config(bundle, 2 * (warmup + frames), threads, fmt)) as p:
        row = p.encoder.inputs["frames"][0]
        probs = np.zeros(len(bundle.labels), np.float32)
        box = (0, 0, images.shape[2], images.shape[1])
        sel = select_runner(
            bundle,
            "onnxruntime",
            max_batch=1,
            step_max_batch=rows_per_track(bundle.state_kind, window),
            threads=threads,
        )
        with sel.encoder as enc, sel.step as step:
            cache = StateCache(
                bundle.states, 1, step=step, window=window, state_kind=bundle.state_kind
            )
            pool = np.random.default_rng(1).integers(
                0, 256, (64, *enc.inputs["frames"].shape[1:]), dtype=np.uint8
            )
            count = {"floor": 0, "model": 0}

            def floor(n: int) -> float:
                i0 = count["floor"]
                t0 = time.perf_counter()
                for i in range(i0, i0 + n):
                    ts = i / fps
                    p.pre(images[i % len(images)], box, out=row)
                    feats = p.encoder.infer(1)["features"]
                    logits, ready = p.cache.step_batch([0], feats, now=ts)
                    x = logits.tolist()[0]
                    top = max(x)
                    e = [math.exp(v - top) for v in x]
                    inv = 1.0 / sum(e)
                    probs[:] = [v * inv for v in e]
                    if ready[0]:
                        p.spotter.update(0, ts, probs)
                count["floor"] = i0 + n
                return time.perf_counter() - t0

            def model(n: int) -> float:
                i0 = count["model"]
                frames_in = enc.inputs["frames"]
                t0 = time.perf_counter()
                for i in range(i0, i0 + n):
                    frames_in[0] = pool[i % 64]
                    cache.step_batch([0], enc.infer(1)["features"], now=i / fps)
                count["model"] = i0 + n
                return time.perf_counter() - t0

            floor(warmup)
            model(warmup)
            chunk = max(1, frames // 4)
            ratios = [(model(chunk) / chunk) / (floor(chunk) / chunk) for _ in range(4)]
    return {"floor_ratio": statistics.median(ratios)}


def build_default(work: Path, say: Any) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_runtime import _model, make_bundle

    say("building FP32 bundles with random weights (demo architecture, ResNet-18) ...")
    return {
        "demo": make_bundle(_model("small", 64, 12), work / "demo"),
        "resnet18": make_bundle(_model("resnet18", 112, 32), work / "resnet18"),
    }


def summarize(rows: list[dict]) -> dict:
    eff = [r["efficiency"] for r in rows]
    out = {
        "rounds": len(rows),
        "efficiency_median": statistics.median(eff),
        "efficiency_min": min(eff),
        "efficiency_max": max(eff),
        "efficiency_all": eff,
        "pipeline_fps_median": statistics.median(r["pipeline_fps"] for r in rows),
        "model_only_fps_median": statistics.median(r["model_only_fps"] for r in rows),
        "stages_us_median": {
            s: statistics.median(r["stages_us"][s] for r in rows if s in r["stages_us"])
            for s in STAGES
            if any(s in r["stages_us"] for r in rows)
        },
    }
    floors = [r["floor_ratio"] for r in rows if "floor_ratio" in r]
    if floors:
        out["floor_ratio_median"] = statistics.median(floors)
    return out


def render(res: dict) -> str:
    head = "| bundle | rounds | efficiency (median) | range | pipeline fps | model-only fps |"
    lines = [head, "|---|---:|---:|---|---:|---:|"]
    for name, s in res["bundles"].items():
        lines.append(
            f"| {name} | {s['rounds']} | {s['efficiency_median']:.3f} | "
            f"{s['efficiency_min']:.3f}-{s['efficiency_max']:.3f} | "
            f"{s['pipeline_fps_median']:.0f} | {s['model_only_fps_median']:.0f} |"
        )
    lines += ["", "| bundle | " + " | ".join(STAGES) + " | model-only | floor ratio |"]
    lines.append("|---|" + "---:|" * (len(STAGES) + 2))
    for name, s in res["bundles"].items():
        st = s["stages_us_median"]
        model = 1e6 / s["model_only_fps_median"]
        floor = f"{s['floor_ratio_median']:.3f}" if "floor_ratio_median" in s else "-"
        cells = " | ".join(f"{st[k]:.1f}" if k in st else "-" for k in STAGES)
        lines.append(f"| {name} | {cells} | {model:.1f} | {floor} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", action="append", default=[], help="NAME=PATH (repeatable)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--frames", type=int, default=600, help="timed frames per run (bench's)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="ORT intra-op threads (0 = edge-mer's default, by the encoder's size)",
    )
    ap.add_argument("--floor", action="store_true", help="also time the bookkeeping-free loop")
    ap.add_argument(
        "--frame-formats",
        default="auto",
        help="comma-separated replay formats, each a row per bundle: auto (gray for a gray "
        "model, as edge-mer bench), gray, bgr",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    formats = [f.strip() for f in args.frame_formats.split(",") if f.strip()]
    if not formats or any(f not in ("auto", "gray", "bgr") for f in formats):
        ap.error(f"--frame-formats {args.frame_formats!r}: give auto, gray and/or bgr")

    from edge_mer import __version__
    from edge_mer.bundle import Bundle

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        if args.bundle:
            bundles = {}
            for spec in args.bundle:
                name, _, path = spec.partition("=")
                bundles[name] = Bundle.open(path)
        else:
            bundles = build_default(Path(tmp), say)
        if "auto" in formats:  # an edge-mer from before frame formats: --frame-formats bgr
            from edge_mer.bench.replay import model_format
        runs = {}  # row name -> (bundle, frame format)
        for name, b in bundles.items():
            for f in dict.fromkeys(model_format(b) if f == "auto" else f for f in formats):
                runs[name if len(formats) == 1 else f"{name} {f}"] = (b, f)
        names = list(runs)
        rows: dict[str, list[dict]] = {n: [] for n in names}
        load = [Path("/proc/loadavg").read_text().split()[0]]
        started = time.perf_counter()
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                b, f = runs[name]
                row = pipeline_round(b, args.frames, args.warmup, args.chunks, args.threads, f)
                if args.floor:
                    row.update(floor_round(b, args.frames, args.warmup, args.threads, f))
                rows[name].append(row)
                say(f"round {r + 1}/{args.rounds} {name}: efficiency {row['efficiency']:.3f}")
        load.append(Path("/proc/loadavg").read_text().split()[0])
    res = {
        "tool": f"edge-mer {__version__}",
        "settings": vars(args) | {"json": None, "markdown": None},
        "load_average_1min": {"start": float(load[0]), "end": float(load[1])},
        "seconds": time.perf_counter() - started,
        "bundles": {n: summarize(rows[n]) for n in names},
    }
    res["settings"]["bundle"] = {n: str(runs[n][0].path) for n in names}
    res["settings"]["frame_format"] = {n: runs[n][1] for n in names}
    text = render(res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
