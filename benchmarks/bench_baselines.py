"""Baselines benchmark: our streaming pipeline next to what a user would otherwise run.

Run from the repository root (see benchmarks/README.md for what is measured and why):

    python benchmarks/bench_baselines.py [--quick] [--threads N] [--markdown FILE] [--json FILE]

Everything happens in one process and one run, on the same stream of frames, so the ratios
are measured side by side. Per new frame, every row produces the logits of the last T frames:

(a) the PyTorch model in eager mode, re-run on the whole window every frame (what most
    research real-time demos do), under ``torch.inference_mode()``;
(b) ONNX Runtime on ``clip.onnx`` quantized by ``quantize_static(clip, out, reader)`` with
    every option at its default (QDQ), re-run on the window every frame; (b0) the FP32
    ``clip.onnx`` the same way, for reference;
(c) ours: the bundle's encoder on the new frame only, then ``StateCache.step_batch`` over T
    banks (stride 1: exactly the clip graph on the last T frames), for each encoder graph
    ``convert --int8`` wrote (FP32, INT8 s8s8, INT8 u8s8 when present).

The rows are timed round-robin, one frame each per round in a shuffled order, after
untimed warm-up rounds. Two architectures: the demo model (64x64 gray, T = 12) and a
ResNet-18 encoder (112x112 gray, T = 16). Random weights (timing does not depend on them);
nothing is downloaded. A benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bench.measure import Streaming
from edge_mer.bundle import Bundle
from edge_mer.calibration.readers import load_clips
from edge_mer.calibration.synth_io import synthesize
from edge_mer.convert.checkpoint import save_checkpoint
from edge_mer.convert.demo import DEMO_MODEL
from edge_mer.convert.models import build
from edge_mer.convert.pipeline import ConvertOptions, convert
from edge_mer.pipeline.preprocess import FramePreprocessor
from edge_mer.streaming import ort_session

# The shared benchmark helpers (machine facts, ORT defaults, reporting) live next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import machine_facts, ort_default_options, run_and_report

Say = Callable[[str], None]

RESNET18_112_T16 = {
    **DEMO_MODEL,
    "cnn": "resnet18",
    "input": {**DEMO_MODEL["input"], "height": 112, "width": 112, "channels": 1, "window": 16},
}

MODELS = {
    "demo": ("demo: small CNN, 64x64 gray, T=12", DEMO_MODEL),
    "resnet18": ("ResNet-18, 112x112 gray, T=16", RESNET18_112_T16),
}

ROWS = {
    "torch_eager": "(a) PyTorch eager, window per frame",
    "ort_default_qdq": "(b) ORT quantize_static defaults (QDQ), clip.onnx per frame",
    "ort_fp32_clip": "(b0) ORT FP32 clip.onnx per frame",
    "ours_fp32": "(c) ours, FP32 encoder + StateCache",
    "ours_int8_s8s8": "(c) ours, INT8 s8s8 encoder + StateCache",
    "ours_int8_u8s8": "(c) ours, INT8 u8s8 encoder + StateCache",
}
OURS = {
    "ours_fp32": "encoder",
    "ours_int8_s8s8": "encoder_int8",
    "ours_int8_u8s8": "encoder_int8_u8s8",
}


# ---------------------------------------------------------------- rows


class Window:
    """The last T frames in one ``[1, T, H, W, C]`` uint8 array, shifted by one per frame,
    and a whole-window model run on it every frame. ``logits`` holds the last result."""

    def __init__(self, shape: tuple[int, ...], run: Callable[[np.ndarray], np.ndarray]):
        self.win = np.zeros((1, *shape), np.uint8)
        self.run = run
        self.logits = np.zeros(0, np.float32)

    def __call__(self, frame: np.ndarray, now: float) -> None:
        w = self.win[0]
        w[:-1] = w[1:]
        w[-1] = frame
        self.logits = self.run(self.win)

    def close(self) -> None:
        pass


def torch_row(model: Any, shape: tuple[int, ...]) -> Window:
    import torch

    def run(win: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(win))[0].numpy()

    return Window(shape, run)


def ort_clip_row(path: Path, shape: tuple[int, ...], threads: int) -> Window:
    sess = ort_session(path, threads)
    return Window(shape, lambda win: sess.run(["logits"], {"clip": win})[0][0])


class ClipWindowReader:
    """ORT's CalibrationDataReader protocol over ``[1, T, H, W, C]`` uint8 windows (the clip
    graph's input): one window per ``get_next()``, then ``None``."""

    def __init__(self, windows: np.ndarray) -> None:
        self.windows = windows
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.windows):
            return None
        self.i += 1
        return {"clip": self.windows[self.i - 1 : self.i]}


