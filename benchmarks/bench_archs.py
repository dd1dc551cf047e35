"""Architecture benchmark: what each registry model costs per frame, streamed vs re-run.

Run from the repository root (see benchmarks/README.md for what is measured and why):

    python benchmarks/bench_archs.py [--rounds N] [--threads 1] [--markdown F] [--json F]

One process, one run, every figure interleaved frame by frame (each round feeds the same
new frame to every variant of every model, in a new random order), ONNX Runtime FP32 on the
CPU with ``--threads`` intra-op threads (default 1). Models have random weights (timing
does not depend on them); the bundles are made by ``convert`` (FP32, no calibration).

1. Every architecture, small CNN, 64x64 gray, T = 16, default head sizes:
   - ``stream``: the device's path per frame, one encoder row + ``StateCache.step_batch``
     (recurrent: T staggered banks, T step rows in one call; window: one row);
   - ``step``: ``StateCache.step_batch`` alone on fixed features (the head's share);
   - ``clip``: ``clip.onnx`` re-run over the last T frames every frame (a clip model on a
     live camera).
2. ``cnn_transformer`` as the window grows, T = 16, 32, 48, 64 (2 layers; span = the
   largest whose receptive field fits T: 8, 16, 24, 32): the same three variants.
3. The three CNN encoders alone at 64x64 gray, one frame per call (interleaved with each
   other, after the loop above: ResNet-18 would evict the others' weights from the caches).

The streaming logits are compared with the clip graph's on the same last T frames at the
end (they must agree to 1e-4). A benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bench.measure import SlidingWindow, Streaming
from edge_mer.bundle import Bundle
from edge_mer.convert.checkpoint import save_checkpoint
from edge_mer.convert.pipeline import ConvertOptions, convert
from edge_mer.convert.registry import ARCHS, build
from edge_mer.pipeline.state_cache import StateCache, rows_per_track
from edge_mer.runners import select_runner

Say = Callable[[str], None]

INPUT = {"height": 64, "width": 64, "channels": 1, "fps": 50.0, "window": 16}
SWEEP = (16, 32, 48, 64)
ENCODERS = ("small", "mobilenet", "resnet18")


def config(arch: str, window: int = 16, cnn: str = "small") -> dict[str, Any]:
    return {"arch": arch, "cnn": cnn, "input": {**INPUT, "window": window}}


def make_bundle(cfg: dict[str, Any], out: Path) -> Bundle:
    import torch

    torch.manual_seed(0)
    out.mkdir(parents=True)
    model = build(cfg).eval()
    save_checkpoint(model, out / "model.safetensors", model.config)
    convert(out / "model.safetensors", out / "bundle", ConvertOptions())
    return Bundle.open(out / "bundle")


class StepOnly:
    """``StateCache.step_batch`` on fixed features: the temporal head's share per frame."""

    def __init__(self, bundle: Bundle, threads: int) -> None:
        window, kind = int(bundle.input["window"]), bundle.state_kind
        sel = select_runner(
            bundle,
            "onnxruntime",
            max_batch=1,
            step_max_batch=rows_per_track(kind, window),
            threads=threads,
        )
        self.step = sel.step
        self.step.activate()
        self.cache = StateCache(bundle.states, 1, step=self.step, window=window, state_kind=kind)
        dim = int(bundle.manifest["graphs"]["step"]["inputs"]["features"][1])
        self.feats = np.random.default_rng(0).normal(size=(1, dim)).astype(np.float32)

    def __call__(self, frame: np.ndarray, now: float) -> None:
        self.cache.step_batch([0], self.feats, now=now)

    def close(self) -> None:
        self.step.deactivate()


