"""Runtime benchmark: streaming vs sliding window, pipeline vs model-only fps, RSS over time.

Run from the repository root (see benchmarks/README.md for what is measured and why):

    python benchmarks/bench_runtime.py [--quick] [--threads N] [--markdown FILE] [--json FILE]

Everything happens in one process and one run, so the ratios are measured side by side:

1. Per-frame cost of the streaming path (one encoder row + the :class:`StateCache` banks in
   one step call, ORT runners from ``select_runner``) at stride 1 (exactly the clip graph on
   the last T frames, every frame), stride 4 and stride T, vs re-running ``clip.onnx`` over
   the last T frames every frame and vs re-running the streaming graphs over the window
   (``stream_logits``: T encoder rows + T step calls). Demo architecture at T = 12 and 32,
   and a ResNet-18 encoder at 112x112, T = 32; the variants alternate frame by frame.
2. ``LivePipeline`` fps (face detector none, no sinks) vs model-only fps (encoder +
   ``StateCache.step_batch`` in a tight loop on the same runner kind), in alternating
   chunks. The ``synthetic://`` source is replaced by a replay of pre-generated frames, so
   the generator's cost is not in the pipeline figure; what the generator, PNG decode and
   MJPG decode cost per frame is reported next to it.
3. RSS (``VmRSS``) of a long pipeline run, sampled every 500 frames: after warm-up, at the
   end, and the least-squares slope. No tracemalloc (it distorts timing).

Models have random weights (timing and memory do not depend on them). A benchmark, not a
test: nothing here asserts on time.
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

from edge_mer.bench import measure as bench_measure
from edge_mer.bench.measure import (
    ReplaySynthetic,
    pipeline_vs_model,
    streaming_vs_window,
)
from edge_mer.bundle import Bundle
from edge_mer.convert.checkpoint import save_checkpoint
from edge_mer.convert.demo import DEMO_MODEL
from edge_mer.convert.models import build
from edge_mer.convert.pipeline import ConvertOptions, convert
from edge_mer.pipeline.sources import SourceSpec, register_scheme

Say = Callable[[str], None]

FPS = 50.0  # the demo model's rate; the source runs at it, so every frame reaches the model
SIZE = (128, 128)  # synthetic frame size (height, width), BGR
LOOP_S = 10.0  # seconds of distinct pre-generated frames the replay source cycles through


def _model(cnn: str, side: int, window: int) -> dict[str, Any]:
    return {
        **DEMO_MODEL,
        "cnn": cnn,
        "input": {**DEMO_MODEL["input"], "height": side, "width": side, "window": window},
    }


MODELS = {
    "demo_t12": ("demo: small CNN, 64x64 gray, T=12", _model("small", 64, 12)),
    "demo_t32": ("demo: small CNN, 64x64 gray, T=32", _model("small", 64, 32)),
    "resnet18_t32": ("ResNet-18, 112x112 gray, T=32", _model("resnet18", 112, 32)),
}


# ---------------------------------------------------------------- machine facts


def machine_facts() -> dict[str, Any]:
    """bench_convert's machine facts, plus the memory size."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_convert import machine_facts as convert_facts

    facts = convert_facts()
    facts["mem_total_kib"] = _proc_kib("/proc/meminfo", "MemTotal")
    return facts


def _proc_kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib() -> int:
    """Resident set size of this process, KiB (``VmRSS`` in /proc/self/status)."""
    return _proc_kib("/proc/self/status", "VmRSS")


# ---------------------------------------------------------------- bundles


def make_bundle(config: dict[str, Any], out: Path, seed: int = 0) -> Bundle:
    """An FP32 bundle of ``config`` with random weights (``convert`` without calibration)."""
    import torch

    torch.manual_seed(seed)
    out.mkdir(parents=True)
    ckpt = out / "model.safetensors"
    save_checkpoint(build(config).eval(), ckpt, config)
    convert(ckpt, out / "bundle", ConvertOptions(force=True))
    return Bundle.open(out / "bundle")


# ---------------------------------------------------------------- 1. streaming vs window


