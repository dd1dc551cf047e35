"""``edge-mer bench``: speed and accuracy of a bundle, per runner x precision, on this machine.

:func:`run_bench` builds one report (a dict, documented key by key in docs/bench-json.md):

- ``runs``: a row per runner x precision. Each row that can run gets a top-1 agreement check
  against the ONNX Runtime FP32 reference on coded windows (:func:`synthetic_windows`), then a
  :class:`~edge_mer.pipeline.live.LivePipeline` run vs a model-only loop
  (:func:`~edge_mer.bench.measure.pipeline_vs_model`): per-stage percentiles, fps, drops,
  model-only fps and pipeline efficiency. Rows that cannot run say why (``unavailable``) and
  rows that broke say how (``failed``); nothing here raises for one bad row.
- ``streaming``: the state cache vs re-running the clip graph over the last T frames.
- ``machine`` (:func:`edge_mer.service.machine.collect_facts`) and ``monitor`` (RSS, CPU, GPU
  memory, SoC temperature, throttling while it ran; ``"absent"`` where a source is missing).

The report keeps raw samples (``stages[*].samples_ms``, ``timeline``) for
:func:`edge_mer.bench.plots.plot_report`; :func:`edge_mer.bench.report.write_json` decides
what of them goes to disk.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer import __version__
from edge_mer.bench.measure import pipeline_vs_model, replay_uri, streaming_vs_window
from edge_mer.bench.replay import FORMATS, model_format
from edge_mer.bundle import Bundle
from edge_mer.config import Config, config_from_args
from edge_mer.errors import CudaUnavailableError, EdgeMerError, InputError
from edge_mer.runners import Runner, select_runner

log = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "RUNNERS",
    "BenchOptions",
    "default_precisions",
    "predict_windows",
    "run_bench",
    "synthetic_windows",
]

RUNNERS = ("onnxruntime", "tensorrt")
# precision name -> manifest graph of the encoder
PRECISIONS = {"fp32": "encoder", "int8": "encoder_int8", "int8-u8s8": "encoder_int8_u8s8"}
STATUSES = ("ok", "accuracy check failed", "failed", "unavailable")
REFERENCE = ("onnxruntime", "fp32")
#: ``--frame-format`` values: the model's camera format, or one of the replay's.
FRAME_FORMATS = ("auto", *FORMATS)

# progress(done, total, what): units are frames (pipeline, streaming) and windows (accuracy)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What :func:`run_bench` measures.

    Attributes:
        source: frame source URI; None = the synthetic stream at the bundle's fps,
            pre-generated and replayed from memory (``synthetic-replay://``).
        frame_format: the replayed stream's frames: ``auto`` (what a camera gives the
            model: gray for a gray model, as ``picam://`` and ``csi://`` do, else BGR),
            ``gray`` or ``bgr`` (a USB camera's). Only without ``source``.
        frames: timed pipeline frames per runner x precision (and model-only frames).
        warmup: untimed frames before timing, for each of pipeline and model-only.
        runners: runner kinds (:data:`RUNNERS`).
        precisions: :data:`PRECISIONS` keys; None = fp32, int8, and int8-u8s8 when the
            bundle has it.
        min_agreement: top-1 agreement with the reference below this -> "accuracy check
            failed".
        face: face detector; None = ``none`` for synthetic sources, else ``haar``.
        threads: ONNX Runtime intra-op threads (0 = by the encoder's size,
            :func:`edge_mer.runners.ort.encoder_threads`).
        chunks: alternating pipeline / model-only chunks per run.
        streaming_rounds: frames of the streaming-vs-window comparison (0 = skip it).
        engines_dir: TensorRT engines (default BUNDLE/engines).
    """

    source: str | None = None
    frame_format: str = "auto"
    frames: int = 600
    warmup: int = 100
    runners: tuple[str, ...] = RUNNERS
    precisions: tuple[str, ...] | None = None
    min_agreement: float = 0.98
    face: str | None = None
    threads: int = 0
    chunks: int = 4
    streaming_rounds: int = 200
    engines_dir: Path | None = None

    def check(self) -> None:
        """Raise :class:`InputError` for values no run could use."""
        if self.frames < 1:
            raise InputError(f"--frames {self.frames!r} must be >= 1 (timed frames per run)")
        if self.warmup < 0:
            raise InputError(f"--warmup {self.warmup!r} must be >= 0")
        if self.chunks < 1 or self.streaming_rounds < 0 or self.threads < 0:
            raise InputError(
                f"chunks {self.chunks!r} must be >= 1, streaming rounds "
                f"{self.streaming_rounds!r} and threads {self.threads!r} >= 0"
            )
        if self.frame_format not in FRAME_FORMATS:
            raise InputError(
                f"--frame-format {self.frame_format!r} is not one of {list(FRAME_FORMATS)}"
            )
        if self.source is not None and self.frame_format != "auto":
            raise InputError(
                f"--frame-format {self.frame_format} sets the replayed stream's frames; with "
                "--source the source decides (e.g. synthetic://?format=gray): drop one of them"
            )
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InputError(f"--min-agreement {self.min_agreement!r} must be in 0..1")
        for r in self.runners:
            if r not in RUNNERS:
                raise InputError(f"runner {r!r} is not one of {list(RUNNERS)}")
        for p in self.precisions or ():
            if p not in PRECISIONS:
                raise InputError(f"precision {p!r} is not one of {list(PRECISIONS)}")
        if not self.runners or (self.precisions is not None and not self.precisions):
            raise InputError("give at least one runner and one precision")