class EncoderOnly:
    """One ``infer(1)`` of the encoder runner."""

    def __init__(self, bundle: Bundle, threads: int) -> None:
        sel = select_runner(bundle, "onnxruntime", max_batch=1, threads=threads)
        self.encoder = sel.encoder
        self.encoder.activate()

    def __call__(self, frame: np.ndarray, now: float) -> None:
        self.encoder.inputs["frames"][0] = frame
        self.encoder.infer(1)

    def close(self) -> None:
        self.encoder.deactivate()


def interleaved(
    variants: dict[str, Any], rounds: int, warmup: int, say: Say
) -> dict[str, list[float]]:
    """Milliseconds per call of every variant, each round in a random order."""
    pool = np.random.default_rng(1).integers(0, 256, (64, 64, 64, 1), dtype=np.uint8)
    order = np.random.default_rng(2)
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + rounds):
        frame, now = pool[r % len(pool)], r / INPUT["fps"]
        # A new random order every round: no variant always runs right after the same
        # (cache-evicting) one.
        for k in [names[i] for i in order.permutation(len(names))]:
            t0 = time.perf_counter()
            variants[k](frame, now)
            if r >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
        if (r + 1) % max(1, (warmup + rounds) // 5) == 0:
            say(f"  round {r + 1}/{warmup + rounds}")
    return times


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "median_ms": float(np.median(a)),
        "p10_ms": float(np.percentile(a, 10)),
        "p90_ms": float(np.percentile(a, 90)),
    }