def bench_streaming(
    bundle: Bundle, rounds: int, warmup: int, threads: int, say: Say
) -> dict[str, Any]:
    """Milliseconds per frame for every variant, interleaved frame by frame
    (:func:`edge_mer.bench.measure.streaming_vs_window`)."""
    total = warmup + rounds
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if done % max(1, total // 4) == 0:
            say(f"  round {done}/{total}")

    return streaming_vs_window(bundle, rounds, warmup, threads, tick=tick)


# ---------------------------------------------------------------- source costs


def pregenerated(fps: float, size: tuple[int, int], seed: int) -> np.ndarray:
    return bench_measure.pregenerated(fps, size, seed, LOOP_S)


def source_costs(work: Path, frames: int) -> dict[str, Any]:
    """Milliseconds per 128x128 BGR frame: the synthetic generator, reading a PNG
    (``frames://``), decoding an MJPG AVI (``file://``), and the replay source."""
    import cv2

    from edge_mer.calibration.synth import generate_stream

    gen, _ = generate_stream(seconds=frames / FPS, fps=FPS, size=SIZE, seed=3, lazy=True)
    t0 = time.perf_counter()
    imgs = [img.copy() for img in gen]
    out = {"synthetic_generator": (time.perf_counter() - t0) / len(imgs)}
    d = work / "png"
    d.mkdir()
    for i, img in enumerate(imgs):
        cv2.imwrite(str(d / f"{i:06d}.png"), img)
    t0 = time.perf_counter()
    for i in range(len(imgs)):
        cv2.imread(str(d / f"{i:06d}.png"), cv2.IMREAD_COLOR)
    out["png_read"] = (time.perf_counter() - t0) / len(imgs)
    avi = work / "clip.avi"
    vw = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE[1], SIZE[0]))
    for img in imgs:
        vw.write(img)
    vw.release()
    cap = cv2.VideoCapture(str(avi))
    n, buf = 0, None
    t0 = time.perf_counter()
    while True:
        ok, buf = cap.read(buf)
        if not ok:
            break
        n += 1
    out["mjpg_decode"] = (time.perf_counter() - t0) / max(n, 1)
    cap.release()
    src = ReplaySynthetic(
        SourceSpec("synthetic://", "synthetic", "", {"seconds": "20", "fps": f"{FPS:g}"})
    )
    t0 = time.perf_counter()
    for _ in range(src.frame_count):
        src.read(1.0)
    out["replay_source"] = (time.perf_counter() - t0) / src.frame_count
    return {"ms_per_frame": {k: v * 1e3 for k, v in out.items()}, "frames": len(imgs)}


# ---------------------------------------------------------------- 2. pipeline vs model-only


def _pipeline(bundle: Path, seconds: float, threads: int) -> Any:
    from edge_mer.pipeline.live import LivePipeline

    return LivePipeline(_config(bundle, seconds, threads))


def _config(bundle: Path, seconds: float, threads: int) -> Any:
    from edge_mer.config import config_from_args

    return config_from_args(
        bundle,
        f"synthetic://?seconds={seconds:g}&fps={FPS:g}&seed=7",
        stdout=False,
        runner="onnxruntime",
        tables={
            "face": {"detector": "none"},
            "metrics": {"enabled": False},
            "model": {"threads": threads},
        },
    )


def bench_pipeline(
    bundle: Path, chunk: int, chunks: int, warmup: int, threads: int, say: Say
) -> dict[str, Any]:
    """Pipeline fps vs model-only fps in alternating chunks of ``chunk`` frames
    (:func:`edge_mer.bench.measure.pipeline_vs_model`)."""
    seconds = (warmup + chunk * chunks) / FPS + 2
    res = pipeline_vs_model(
        _config(bundle, seconds, threads), frames=chunk * chunks, warmup=warmup,
        chunks=chunks,
    )  # fmt: skip
    for c, (p, m) in enumerate(
        zip(res["pipeline_fps_chunks"], res["model_only_fps_chunks"], strict=True)
    ):
        say(f"  chunk {c + 1}/{chunks}: pipeline {p:.0f} fps, model-only {m:.0f} fps")
    p, m = res["pipeline_fps"], res["model_only_fps"]
    stages = {
        k: {kk: vv for kk, vv in v.items() if kk != "samples_ms"}
        for k, v in res["stages"].items()
        if k not in ("capture_to_probs", "end_to_end")
    }
    return {
        "chunk_frames": chunk,
        "chunks": chunks,
        "warmup_frames": warmup,
        "pipeline_fps": p,
        "model_only_fps": m,
        "pipeline_fps_chunks": res["pipeline_fps_chunks"],
        "model_only_fps_chunks": res["model_only_fps_chunks"],
        "efficiency": p / m,
        "overhead_share": 1.0 - p / m,
        "pipeline_ms_per_frame": 1e3 / p,
        "model_only_ms_per_frame": 1e3 / m,
        "stages": stages,
        "capture_drops": res["dropped"],
    }


