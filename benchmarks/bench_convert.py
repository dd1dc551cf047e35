"""Conversion-stage benchmark: convert time of the demo model, encoder latency FP32 vs INT8.

Run from the repository root (see benchmarks/README.md for what is measured and why):

    python benchmarks/bench_convert.py [--repeats N] [--quick] [--markdown FILE] [--json FILE]

Everything happens in one process and one run, so the ratios are measured side by side:

1. Machine facts (CPU model, cores, VNNI flags) and library versions.
2. ``convert()`` wall time for the demo model (random weights: training is not part of
   convert time), FP32 only and with ``--int8``, each the median of ``--repeats`` runs.
3. Encoder latency under ONNX Runtime (CPU) for the demo encoder (64x64 gray, small CNN)
   and a ResNet-18-class encoder (112x112 gray): FP32, the project's two INT8 flavours
   (``s8s8``, ``u8s8`` from :class:`Quantizer`) and ORT's plain default ``quantize_static``,
   all from the same calibration frames. The variants are timed round-robin, one call each
   per round, so machine noise hits them equally; the median per variant is reported.

A benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.calibration.readers import EncoderCalibrationReader, load_clips
from edge_mer.calibration.synth_io import synthesize
from edge_mer.convert.checkpoint import load_model, save_checkpoint
from edge_mer.convert.demo import DEMO_MODEL
from edge_mer.convert.export import export_graphs
from edge_mer.convert.models import build
from edge_mer.convert.pipeline import ConvertOptions, convert
from edge_mer.convert.quantize import Quantizer, zero_points
from edge_mer.pipeline.preprocess import FramePreprocessor
from edge_mer.streaming import ort_session

Say = Callable[[str], None]

# A ResNet-18-class encoder at 112x112 gray: the reference figure is for this shape.
RESNET18_112 = {
    **DEMO_MODEL,
    "cnn": "resnet18",
    "input": {**DEMO_MODEL["input"], "height": 112, "width": 112, "channels": 1},
}

VARIANTS = {
    "fp32": "FP32 (exported graph)",
    "s8s8": "INT8 s8s8: Quantizer, symmetric int8 activations, all zero points 0",
    "u8s8": "INT8 u8s8: Quantizer, asymmetric uint8 activations",
    "ort_default": "INT8 ORT default: quantize_static(fp32, out, reader)",
}


# ---------------------------------------------------------------- machine facts


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
    return (
        model.group(1).strip() if model else platform.machine(),
        set(flags.group(1).split()) if flags else set(),
    )


def machine_facts() -> dict[str, Any]:
    """CPU, cores, the INT8-relevant ISA flags and the versions that shape the numbers."""
    import onnx
    import onnxruntime
    import torch

    model, flags = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": model,
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "avx2": "avx2" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "arm_dotprod": "asimddp" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


# ---------------------------------------------------------------- convert time


def _checkpoint(config: dict[str, Any], path: Path, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    save_checkpoint(build(config).eval(), path, config)
    return path


def bench_convert(work: Path, calib: Path, repeats: int, say: Say) -> dict[str, Any]:
    """Median ``convert()`` seconds for the demo model, FP32 only and ``--int8``.

    One untimed FP32 convert first (lazy imports, first-call caches), then the two modes
    alternate, so a slow spell of the machine hits both.
    """
    ckpt = _checkpoint(DEMO_MODEL, work / "demo-random.safetensors")
    modes = {
        "fp32": lambda: ConvertOptions(calib=calib, force=True),
        "int8": lambda: ConvertOptions(int8=True, calib=calib, force=True),
    }
    convert(ckpt, work / "bundle-warmup", modes["fp32"]())
    times: dict[str, list[float]] = {k: [] for k in modes}
    manifest: dict[str, Any] = {}
    for i in range(repeats):
        for label, opts in modes.items():
            t0 = time.perf_counter()
            m = convert(ckpt, work / f"bundle-{label}", opts())
            times[label].append(time.perf_counter() - t0)
            say(f"convert {label} run {i + 1}/{repeats}: {times[label][-1]:.2f} s")
            if label == "int8":
                manifest = m
    out: dict[str, Any] = {
        k: {"median_s": statistics.median(ts), "runs_s": ts} for k, ts in times.items()
    }
    v = manifest["verification"]["int8"]
    out["int8"].update(
        top1_agreement=v["top1_agreement"],
        held_out_windows=v["held_out_windows"],
        float_layers=len(v["float_layers"]),
        latency_in_manifest_ms=v["encoder_latency_ms"],
        cpu_target=manifest["targets"].get(f"onnxruntime-{platform.machine().lower()}", "?"),
    )
    return out


# ---------------------------------------------------------------- INT8 variants


def _calibration_frames(calib: Path, spec: dict[str, Any], max_frames: int) -> np.ndarray:
    pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
    clips, _ = load_clips(calib, pre, fps=spec["fps"])
    frames = np.concatenate(clips)
    stride = max(1, int(np.ceil(len(frames) / max_frames)))
    return frames[::stride]


def _reader(frames: np.ndarray, batch: int = 32) -> EncoderCalibrationReader:
    # Equal batches, as the pipeline does: histogram calibrators fail on a short last one.
    batch = min(batch, len(frames))
    return EncoderCalibrationReader([frames[: len(frames) // batch * batch]], batch_size=batch)


def ort_default_options() -> dict[str, str]:
    """What ``quantize_static(fp32, out, reader)`` does with nothing else passed, read from
    the installed ORT (``ActivationSymmetric`` defaults to False inside ORT's quantizer)."""
    from onnxruntime.quantization import quantize_static

    keep = ("quant_format", "activation_type", "weight_type", "per_channel", "calibrate_method")
    params = inspect.signature(quantize_static).parameters
    return {k: str(params[k].default) for k in keep if k in params}


def build_variants(
    name: str, config: dict[str, Any], calib: Path, work: Path, method: str, max_frames: int
) -> dict[str, Any]:
    """Export the FP32 encoder of ``config`` and quantize it three ways from one frame set."""
    from onnxruntime.quantization import quantize_static

    d = work / name
    d.mkdir()
    loaded = load_model(_checkpoint(config, d / "model.safetensors"))
    export_graphs(loaded, d)
    fp32 = d / "encoder.onnx"
    frames = _calibration_frames(calib, loaded.spec, max_frames)
    q = Quantizer(fp32, _reader(frames), method, d)
    paths = {
        "fp32": fp32,
        "s8s8": q.quantize(d / "encoder.s8s8.onnx", "s8s8"),
        "u8s8": q.quantize(d / "encoder.u8s8.onnx", "u8s8"),
    }
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration progress
        quantize_static(str(fp32), str(d / "encoder.ort_default.onnx"), _reader(frames))
    paths["ort_default"] = d / "encoder.ort_default.onnx"
    zps = {k: zero_points(p) for k, p in paths.items() if k != "fp32"}
    spec = loaded.spec
    return {
        "paths": paths,
        "frame": (spec["height"], spec["width"], spec["channels"]),
        "calibration_frames": int(len(frames) // min(32, len(frames)) * min(32, len(frames))),
        "method": method,
        "quantized_layers": len(q.nodes),
        "zero_points_all_zero": {k: all(np.all(z == 0) for z in v) for k, v in zps.items()},
        "qdq_nodes": {k: len(v) for k, v in zps.items()},
    }


# ---------------------------------------------------------------- latency


def interleaved_latency(
    paths: dict[str, Path],
    frame: tuple[int, int, int],
    *,
    batch: int,
    rounds: int,
    warmup: int = 20,
    threads: int = 0,
) -> dict[str, dict[str, float]]:
    """Milliseconds per encoder call on ``batch`` uint8 frames, for every variant.

    Each round calls every variant once (in a rotated order, so none always runs right
    after another); returns median, p10 and p90 per variant over ``rounds`` rounds.
    """
    sessions = {k: ort_session(p, threads) for k, p in paths.items()}
    x = np.random.default_rng(0).integers(0, 256, (batch, *frame), dtype=np.uint8)
    feed = {"frames": x}
    for _ in range(warmup):
        for s in sessions.values():
            s.run(None, feed)
    names = list(sessions)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        k0 = r % len(names)
        for k in names[k0:] + names[:k0]:
            t0 = time.perf_counter()
            sessions[k].run(None, feed)
            times[k].append(time.perf_counter() - t0)
    out = {}
    for k, ts in times.items():
        ms = np.asarray(ts) * 1e3
        out[k] = {
            "median_ms": float(np.median(ms)),
            "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)),
        }
    return out


# ---------------------------------------------------------------- report


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def render_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['arch']}, {m['usable_cpus']} usable of "
        f"{m['logical_cpus']} logical CPUs; AVX2 {_yes(m['avx2'])}, AVX512-VNNI "
        f"{_yes(m['avx512_vnni'])}, AVX-VNNI {_yes(m['avx_vnni'])}).",
        f"Python {m['python']}, torch {m['torch']}, onnx {m['onnx']}, onnxruntime "
        f"{m['onnxruntime']}, numpy {m['numpy']}.",
        f"Load average (1 min) at start {res['load'][0]:.2f}, at end {res['load'][1]:.2f}"
        + (
            ": **other work shared the CPUs**; medians of the larger encoder are inflated "
            "(p10 is closer to an idle machine), ratios are the better guide."
            if max(res["load"]) > 0.5 * max(1, m["usable_cpus"])
            else "."
        ),
        "",
    ]
    c = res.get("convert")
    if c:
        lines += [
            f"**Convert time, demo model** (random weights, {res['calibration']['clips']} "
            f"calibration clips; median of {res['settings']['repeats']} runs)",
            "",
            "| convert | median s | runs s |",
            "|---|---:|---|",
        ]
        for label, title in (("fp32", "FP32 only (export + verify)"), ("int8", "--int8")):
            e = c[label]
            runs = ", ".join(f"{t:.2f}" for t in e["runs_s"])
            lines.append(f"| {title} | {e['median_s']:.2f} | {runs} |")
        i8 = c["int8"]
        lines += [
            "",
            f"--int8: held-out top-1 agreement {i8['top1_agreement']:.3f}, "
            f"{i8['float_layers']} layer(s) kept in float, CPU target `{i8['cpu_target']}`.",
            "",
        ]
    s = res["settings"]
    od = ", ".join(f"{k}={v}" for k, v in res["ort_default_options"].items())
    lines += [
        f"**Encoder latency, ONNX Runtime CPU** (median of {s['rounds']} interleaved rounds "
        f"after {s['warmup']} warm-up rounds; intra-op threads "
        f"{s['threads'] or 'ORT default'}; ratio = variant / FP32 of the same statistic, "
        "below 1 is faster)",
        "",
        "| encoder | variant | zero points all 0 | batch 1 ms | p10 | ratio | p10 ratio "
        "| batch 8 ms | p10 | ratio | p10 ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for enc in res["encoders"].values():
        lat = enc["latency"]
        for v in VARIANTS:
            zp = "-" if v == "fp32" else _yes(enc["zero_points_all_zero"][v])
            cells = []
            for b in ("1", "8"):
                if b not in lat:
                    cells += ["-"] * 4
                    continue
                ms, p10 = lat[b][v]["median_ms"], lat[b][v]["p10_ms"]
                cells += [
                    f"{ms:.3f}",
                    f"{p10:.3f}",
                    f"{ms / lat[b]['fp32']['median_ms']:.2f}",
                    f"{p10 / lat[b]['fp32']['p10_ms']:.2f}",
                ]
            lines.append(f"| {enc['title']} | {v} | {zp} | {' | '.join(cells)} |")
    lines += [
        "",
        "Variants: "
        + "; ".join(f"`{k}` = {t}" for k, t in VARIANTS.items())
        + f". Project flavours: per-channel weights, {s['calib_method']} calibration, "
        "Conv/Gemm/MatMul only, after `quant_pre_process`, every such layer quantized "
        f"(no float fallback). ORT default, as installed: {od}; activations asymmetric "
        "(ActivationSymmetric=False), weights symmetric, every quantizable op type "
        "(Add, MaxPool, GlobalAveragePool too), no pre-processing.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    repeats = 1 if args.quick else args.repeats
    rounds = 50 if args.quick else args.rounds
    res: dict[str, Any] = {
        "machine": machine_facts(),
        "ort_default_options": ort_default_options(),
        "settings": {
            "repeats": repeats,
            "rounds": rounds,
            "warmup": args.warmup,
            "threads": args.threads,
            "calib_method": args.calib_method,
            "max_calib_frames": args.max_calib_frames,
            "quick": args.quick,
        },
    }
    with tempfile.TemporaryDirectory(prefix="edge-mer-bench-") as tmp:
        work = Path(tmp)
        say("synthesising calibration clips (3 subjects x 2 clips per emotion, 200 fps)")
        summary = synthesize(work / "calib", subjects=3, clips_per_emotion=2, fps=200.0, seed=1000)
        calib = Path(summary["casme2"])
        res["calibration"] = {"clips": summary["clips"], "frames_at_200fps": summary["frames"]}
        if not args.skip_convert:
            res["convert"] = bench_convert(work, calib, repeats, say)
        res["encoders"] = {}
        models = [("demo", "demo: small CNN, 64x64 gray", DEMO_MODEL)]
        if not args.skip_resnet:
            models.append(("resnet18_112", "ResNet-18, 112x112 gray", RESNET18_112))
        for name, title, config in models:
            say(f"{name}: exporting FP32 and quantizing s8s8, u8s8, ORT default")
            enc = build_variants(
                name, config, calib, work, args.calib_method, args.max_calib_frames
            )
            enc["title"] = title
            enc["latency"] = {}
            for batch in (1, 8):
                say(f"{name}: timing batch {batch}, {rounds} interleaved rounds")
                enc["latency"][str(batch)] = interleaved_latency(
                    enc["paths"],
                    enc["frame"],
                    batch=batch,
                    rounds=rounds,
                    warmup=args.warmup,
                    threads=args.threads,
                )
            enc["paths"] = {k: p.name for k, p in enc["paths"].items()}
            enc["frame"] = list(enc["frame"])
            res["encoders"][name] = enc
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="convert runs per mode (median)")
    p.add_argument("--rounds", type=int, default=200, help="interleaved latency rounds")
    p.add_argument("--warmup", type=int, default=20, help="untimed rounds before timing")
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = default)")
    p.add_argument("--calib-method", default="entropy", help="the project flavours' method")
    p.add_argument("--max-calib-frames", type=int, default=512)
    p.add_argument("--quick", action="store_true", help="1 convert run, 50 rounds")
    p.add_argument("--skip-convert", action="store_true")
    p.add_argument("--skip-resnet", action="store_true")
    p.add_argument("--markdown", type=Path, help="also write the Markdown tables here")
    p.add_argument("--json", type=Path, help="write every figure as JSON here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1 or args.warmup < 0:
        p.error(f"--repeats {args.repeats!r} and --rounds {args.rounds!r} must be at least 1")

    return run_and_report(run, render_markdown, args)


def say(msg: str) -> None:
    """Progress on stderr (stdout carries the Markdown)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_and_report(
    run: Callable[[argparse.Namespace, Say], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    args: argparse.Namespace,
) -> int:
    """Run a benchmark, add the load average and total time, print the Markdown, and write
    ``--markdown`` / ``--json``. Shared by the benchmark scripts."""
    # ORT's quantizer warns through the root logger (pre-processing advice, bias layout):
    # expected for the plain-default variant, and noise between the progress lines.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("edge_mer").setLevel(logging.WARNING)
    started = time.perf_counter()
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    res = run(args, say)
    res["load"] = [load0, os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0]
    res["total_s"] = round(time.perf_counter() - started, 1)
    md = render(res)
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    say(f"done in {res['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