def run(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    import onnxruntime
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_convert import machine_facts

    res: dict[str, Any] = {
        "machine": machine_facts(),
        "settings": {"rounds": args.rounds, "warmup": args.warmup, "threads": args.threads},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }
    models: dict[str, tuple[str, dict[str, Any]]] = {}
    for arch in ARCHS:
        models[arch] = ("archs", config(arch))
    for t in SWEEP:
        if t != 16:
            models[f"cnn_transformer_t{t}"] = ("sweep", config("cnn_transformer", t))
    for cnn in ENCODERS:
        if cnn != "small":
            models[f"encoder_{cnn}"] = ("encoders", config("cnn_lstm", 16, cnn))
    variants: dict[str, Any] = {}
    encoders: dict[str, Any] = {}  # timed in a loop of their own: ResNet-18 evicts caches
    bundles: dict[str, Bundle] = {}
    with tempfile.TemporaryDirectory(prefix="edge-mer-bench-archs-") as tmp:
        for key, (group, cfg) in models.items():
            say(f"{key}: FP32 bundle with random weights")
            bundles[key] = b = make_bundle(cfg, Path(tmp) / key)
            if group == "encoders":
                encoders[f"{key}/encoder"] = EncoderOnly(b, args.threads)
                continue
            variants[f"{key}/stream"] = Streaming(b, 1, args.threads)
            variants[f"{key}/step"] = StepOnly(b, args.threads)
            variants[f"{key}/clip"] = SlidingWindow(b, "clip", args.threads)
            if key == "cnn_lstm":
                encoders["encoder_small/encoder"] = EncoderOnly(b, args.threads)
        try:
            say(f"{len(variants)} variants, {args.rounds} interleaved rounds")
            times = interleaved(variants, args.rounds, args.warmup, say)
            say(f"{len(encoders)} encoders, {args.rounds} interleaved rounds")
            times.update(interleaved(encoders, args.rounds, 10, say))
            agree = {
                key: float(
                    np.abs(variants[f"{key}/stream"].logits - variants[f"{key}/clip"].logits).max()
                )
                for key in models
                if f"{key}/stream" in variants
            }
        finally:
            for v in [*variants.values(), *encoders.values()]:
                v.close()
    res["models"] = {}
    for key, (group, _) in models.items():
        b = bundles[key]
        entry: dict[str, Any] = {
            "group": group,
            "arch": b.manifest["model"]["config"]["arch"],
            "window": int(b.input["window"]),
            "state_kind": b.state_kind,
            "cost": b.manifest["cost"],
            "config": b.manifest["model"]["config"],
        }
        for v in ("stream", "step", "clip", "encoder"):
            if f"{key}/{v}" in times:
                entry[v] = _stats(times[f"{key}/{v}"])
        if key in agree:
            entry["stream_vs_clip_max_abs"] = agree[key]
        res["models"][key] = entry
    res["models"]["encoder_small"] = {
        "group": "encoders",
        "cost": bundles["cnn_lstm"].manifest["cost"],
        "config": bundles["cnn_lstm"].manifest["model"]["config"],
        "encoder": _stats(times["encoder_small/encoder"]),
    }
    return res


def _ms(e: dict[str, Any], v: str) -> str:
    return f"{e[v]['median_ms']:.3f}"


def render_markdown(res: dict[str, Any]) -> str:
    m, s = res["machine"], res["settings"]
    out = [
        f"Measured on {m.get('cpu', '?')} ({m.get('usable_cpus', '?')} usable CPUs), "
        f"ONNX Runtime {res['versions']['onnxruntime']} FP32, {s['threads']} thread, "
        f"{s['rounds']} interleaved frames after {s['warmup']} warm-up; median ms per frame "
        f"(load average {res['load'][0]:.2f} -> {res['load'][1]:.2f}).",
        "",
        "| arch | state | step rows/frame | params | encoder MACs | step MACs/row "
        "| state B/track | stream ms (enc+step) | step ms | clip ms | clip / stream "
        "| max abs stream - clip |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = {k: e for k, e in res["models"].items() if e["group"] == "archs"}
    for key, e in rows.items():
        c = e["cost"]
        ratio = e["clip"]["median_ms"] / e["stream"]["median_ms"]
        out.append(
            f"| {key} | {e['state_kind']} | {c['step_rows_per_frame']} | {c['params']:,} "
            f"| {c['encoder_macs_per_frame']:,} | {c['step_macs']:,} "
            f"| {c['state_bytes_per_track']:,} | {_ms(e, 'stream')} | {_ms(e, 'step')} "
            f"| {_ms(e, 'clip')} | {ratio:.1f}x | {e['stream_vs_clip_max_abs']:.1e} |"
        )
    out += [
        "",
        "`cnn_transformer` as the window grows (2 layers, span = the largest that fits T):",
        "",
        "| T | span | step MACs/row | state B/track | step ms | stream ms | clip ms "
        "| clip / stream |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sweep = [("cnn_transformer", res["models"]["cnn_transformer"])]
    sweep += [(k, e) for k, e in res["models"].items() if e["group"] == "sweep"]
    for _, e in sweep:
        c = e["cost"]
        ratio = e["clip"]["median_ms"] / e["stream"]["median_ms"]
        out.append(
            f"| {e['window']} | {e['config']['span']} | {c['step_macs']:,} "
            f"| {c['state_bytes_per_track']:,} | {_ms(e, 'step')} | {_ms(e, 'stream')} "
            f"| {_ms(e, 'clip')} | {ratio:.1f}x |"
        )
    out += [
        "",
        "CNN encoders alone, 64x64 gray, one frame per call:",
        "",
        "| encoder | MACs/frame | encoder ms |",
        "|---|---:|---:|",
    ]
    for _key, e in res["models"].items():
        if e["group"] == "encoders":
            out.append(
                f"| {e['config']['cnn']} | {e['cost']['encoder_macs_per_frame']:,} "
                f"| {_ms(e, 'encoder')} |"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=300, help="timed frames (interleaved)")
    p.add_argument("--warmup", type=int, default=70, help="untimed frames first (>= 64)")
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    p.add_argument("--markdown", type=Path, help="also write the Markdown tables here")
    p.add_argument("--json", type=Path, help="write every figure as JSON here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < max(SWEEP):
        p.error(f"--rounds >= 1 and --warmup >= {max(SWEEP)} (every window full before timing)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_convert import run_and_report

    return run_and_report(run, render_markdown, args)


if __name__ == "__main__":
    sys.exit(main())