# ---------------------------------------------------------------- 3. memory


def bench_memory(
    bundle: Path, frames: int, every: int, warmup: int, threads: int, say: Say
) -> dict[str, Any]:
    """VmRSS every ``every`` frames over a pipeline run of ``frames`` frames."""
    from edge_mer.pipeline.live import run_until

    before = rss_kib()
    samples: list[tuple[int, int]] = []
    with _pipeline(bundle, frames / FPS + 2, threads) as pipe:
        entered = rss_kib()
        t0 = time.perf_counter()
        while pipe.frames < frames:
            if run_until(pipe, frames=min(frames, pipe.frames + every)) == "ended":
                break
            samples.append((pipe.frames, rss_kib()))
            if pipe.frames % (every * 8) == 0:
                say(f"  {pipe.frames} frames, RSS {samples[-1][1] / 1024:.1f} MiB")
        elapsed = time.perf_counter() - t0
        model_frames, events, records = pipe.model_frames, pipe.events, len(pipe.records)
        cache_stats = dict(pipe.cache.stats)
    x = np.array([f for f, _ in samples if f >= warmup], float)
    y = np.array([r for f, r in samples if f >= warmup], float)
    slope = float(np.polyfit(x / 1000.0, y, 1)[0]) if len(x) >= 2 else float("nan")
    after_warm = int(y[0]) if len(y) else 0
    return {
        "frames": frames,
        "sample_every": every,
        "warmup_frames": warmup,
        "rss_before_pipeline_kib": before,
        "rss_after_enter_kib": entered,
        "rss_after_warmup_kib": after_warm,
        "rss_end_kib": int(samples[-1][1]) if samples else 0,
        "rss_min_after_warmup_kib": int(y.min()) if len(y) else 0,
        "rss_max_after_warmup_kib": int(y.max()) if len(y) else 0,
        "vm_hwm_kib": _proc_kib("/proc/self/status", "VmHWM"),
        "slope_kib_per_1000_frames": slope,
        "samples": samples,
        "model_frames": model_frames,
        "fps": model_frames / elapsed,
        "events": events,
        "records_kept": records,
        "cache_stats": cache_stats,
        "replay_frames_mib": sum(a.nbytes for a in bench_measure._FRAMES.values()) / 2**20,
    }


