"""``edge-mer convert``: checkpoint -> verified ONNX graphs -> INT8 encoder -> bundle.

The loaders compose in order (checkpoint -> model -> ONNX -> QDQ ONNX), everything is
written into a staging directory, and the bundle appears at ``out`` only once the manifest
is complete (see :class:`edge_mer.bundle.BundleWriter`).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer import __version__
from edge_mer.bundle import SCHEMA, BundleWriter, sha256_file
from edge_mer.convert.checkpoint import LoadedModel, load_model
from edge_mer.convert.cost import model_cost
from edge_mer.convert.export import OPSET, export_graphs, state_shapes
from edge_mer.convert.quantize import (
    METHODS,
    HeldOut,
    encoder_latency_ms,
    quantize_encoder,
    zero_points,
)
from edge_mer.convert.verify import verify_fp32, verify_window_claim
from edge_mer.errors import DataError, InputError, QuantizationError

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass
class ConvertOptions:
    """What ``edge-mer convert`` was asked to do (CLI flags, one to one)."""

    int8: bool = False
    calib: Path | None = None
    # Clips already in memory (uint8 [T, H, W, C] at the model's fps and size), instead of
    # --calib: what `edge-mer experiment` passes, the clips of a fold's training subjects.
    calib_clips: list[np.ndarray] | None = None
    calib_source: str = ""
    calib_method: str = "entropy"
    calib_fps: float | None = None
    holdout: float = 0.25
    min_agreement: float = 0.98
    max_calib_frames: int = 2048
    factory: str | None = None
    model_config: Path | None = None
    trust_checkpoint: bool = False
    force: bool = False
    name: str | None = None

    def check(self) -> None:
        if self.int8 and self.calib is None and self.calib_clips is None:
            raise InputError(
                "--int8 needs calibration clips: pass --calib PATH (videos, frame "
                "folders or a CASME II root; `edge-mer synth` makes some)"
            )
        if self.calib_method not in METHODS:
            raise InputError(f"--calib-method {self.calib_method!r}: choose one of {list(METHODS)}")
        if not 0.0 < self.holdout < 1.0:
            raise InputError(
                f"--holdout {self.holdout!r} must be between 0 and 1 (the share "
                "of calibration clips kept for the INT8 check)"
            )
        if not 0.0 < self.min_agreement <= 1.0:
            raise InputError(f"--min-agreement {self.min_agreement!r} must be in (0, 1]")


def _windows(clips: list[np.ndarray], window: int, stride: int) -> np.ndarray:
    """Every ``window``-frame slice of each clip at ``stride``; short clips are padded by
    repeating their last frame (the device sees a held face the same way)."""
    out = []
    for clip in clips:
        if len(clip) < window:
            pad = np.repeat(clip[-1:], window - len(clip), axis=0)
            clip = np.concatenate([clip, pad])
        out.extend(clip[s : s + window] for s in range(0, len(clip) - window + 1, max(1, stride)))
    return np.stack(out)


def _split(n: int, holdout: float) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(0).permutation(n)
    k = max(2, round(n * holdout))
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


def load_calibration(opts: ConvertOptions, loaded: LoadedModel, say: Say) -> dict[str, Any]:
    """Clips -> calibration frames and held-out windows, preprocessed as on the device."""
    from edge_mer.calibration.readers import load_clips
    from edge_mer.pipeline.preprocess import FramePreprocessor

    spec = loaded.spec
    pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
    need = 4 if opts.int8 else 1
    if opts.calib_clips is not None:
        clips = list(opts.calib_clips)
        sources = [opts.calib_source or "in memory"] * len(clips)
        if len(clips) < need:
            raise DataError(f"{len(clips)} calibration clips given; INT8 needs at least {need}")
        want = tuple(pre.shape)
        for i, c in enumerate(clips):
            if c.dtype != np.uint8 or c.ndim != 4 or tuple(c.shape[1:]) != want:
                raise DataError(
                    f"calibration clip {i}: {c.dtype} {tuple(c.shape)}, expected uint8 "
                    f"[T, {', '.join(map(str, want))}]"
                )
    else:
        say(f"reading calibration clips from {opts.calib}")
        clips, sources = load_clips(Path(opts.calib), pre, fps=spec["fps"], min_clips=need)
    if opts.int8:
        calib_idx, held_idx = _split(len(clips), opts.holdout)
        if len(calib_idx) < 2:
            where = sources[0] if opts.calib is None else str(opts.calib)
            raise DataError(
                f"{len(clips)} clips in {where!r} leave "
                f"{len(calib_idx)} for calibration after holding out "
                f"{len(held_idx)}: add clips or lower --holdout"
            )
    else:
        calib_idx, held_idx = list(range(len(clips))), []
    window = spec["window"]
    digest = hashlib.sha256()
    for c in clips:
        digest.update(np.ascontiguousarray(c).tobytes())
    calib_frames = np.concatenate([clips[i] for i in calib_idx])
    stride = max(1, int(np.ceil(len(calib_frames) / opts.max_calib_frames)))
    return {
        "clips": clips,
        "sources": sources,
        "calib_frames": calib_frames[::stride],
        "verify_windows": _windows([clips[i] for i in calib_idx], window, window)[:64],
        "held_windows": _windows([clips[i] for i in held_idx], window, max(1, window // 4))
        if held_idx
        else None,
        "calib_idx": calib_idx,
        "held_idx": held_idx,
        "sha256": digest.hexdigest(),
    }


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "edge_mer": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": str(OPSET),
        "python": platform.python_version(),
    }


def convert(
    checkpoint: Path, out: Path, opts: ConvertOptions, say: Say | None = None
) -> dict[str, Any]:
    """Convert ``checkpoint`` into a bundle at ``out``; return the manifest.

    Raises:
        InputError (and subclasses): bad checkpoint, model, clips or options (exit 2).
        VerificationError, QuantizationError: the graphs could not be proven (exit 1).
    """
    say = say or (lambda _m: None)
    opts.check()
    started = time.perf_counter()
    say(f"loading checkpoint {checkpoint}")
    loaded = load_model(
        checkpoint,
        factory=opts.factory,
        config_path=opts.model_config,
        trust_checkpoint=opts.trust_checkpoint,
    )
    spec = loaded.spec
    shapes = state_shapes(loaded)
    with BundleWriter(out, force=opts.force) as writer:
        has_calib = opts.calib is not None or opts.calib_clips is not None
        calib = load_calibration(opts, loaded, say) if has_calib else None
        say("exporting encoder.onnx, step.onnx, clip.onnx")
        ios = export_graphs(loaded, writer.staging)
        say("verifying PyTorch vs ONNX Runtime and streaming vs clip")
        verification: dict[str, Any] = {
            "fp32": verify_fp32(
                loaded, writer.staging, ios, shapes, calib["verify_windows"] if calib else None
            )
        }
        if loaded.state_kind == "window":
            say("checking the window claim: the same last T frames after two histories")
            verification["window"] = verify_window_claim(loaded, writer.staging, shapes)
        graphs: dict[str, Any] = {}
        for g, io_ in ios.items():
            graphs[g] = writer.entry(
                f"{g}.onnx",
                precision="fp32",
                inputs=io_.inputs,
                outputs=io_.outputs,
                input_dtypes=io_.input_dtypes,
            )
        targets = {"onnxruntime-cpu": "encoder", "tensorrt": "encoder"}
        calibration: dict[str, Any] | None = None
        if opts.int8 and calib is not None:
            int8 = _int8(opts, loaded, writer, calib, shapes, say)
            verification["int8"] = int8["verification"]
            graphs.update(int8["graphs"])
            targets = int8["targets"]
        if calib is not None:
            calibration = {
                "source": str(opts.calib) if opts.calib is not None else opts.calib_source,
                "clips": len(calib["clips"]),
                "calibration_clips": len(calib["calib_idx"]),
                "held_out_clips": len(calib["held_idx"]),
                "calibration_frames": len(calib["calib_frames"]),
                "method": opts.calib_method if opts.int8 else None,
                "sha256": calib["sha256"],
                "preprocessing": "FramePreprocessor: crop -> resize (INTER_AREA down, "
                "INTER_LINEAR up) -> gray or RGB, resampled by seconds",
            }
        manifest = {
            "schema": SCHEMA,
            "name": opts.name or checkpoint.stem,
            "labels": loaded.labels,
            "input": {
                **spec,
                "dtype": "uint8",
                "layout": "NHWC",
                "color": "gray" if spec["channels"] == 1 else "RGB",
                "normalisation": "inside the encoder",
            },
            "state": [
                {"name": n, "shape": list(s), "dtype": "float32", "init": "zeros"}
                for n, s in zip(loaded.state_names, shapes, strict=True)
            ],
            "state_kind": loaded.state_kind,
            "cost": model_cost(loaded.model, spec, loaded.state_kind),
            "graphs": graphs,
            "targets": targets,
            "verification": verification,
            "calibration": calibration,
            "model": {
                "factory": loaded.factory,
                "config": loaded.config,
                "checkpoint": checkpoint.name,
                "checkpoint_sha256": sha256_file(checkpoint),
            },
            "versions": _versions(),
            **({"spotter": loaded.spotter} if loaded.spotter else {}),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "convert_seconds": round(time.perf_counter() - started, 2),
        }
        writer.commit(manifest)
    say(f"bundle written to {out}")
    return manifest


def _int8(
    opts: ConvertOptions,
    loaded: LoadedModel,
    writer: BundleWriter,
    calib: dict[str, Any],
    shapes: list[tuple[int, ...]],
    say: Say,
) -> dict[str, Any]:
    from edge_mer.calibration.readers import EncoderCalibrationReader

    if calib["held_windows"] is None or not len(calib["held_windows"]):
        raise DataError("no held-out clips for the INT8 check: add calibration clips")
    frames = calib["calib_frames"]
    # Equal batches: ORT's histogram calibrators (entropy, percentile) fail on a short last one.
    batch = min(32, len(frames))
    reader = EncoderCalibrationReader([frames[: len(frames) // batch * batch]], batch_size=batch)
    fp32 = writer.staging / "encoder.onnx"
    held = HeldOut(
        fp32, writer.staging / "step.onnx", calib["held_windows"], loaded.state_names, shapes
    )
    say(
        f"INT8: {len(calib['calib_frames'])} calibration frames, "
        f"{len(calib['held_windows'])} held-out windows"
    )
    s8 = quantize_encoder(
        fp32,
        writer.path("encoder.int8.onnx"),
        reader,
        held,
        method=opts.calib_method,
        flavour="s8s8",
        min_agreement=opts.min_agreement,
        progress=say,
    )
    zps = zero_points(s8.path)
    if not zps or any(np.any(z != 0) for z in zps):
        raise QuantizationError(
            "encoder.int8.onnx has non-zero zero points; TensorRT would "
            "refuse it (this is a bug in edge-mer: please report it)"
        )
    frame = (loaded.spec["height"], loaded.spec["width"], loaded.spec["channels"])
    graphs: dict[str, Any] = {}
    io = {"inputs": {"frames": ["batch", *frame]}, "input_dtypes": {"frames": "uint8"}}
    graphs["encoder_int8"] = writer.entry(
        "encoder.int8.onnx",
        precision="int8",
        flavour="s8s8 symmetric QDQ, zero points 0",
        float_layers=s8.float_nodes,
        **io,
    )
    u8 = None
    try:
        u8 = quantize_encoder(
            fp32,
            writer.path("encoder.int8.u8s8.onnx"),
            reader,
            held,
            method=opts.calib_method,
            flavour="u8s8",
            min_agreement=opts.min_agreement,
        )
    except QuantizationError as exc:
        log.info("u8s8 flavour skipped: %s", exc)
    say("measuring encoder latency: FP32 vs INT8 flavours side by side (ONNX Runtime, CPU)")
    variants = {"fp32": fp32, "int8_s8s8": s8.path}
    if u8 is not None:
        variants["int8_u8s8"] = u8.path
    latency = encoder_latency_ms(variants, frame)
    # The fastest artifact serves ONNX Runtime on this CPU's architecture; u8s8 is written
    # only when it is that one (it is useless to TensorRT and to ARM).
    fastest = min(latency, key=latency.get)
    cpu_target = {"fp32": "encoder", "int8_s8s8": "encoder_int8", "int8_u8s8": "encoder_int8_u8s8"}[
        fastest
    ]
    if u8 is not None and fastest == "int8_u8s8":
        graphs["encoder_int8_u8s8"] = writer.entry(
            "encoder.int8.u8s8.onnx",
            precision="int8",
            flavour="u8s8 QDQ (asymmetric uint8 "
            "activations): fastest on x86 ONNX Runtime, not for TensorRT",
            float_layers=u8.float_nodes,
            **io,
        )
    elif u8 is not None:
        u8.path.unlink()
    agreement = {"s8s8": s8.agreement.as_dict()}
    if u8 is not None:
        agreement["u8s8"] = u8.agreement.as_dict()
    return {
        "graphs": graphs,
        "targets": {
            "tensorrt": "encoder_int8",
            "onnxruntime-arm": "encoder_int8",
            f"onnxruntime-{platform.machine().lower()}": cpu_target,
        },
        "verification": {
            "min_agreement": opts.min_agreement,
            "top1_agreement": s8.agreement.top1_agreement,
            "max_prob_diff": s8.agreement.max_prob_diff,
            "held_out_windows": s8.agreement.windows,
            "agreement": agreement,
            "float_layers": s8.float_nodes,
            "sensitivity": s8.sensitivity,
            "encoder_latency_ms": {k: round(v, 4) for k, v in latency.items()},
            "latency_machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        },
    }