def default_precisions(bundle: Bundle) -> tuple[str, ...]:
    """fp32 and int8, plus int8-u8s8 when the bundle carries the x86 graph."""
    graphs = bundle.manifest["graphs"]
    return ("fp32", "int8") + (("int8-u8s8",) if PRECISIONS["int8-u8s8"] in graphs else ())


def synthetic_windows(
    bundle: Bundle, work: Path | None = None, *, subjects: int = 2, clips_per_emotion: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Coded windows ``[M, T, H, W, C]`` uint8 and label indices ``[M]`` from synthetic
    clips rendered at the bundle's fps (``edge_mer.calibration``, imported here)."""
    from edge_mer.calibration.evaluate import clip_windows
    from edge_mer.calibration.synth_io import synthesize

    with tempfile.TemporaryDirectory(prefix="edge-mer-bench-", dir=work) as tmp:
        summary = synthesize(
            Path(tmp),
            subjects=subjects,
            clips_per_emotion=clips_per_emotion,
            fps=float(bundle.input["fps"]),
            seed=11,
        )
        return clip_windows(bundle, Path(summary["casme2"]))


def predict_windows(encoder: Runner, step: Runner, windows: np.ndarray) -> np.ndarray:
    """Logits ``[M, K]`` after the last frame of each window, through active runners: the
    encoder once per frame, the step over time from zero state (as the state cache does).
    Batches of ``min(encoder.max_batch, step.max_batch)`` windows."""
    m, t = windows.shape[:2]
    b = max(1, min(encoder.max_batch, step.max_batch))
    out = []
    for i in range(0, m, b):
        chunk = windows[i : i + b]
        n = len(chunk)
        step.reset_state(n)
        logits: Any = None
        for j in range(t):
            encoder.inputs["frames"][:n] = chunk[:, j]
            feats = encoder.infer(n)["features"]
            step.inputs["features"][:n] = feats
            logits = step.infer(n)["logits"]
        out.append(np.array(logits[:n], np.float32))
    return np.concatenate(out)


def _row(runner: str, precision: str, graph: str) -> dict[str, Any]:
    return {
        "runner": runner,
        "precision": precision,
        "graph": graph,
        "status": "unavailable",
        "reason": None,
        "size_bytes": None,
        "agreement": None,
        "accuracy": None,
        "ms_per_frame": None,
        "fps": None,
        "model_only_fps": None,
        "efficiency": None,
        "dropped": None,
    }


def _size(bundle: Bundle, graph: str, encoder: Runner) -> int | None:
    path = getattr(encoder, "path", None) or getattr(encoder, "engine_path", None)
    if path is not None and Path(path).is_file():
        return Path(path).stat().st_size
    entry = bundle.manifest["graphs"].get(graph) or {}
    return entry.get("bytes")


def _unavailable_reason(bundle: Bundle, runner: str, precision: str) -> str | None:
    graph = PRECISIONS[precision]
    if graph not in bundle.manifest["graphs"]:
        if precision == "int8":
            return "bundle has no INT8 encoder (convert --int8)"
        return f"bundle has no {graph!r} graph (convert --int8 on an x86 host writes it)"
    if precision == "int8-u8s8" and runner == "tensorrt":
        return "the u8s8 encoder is the x86 ONNX Runtime artifact; TensorRT uses 'encoder_int8'"
    if precision == "int8-u8s8" and platform.machine().lower() not in ("x86_64", "amd64"):
        return "the u8s8 encoder is for x86 CPUs (VNNI); ARM runs 'encoder_int8'"
    return None


def run_bench(
    bundle_path: str | Path,
    options: BenchOptions | None = None,
    *,
    windows: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Benchmark ``bundle_path``; returns the report (see docs/bench-json.md).

    ``windows`` (uint8 ``[M, T, H, W, C]``, labels ``[M]``) are what agreement and accuracy
    are measured on; None renders :func:`synthetic_windows`. ``progress(done, total, what)``
    is called as frames and windows are done.

    Raises:
        InputError: bad options; BundleError: the bundle is missing or fails its hash check.
    """
    from edge_mer.service.machine import RunMonitor, collect_facts

    opts = options or BenchOptions()
    opts.check()
    bundle = Bundle.open(bundle_path)  # hashes checked once, here
    precisions = opts.precisions or default_precisions(bundle)
    fps = float(bundle.input["fps"])
    fmt = model_format(bundle) if opts.frame_format == "auto" else opts.frame_format
    source = opts.source or replay_uri(fps, opts.warmup + opts.frames, fmt=fmt)
    face = opts.face or ("none" if source.startswith("synthetic") else "haar")
    pairs = [(r, p) for r in opts.runners for p in precisions]
    ok_pairs = [rp for rp in pairs if _unavailable_reason(bundle, *rp) is None]
    per_run = 2 * (opts.warmup + opts.frames)
    total = len(ok_pairs) * per_run + opts.streaming_rounds + (opts.streaming_rounds and 5)
    done = 0

    def tick(what: str) -> Callable[[int], None]:
        def f(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, total), total, what)

        return f

    report: dict[str, Any] = {
        "schema": 1,
        "tool": f"edge-mer {__version__}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": {
            "path": str(bundle.path),
            "name": bundle.name,
            "sha256": bundle.manifest_sha256,
            "input": bundle.input,
            "labels": bundle.labels,
            "graphs": {k: v.get("bytes") for k, v in bundle.manifest["graphs"].items()},
            "encoder_macs_per_frame": (bundle.manifest.get("cost") or {}).get(
                "encoder_macs_per_frame"
            ),
        },
        "settings": {
            **{k: v for k, v in asdict(opts).items() if k != "engines_dir"},
            "source": source,
            "face": face,
            "precisions": list(precisions),
            "runners": list(opts.runners),
            "reference": "/".join(REFERENCE),
        },
        "machine": collect_facts(),
    }
    if windows is None:
        if progress is not None:
            progress(0, total, "rendering synthetic clips for the accuracy check")
        windows = synthetic_windows(bundle)
    wins, truth = windows
    report["accuracy_windows"] = len(wins)
    with RunMonitor() as monitor:
        ref = _reference(bundle, wins, opts)
        runs = []
        for runner, precision in pairs:
            runs.append(
                _bench_one(bundle, runner, precision, opts, source, face, wins, truth, ref, tick)
            )
        report["runs"] = runs
        report["streaming"] = _streaming(bundle, opts, tick)
    report["monitor"] = monitor.summary()
    report["primary"] = next(
        (f"{r['runner']}/{r['precision']}" for r in runs if r["status"] == "ok"), None
    )
    return report


def _reference(bundle: Bundle, wins: np.ndarray, opts: BenchOptions) -> np.ndarray | None:
    try:
        sel = select_runner(
            bundle, REFERENCE[0], max_batch=16, threads=opts.threads, encoder_graph="encoder"
        )
        with sel.encoder as enc, sel.step as step:
            return predict_windows(enc, step, wins).argmax(1)
    except EdgeMerError as exc:
        log.warning("no FP32 reference (%s): agreement is not measured", exc)
        return None


def _bench_one(
    bundle: Bundle,
    runner: str,
    precision: str,
    opts: BenchOptions,
    source: str,
    face: str,
    wins: np.ndarray,
    truth: np.ndarray,
    ref: np.ndarray | None,
    tick: Callable[[str], Callable[[int], None]],
) -> dict[str, Any]:
    graph = PRECISIONS[precision]
    row = _row(runner, precision, graph)
    reason = _unavailable_reason(bundle, runner, precision)
    if reason is not None:
        row["reason"] = reason
        return row
    label = f"{runner} {precision}"
    try:
        sel = select_runner(
            bundle,
            runner,
            max_batch=16,
            engines_dir=opts.engines_dir,
            threads=opts.threads,
            encoder_graph=graph,
        )
    except EdgeMerError as exc:
        row["reason"] = str(exc)
        return row
    try:
        with sel.encoder as enc, sel.step as step:
            row["size_bytes"] = _size(bundle, graph, enc)
            pred = predict_windows(enc, step, wins).argmax(1)
        row["accuracy"] = float((pred == truth).mean())
        if ref is not None:
            row["agreement"] = float((pred == ref).mean())
        config = _config(bundle, source, runner, face, opts)
        res = pipeline_vs_model(
            config,
            frames=opts.frames,
            warmup=opts.warmup,
            chunks=opts.chunks,
            encoder_graph=graph,
            tick=tick(label),
        )
    except InputError:
        raise  # a bad --source or --face: the user's, not this row's
    except CudaUnavailableError as exc:  # the machine's, not the row's: nothing ran
        row["reason"] = str(exc)
        return row
    except Exception as exc:  # one broken row must not stop the others
        log.debug("bench %s failed", label, exc_info=True)
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        return row
    ctp = res["stages"]["capture_to_probs"]
    row.update(
        status="ok",
        ms_per_frame=ctp["mean_ms"],
        fps=res["pipeline_fps"],
        model_only_fps=res["model_only_fps"],
        efficiency=res["efficiency"],
        dropped=res["dropped"],
        **{k: res[k] for k in ("threads", "frames", "model_frames", "events", "source_ended")},
        model_only_ms_per_frame=res["model_only_ms_per_frame"],
        stages=res["stages"],
        timeline=res["timeline"],
    )
    if row["agreement"] is not None and row["agreement"] < opts.min_agreement:
        row["status"] = "accuracy check failed"
        row["reason"] = (
            f"top-1 agreement {row['agreement']:.3f} with {'/'.join(REFERENCE)} < "
            f"{opts.min_agreement:g} on {len(wins)} windows"
        )
    return row


def _config(bundle: Bundle, source: str, runner: str, face: str, opts: BenchOptions) -> Config:
    from edge_mer.bench.measure import REPLAY_SCHEME

    replay = source.startswith(REPLAY_SCHEME + "://")
    config = config_from_args(
        bundle.path,
        "synthetic://" if replay else source,  # the config knows only the public schemes
        stdout=False,
        runner=runner,
        tables={
            "face": {"detector": face},
            "metrics": {"enabled": False},
            "model": {
                "threads": opts.threads,
                "verify_hashes": False,  # run_bench checked them once
                **({"engines_dir": str(opts.engines_dir)} if opts.engines_dir else {}),
            },
        },
    )
    if replay:
        # The replay's URI is not a user's: set it past the config's scheme check.
        config = config.model_copy(
            update={"source": config.source.model_copy(update={"uri": source})}
        )
    return config


def _streaming(
    bundle: Bundle, opts: BenchOptions, tick: Callable[[str], Callable[[int], None]]
) -> dict[str, Any] | None:
    if not opts.streaming_rounds:
        return None
    try:
        res = streaming_vs_window(
            bundle,
            opts.streaming_rounds,
            5,
            opts.threads,
            strides=(1,),
            tick=tick("streaming vs window"),
        )
    except EdgeMerError as exc:
        return {"error": str(exc)}
    v = res["variants"]
    res["streaming_ms_per_frame"] = v["stream_s1"]["median_ms"]
    res["window_ms_per_frame"] = v["window_clip"]["median_ms"]
    return res