# ---------------------------------------------------------------- report


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def render_markdown(res: dict[str, Any]) -> str:
    m, s = res["machine"], res["settings"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['arch']}, {m['usable_cpus']} usable of "
        f"{m['logical_cpus']} logical CPUs, {m['mem_total_kib'] / 2**20:.1f} GiB RAM; AVX2 "
        f"{_yes(m['avx2'])}, AVX512-VNNI {_yes(m['avx512_vnni'])}).",
        f"Python {m['python']}, torch {m['torch']}, onnx {m['onnx']}, onnxruntime "
        f"{m['onnxruntime']}, numpy {m['numpy']}. ORT intra-op threads: "
        f"{s['threads'] or 'ORT default'}.",
        f"Load average (1 min) at start {res['load'][0]:.2f}, at end {res['load'][1]:.2f}"
        + (
            ": **other work shared the CPUs**; ratios of interleaved variants are the better guide."
            if max(res["load"]) > 0.5 * max(1, m["usable_cpus"])
            else "."
        ),
        "",
        f"**1. Per-frame cost, streaming vs sliding window** (ms per frame; median of "
        f"{s['rounds']} interleaved frames after {s['warmup_rounds']} warm-up frames; "
        f"{s['resnet_rounds']} for ResNet-18; ratio = variant median / streaming stride-1 "
        "median; rows = encoder rows + step rows computed per frame)",
        "",
        "| model | variant | enc rows | step rows | ORT calls | result every | median ms "
        "| p90 ms | ratio vs stride 1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for st in res["streaming"].values():
        base = st["variants"]["stream_s1"]["median_ms"]
        for v in st["variants"].values():
            lines.append(
                f"| {st['title']} | {v['title']} | {v['encoder_rows']} | {v['step_rows']} | "
                f"{v['ort_calls']} | {v['result_every']} | {v['median_ms']:.3f} | "
                f"{v['p90_ms']:.3f} | {v['median_ms'] / base:.2f} |"
            )
    lines += [
        "",
        "Stride-1 streaming logits vs clip.onnx on the same last T frames, max abs diff: "
        + ", ".join(
            f"{st['title'].split(',')[0]} T={st['window']}: "
            + (
                f"{st['stride1_vs_clip_max_abs']:.1e}"
                if st["stride1_vs_clip_max_abs"] == st["stride1_vs_clip_max_abs"]
                else "not compared (fewer than T frames)"
            )
            for st in res["streaming"].values()
        )
        + ".",
        "",
    ]
    src = res["source_costs"]["ms_per_frame"]
    pipes = res["pipeline"]
    lines += [
        f"**2. Pipeline vs model-only** (synthetic 128x128 BGR at {FPS:g} fps replayed from "
        "memory, face detector none, no sinks, metrics endpoint off; median over alternating "
        "chunks, after warm-up; efficiency = pipeline fps / model-only fps, overhead = "
        "1 - efficiency)",
        "",
        "| model | chunks x frames | model-only fps | ms | LivePipeline fps | ms | efficiency "
        "| overhead |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pipes.values():
        lines.append(
            f"| {p['title']} | {p['chunks']} x {p['chunk_frames']} | {p['model_only_fps']:.0f} "
            f"| {p['model_only_ms_per_frame']:.3f} | {p['pipeline_fps']:.0f} | "
            f"{p['pipeline_ms_per_frame']:.3f} | **{p['efficiency']:.2f}** | "
            f"**{p['overhead_share'] * 100:.0f}%** |"
        )
    names = list(pipes)
    lines += [
        "",
        "Model-only = encoder `infer(1)` + `StateCache.step_batch` (stride 1) on ORT runners "
        "from `select_runner`; LivePipeline = the source read on the inference thread (a "
        "finite source; a camera would come through the capture thread and ring), resampler, "
        "face stage, preprocess, the same model calls, spotter, stage clocks. Capture drops: "
        + ", ".join(f"{pipes[k]['capture_drops']}" for k in names)
        + ". Stage breakdown (`LivePipeline.clock.summary()`, mean / p95 ms; `capture` is the "
        "source read):",
        "",
        "| stage | " + " | ".join(pipes[k]["title"].split(",")[0] for k in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    stages = list(dict.fromkeys(s for k in names for s in pipes[k]["stages"]))
    for stage in stages:
        cells = []
        for k in names:
            st = pipes[k]["stages"].get(stage)
            cells.append(f"{st['mean_ms']:.3f} / {st['p95_ms']:.3f}" if st else "-")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Source cost per 128x128 BGR frame, not in the pipeline figure (ms): synthetic "
        f"generator {src['synthetic_generator']:.3f}, PNG read (frames://) "
        f"{src['png_read']:.3f}, MJPG decode (file://) {src['mjpg_decode']:.3f}, the replay "
        f"source used here {src['replay_source']:.4f}.",
        "",
    ]
    mm = res["memory"]
    lines += [
        f"**3. Memory over a long run** ({mm['frames']} frames, VmRSS every "
        f"{mm['sample_every']} frames, slope fitted from frame {mm['warmup_frames']} on)",
        "",
        "| RSS before pipeline | after start | after warm-up | at end | min..max after "
        "warm-up | slope KiB / 1000 frames | run fps |",
        "|---:|---:|---:|---:|---|---:|---:|",
        f"| {mm['rss_before_pipeline_kib'] / 1024:.1f} MiB | "
        f"{mm['rss_after_enter_kib'] / 1024:.1f} MiB | {mm['rss_after_warmup_kib'] / 1024:.1f} "
        f"MiB | {mm['rss_end_kib'] / 1024:.1f} MiB | "
        f"{mm['rss_min_after_warmup_kib'] / 1024:.1f}..{mm['rss_max_after_warmup_kib'] / 1024:.1f}"
        f" MiB | {mm['slope_kib_per_1000_frames']:+.1f} | {mm['fps']:.0f} |",
        "",
        f"Process RSS includes torch/onnx imported by the benchmark itself and "
        f"{mm['replay_frames_mib']:.0f} MiB of pre-generated frames. Events emitted "
        f"{mm['events']} (records kept {mm['records_kept']}, bounded at 10000); state cache "
        f"{mm['cache_stats']}.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    q = args.quick
    rounds = 100 if q else args.rounds
    resnet_rounds = 15 if q else args.resnet_rounds
    mem_frames = 3000 if q else args.memory_frames
    chunks, chunk = (4, 300) if q else (8, 2000)
    res: dict[str, Any] = {
        "machine": machine_facts(),
        "settings": {
            "quick": q,
            "threads": args.threads,
            "rounds": rounds,
            "resnet_rounds": resnet_rounds,
            "warmup_rounds": args.warmup,
            "memory_frames": mem_frames,
        },
        "streaming": {},
    }
    register_scheme("synthetic", ReplaySynthetic)
    with tempfile.TemporaryDirectory(prefix="edge-mer-bench-rt-") as tmp:
        work = Path(tmp)
        bundles: dict[str, Bundle] = {}
        keys = [k for k in MODELS if not (args.skip_resnet and k.startswith("resnet"))]
        for key in keys:
            title, config = MODELS[key]
            say(f"{key}: building an FP32 bundle with random weights")
            bundles[key] = make_bundle(config, work / key)
            n = resnet_rounds if key.startswith("resnet") else rounds
            say(f"{key}: streaming vs sliding window, {n} interleaved frames")
            st = bench_streaming(bundles[key], n, args.warmup, args.threads, say)
            st["title"] = title
            res["streaming"][key] = st
        say("source costs: generator, PNG read, MJPG decode")
        res["source_costs"] = source_costs(work, 500)
        pregenerated(FPS, SIZE, 7)
        res["pipeline"] = {}
        for key in keys:
            if key == "demo_t32":
                continue
            heavy = key.startswith("resnet")
            n, size, warm = (chunks, chunk // 10, 50) if heavy else (chunks, chunk, 500)
            say(f"{key}: pipeline vs model-only, {n} chunks of {size} frames")
            res["pipeline"][key] = bench_pipeline(
                bundles[key].path, size, n, warm, args.threads, say
            )
            res["pipeline"][key]["title"] = MODELS[key][0]
        pipe_bundle = bundles["demo_t12"].path
        say(f"memory: {mem_frames} pipeline frames, RSS every 500")
        res["memory"] = bench_memory(
            pipe_bundle, mem_frames, 500, min(2000, mem_frames // 3), args.threads, say
        )
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=400, help="timed frames per demo model")
    p.add_argument("--resnet-rounds", type=int, default=60, help="timed frames, ResNet-18")
    p.add_argument("--warmup", type=int, default=5, help="untimed frames before timing")
    p.add_argument("--memory-frames", type=int, default=20000, help="frames of the RSS run")
    p.add_argument(
        "--threads", type=int, default=1, help="ORT intra-op threads (0 = ORT's default)"
    )
    p.add_argument("--quick", action="store_true", help="fewer frames (about a minute)")
    p.add_argument("--skip-resnet", action="store_true")
    p.add_argument("--markdown", type=Path, help="also write the Markdown tables here")
    p.add_argument("--json", type=Path, help="write every figure as JSON here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.resnet_rounds < 1 or args.warmup < 0 or args.memory_frames < 1000:
        p.error(
            f"--rounds {args.rounds!r} and --resnet-rounds {args.resnet_rounds!r} must be >= 1, "
            f"--warmup {args.warmup!r} >= 0, --memory-frames {args.memory_frames!r} >= 1000"
        )

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_convert import run_and_report

    return run_and_report(run, render_markdown, args)


if __name__ == "__main__":
    sys.exit(main())