def ort_default_qdq(clip: Path, out: Path, windows: np.ndarray) -> Path:
    """``quantize_static(clip, out, reader)`` with every option at ORT's default."""
    from onnxruntime.quantization import quantize_static

    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration progress
        quantize_static(str(clip), str(out), ClipWindowReader(windows))
    return out


# ---------------------------------------------------------------- one model


def calibration_windows(calib: Path, spec: dict[str, Any], count: int) -> np.ndarray:
    """Up to ``count`` non-overlapping T-frame windows of the calibration clips, preprocessed
    as on the device: uint8 ``[n, T, H, W, C]``."""
    pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
    clips, _ = load_clips(calib, pre, fps=spec["fps"])
    t = int(spec["window"])
    wins = [c[i : i + t] for c in clips for i in range(0, len(c) - t + 1, t)]
    step = max(1, len(wins) // count)
    return np.stack(wins[::step][:count])


def stream_frames(spec: dict[str, Any], n: int, seed: int = 7) -> np.ndarray:
    """``n`` frames of the synthetic face stream at the model's input size, uint8
    ``[n, H, W, C]``, generated before timing starts."""
    from edge_mer.calibration.synth import generate_stream

    frames, _ = generate_stream(seconds=n / spec["fps"], fps=spec["fps"], seed=seed, lazy=False)
    pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
    return np.stack([pre(f) for f in frames[:n]])


def bench_model(
    name: str,
    config: dict[str, Any],
    calib: Path,
    work: Path,
    *,
    rounds: int,
    warmup: int,
    threads: int,
    calib_windows: int,
    say: Say,
) -> dict[str, Any]:
    import torch

    d = work / name
    d.mkdir()
    torch.manual_seed(0)
    model = build(config).eval()
    save_checkpoint(model, d / "model.safetensors", config)
    say(f"{name}: convert --int8")
    t0 = time.perf_counter()
    manifest = convert(
        d / "model.safetensors",
        d / "bundle",
        ConvertOptions(int8=True, calib=calib, force=True, max_calib_frames=256),
    )
    convert_s = time.perf_counter() - t0
    bundle = Bundle.open(d / "bundle")
    spec = bundle.input
    t = int(spec["window"])
    shape = (t, spec["height"], spec["width"], spec["channels"])
    failed: dict[str, str] = {}

    say(f"{name}: quantize_static(clip.onnx) with ORT's defaults, {calib_windows} windows")
    wins = calibration_windows(calib, spec, calib_windows)
    qdq = d / "clip.ort_default.onnx"
    t0 = time.perf_counter()
    try:
        ort_default_qdq(bundle.graph_path("clip"), qdq, wins)
    except Exception as exc:  # a baseline that cannot be built is a result, not a crash
        failed["ort_default_qdq"] = f"quantize_static failed: {type(exc).__name__}: {exc}"
    qdq_s = time.perf_counter() - t0

    rows: dict[str, Any] = {"torch_eager": torch_row(model, shape)}
    if "ort_default_qdq" not in failed:
        try:
            row = ort_clip_row(qdq, shape, threads)
            row(wins[0][-1], 0.0)  # one run before timing: fail here, not mid-loop
            rows["ort_default_qdq"] = row
        except Exception as exc:
            failed["ort_default_qdq"] = f"ORT cannot run it: {type(exc).__name__}: {exc}"
    rows["ort_fp32_clip"] = ort_clip_row(bundle.graph_path("clip"), shape, threads)
    graphs = bundle.manifest["graphs"]
    for row, graph in OURS.items():
        if graph in graphs:
            rows[row] = Streaming(bundle, 1, threads, encoder_graph=graph)
    for r in rows.values():  # fresh windows and banks: the warm-up probe above is forgotten
        if isinstance(r, Window):
            r.win[:] = 0

    frames = stream_frames(spec, warmup + rounds)
    names = list(rows)
    times: dict[str, list[float]] = {k: [] for k in names}
    logits: dict[str, list[np.ndarray]] = {k: [] for k in names}
    say(f"{name}: {warmup} warm-up + {rounds} interleaved frames, rows: {', '.join(names)}")
    fps = float(spec["fps"])
    # A fresh random order every frame, not a rotation: a rotation keeps each row behind the
    # same neighbour, and a row that runs right after a 100 ms window re-run finds the CPU
    # caches cold, which a rotation charges to the same row every time.
    order = np.random.default_rng(0)
    try:
        for i in range(warmup + rounds):
            for k in order.permutation(names).tolist():
                t0 = time.perf_counter()
                rows[k](frames[i], i / fps)
                dt = time.perf_counter() - t0
                if i >= warmup:
                    times[k].append(dt)
                if i >= t - 1:  # every row has a full window from here on
                    logits[k].append(np.array(rows[k].logits, np.float32))
            if (i + 1) % max(1, (warmup + rounds) // 4) == 0:
                say(f"  frame {i + 1}/{warmup + rounds}")
    finally:
        for r in rows.values():
            r.close()

    ref = np.stack(logits["torch_eager"])
    top_ref = ref.argmax(1)
    out: dict[str, Any] = {}
    for k in names:
        ms = np.asarray(times[k]) * 1e3
        lg = np.stack(logits[k])
        out[k] = {
            "median_ms": float(np.median(ms)),
            "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)),
            "top1_agreement": float(np.mean(lg.argmax(1) == top_ref)),
            "max_abs_logit_diff": float(np.abs(lg - ref).max()),
        }
    for k, why in failed.items():
        out[k] = {"failed": why}
    a = out["torch_eager"]["median_ms"]
    b = out.get("ort_default_qdq", {}).get("median_ms")
    for v in out.values():
        if "median_ms" in v:
            v["fps"] = 1e3 / v["median_ms"]
            v["speedup_vs_a"] = a / v["median_ms"]
            v["speedup_vs_b"] = b / v["median_ms"] if b else None
    target = manifest["targets"].get(f"onnxruntime-{platform.machine().lower()}")
    return {
        "window": t,
        "frame": list(shape[1:]),
        "rounds": rounds,
        "warmup": warmup,
        "compared_windows": len(ref),
        "torch_top1_classes": len(np.unique(top_ref)),
        # How far (a)'s logits move across windows: the scale for max_abs_logit_diff.
        "torch_logit_spread": float((ref.max(0) - ref.min(0)).max()),
        "convert_int8_s": round(convert_s, 2),
        "ort_default_quantize_s": round(qdq_s, 2),
        "ort_default_calibration_windows": len(wins),
        "graphs": sorted(g for g in graphs if g.startswith("encoder")),
        "cpu_target": target,
        "int8_agreement": manifest["verification"]["int8"]["top1_agreement"],
        "rows": {k: out[k] for k in ROWS if k in out},
    }


# ---------------------------------------------------------------- report


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def render_markdown(res: dict[str, Any]) -> str:
    m, s = res["machine"], res["settings"]
    half = 0.5 * max(1, m["usable_cpus"])
    own = s["threads"] or m["usable_cpus"]  # busy threads of this process while timing
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['arch']}, {m['usable_cpus']} usable of "
        f"{m['logical_cpus']} logical CPUs; AVX2 {_yes(m['avx2'])}, AVX512-VNNI "
        f"{_yes(m['avx512_vnni'])}, AVX-VNNI {_yes(m['avx_vnni'])}).",
        f"Python {m['python']}, torch {m['torch']}, onnx {m['onnx']}, onnxruntime "
        f"{m['onnxruntime']}, numpy {m['numpy']}. Threads: ORT intra-op "
        f"{s['threads'] or 'default'}, torch {s['torch_threads']}.",
        f"Load average (1 min) at start {res['load'][0]:.2f}, at end {res['load'][1]:.2f} "
        f"(this run itself adds about {own} to the end figure)"
        + (
            ": **other work shared the CPUs**; the ratios (interleaved) are the better guide."
            if res["load"][0] > half or res["load"][1] - own > half
            else "."
        ),
        "",
        "**Per-frame cost, logits of the last T frames on every new frame** (median and p90 "
        "over the timed frames, rows interleaved frame by frame; speed-up vs (a) = median of "
        "(a) / median of the row, above 1 is faster, likewise vs (b); top-1 and logits vs (a) "
        "on the same windows; spread of (a) = how far (a)'s logits move across the windows)",
        "",
        "| model | row | median ms | p90 ms | fps | speed-up vs (a) | speed-up vs (b) "
        "| top-1 vs (a) | max abs logit diff | diff / spread of (a) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for mod in res["models"].values():
        for k, v in mod["rows"].items():
            title = ROWS[k] + (" *" if OURS.get(k) == mod["cpu_target"] else "")
            if "failed" in v:
                lines.append(f"| {mod['title']} | {title} | failed | | | | | | | |")
                notes.append(f"{mod['title']}, {ROWS[k]}: {v['failed']}")
                continue
            vb = "-" if v["speedup_vs_b"] is None else f"{v['speedup_vs_b']:.2f}"
            if k == "torch_eager":
                agree = "ref | ref | ref"
            else:
                rel = v["max_abs_logit_diff"] / max(mod["torch_logit_spread"], 1e-12)
                agree = f"{v['top1_agreement']:.3f} | {v['max_abs_logit_diff']:.2g} | {rel:.2g}"
            lines.append(
                f"| {mod['title']} | {title} | {v['median_ms']:.3f} | {v['p90_ms']:.3f} "
                f"| {v['fps']:.0f} | {v['speedup_vs_a']:.2f} | {vb} | {agree} |"
            )
    od = ", ".join(f"{k}={v}" for k, v in res["ort_default_options"].items())
    lines += ["", "`*` = the encoder graph the bundle's `targets` pick for ONNX Runtime here."]
    for mod in res["models"].values():
        lines.append(
            f"{mod['title']}: {mod['rounds']} timed frames after {mod['warmup']} warm-up; "
            f"{mod['compared_windows']} windows compared, (a) picked "
            f"{mod['torch_top1_classes']} distinct top-1 class(es) and its logits moved by "
            f"up to {mod['torch_logit_spread']:.2g} across windows; `convert --int8` "
            f"{mod['convert_int8_s']:.1f} s, wrote {', '.join(mod['graphs'])} (held-out INT8 "
            f"agreement {mod['int8_agreement']:.3f}); ORT default quantize_static "
            f"{mod['ort_default_quantize_s']:.1f} s on {mod['ort_default_calibration_windows']}"
            " windows."
        )
    lines += [
        "",
        f"(b) is `quantize_static(clip.onnx, out, reader)` with nothing else passed: {od} "
        "(activations asymmetric, every quantizable op type, no `quant_pre_process`).",
    ]
    lines += [f"Failed: {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    res: dict[str, Any] = {
        "machine": machine_facts(),
        "ort_default_options": ort_default_options(),
        "settings": {
            "threads": args.threads,
            "torch_threads": torch.get_num_threads(),
            "quick": args.quick,
            "warmup": args.warmup,
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="edge-mer-baselines-") as tmp:
        work = Path(tmp)
        say("synthesising calibration clips (2 subjects x 2 clips per emotion, 200 fps)")
        summary = synthesize(work / "calib", subjects=2, clips_per_emotion=2, fps=200.0, seed=1000)
        calib = Path(summary["casme2"])
        res["calibration"] = {"clips": summary["clips"], "frames_at_200fps": summary["frames"]}
        for name, (title, config) in MODELS.items():
            if name == "resnet18" and args.skip_resnet:
                continue
            rounds = args.resnet_rounds if name == "resnet18" else args.rounds
            if args.quick:
                rounds = min(rounds, 12 if name == "resnet18" else 100)
            warmup = max(args.warmup, int(config["input"]["window"]))
            mod = bench_model(
                name,
                config,
                calib,
                work,
                rounds=rounds,
                warmup=warmup,
                threads=args.threads,
                calib_windows=8 if args.quick else 16,
                say=say,
            )
            mod["title"] = title
            res["models"][name] = mod
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=400, help="timed frames, demo model")
    p.add_argument("--resnet-rounds", type=int, default=60, help="timed frames, ResNet-18")
    p.add_argument(
        "--warmup", type=int, default=20, help="untimed frames first (at least the window)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="ORT and torch threads (0 = their defaults)"
    )
    p.add_argument(
        "--quick", action="store_true", help="100 / 12 timed frames, 8 calibration windows"
    )
    p.add_argument("--skip-resnet", action="store_true")
    p.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    p.add_argument("--json", type=Path, help="write every figure as JSON here")
    args = p.parse_args(argv)
    if min(args.rounds, args.resnet_rounds) < 1 or args.warmup < 0 or args.threads < 0:
        p.error(
            f"--rounds {args.rounds!r} and --resnet-rounds {args.resnet_rounds!r} must be at "
            f"least 1, --warmup {args.warmup!r} and --threads {args.threads!r} at least 0"
        )
    return run_and_report(run, render_markdown, args)


if __name__ == "__main__":
    sys.exit(main())
