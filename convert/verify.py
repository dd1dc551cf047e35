"""Prove the exported graphs compute what the PyTorch model computes.

Two checks, both on logits with an absolute tolerance (1e-4 for FP32):
- PyTorch vs ONNX Runtime, for each graph, on random inputs and on calibration windows;
- streaming (encoder + step over T frames) vs the clip graph, in ONNX Runtime.
A model that declares ``state_kind = "window"`` gets a third: streamed from two different
histories, its logits over the same last T frames must agree (:func:`verify_window_claim`).
Non-finite outputs anywhere fail as :class:`NonFiniteError` (the weights are broken).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_mer.convert.checkpoint import LoadedModel
from edge_mer.convert.export import GraphIO, example_inputs
from edge_mer.errors import ModelProtocolError, NonFiniteError, VerificationError
from edge_mer.streaming import ort_session, stream_logits

log = logging.getLogger(__name__)

FP32_ATOL = 1e-4


def _finite(graph: str, where: str, arrays: Sequence[np.ndarray], names: Sequence[str]) -> None:
    for name, arr in zip(names, arrays, strict=True):
        if not np.all(np.isfinite(arr)):
            raise NonFiniteError(
                f"{graph} graph output {name!r} has NaN or Inf ({where}): the "
                "checkpoint's weights are broken; retrain or re-export them"
            )


def _torch_outputs(
    module: torch.nn.Module, graph: str, feeds: dict[str, np.ndarray], ios: GraphIO
) -> list[np.ndarray]:
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in ios.inputs]
    with torch.no_grad():
        if graph == "encoder":
            out: Any = module.encode(*args)
        elif graph == "clip":
            out = module(*args)
        else:
            logits, nxt = module.step(args[0], tuple(args[1:]))
            out = (logits, *((nxt,) if isinstance(nxt, torch.Tensor) else nxt))
    outs = out if isinstance(out, tuple) else (out,)
    return [o.detach().numpy() for o in outs]


def compare_graph(
    module: torch.nn.Module,
    session: Any,
    graph: str,
    ios: GraphIO,
    feeds: dict[str, np.ndarray],
    where: str,
) -> float:
    """Max |PyTorch - ORT| over all outputs of ``graph`` for ``feeds``."""
    ref = _torch_outputs(module, graph, feeds, ios)
    _finite(graph, f"PyTorch, {where}", ref, list(ios.outputs))
    got = session.run(list(ios.outputs), feeds)
    _finite(graph, f"ONNX Runtime, {where}", got, list(ios.outputs))
    worst = 0.0
    for name, r, g in zip(ios.outputs, ref, got, strict=True):
        if r.shape != g.shape:
            raise VerificationError(
                f"{graph}.onnx output {name!r} has shape {g.shape}, PyTorch "
                f"gives {r.shape} ({where})"
            )
        worst = max(worst, float(np.max(np.abs(r - g))) if r.size else 0.0)
    return worst


def verify_fp32(
    loaded: LoadedModel,
    bundle_dir: Path,
    ios: dict[str, GraphIO],
    state_shapes: Sequence[tuple[int, ...]],
    windows: np.ndarray | None,
    atol: float = FP32_ATOL,
) -> dict[str, Any]:
    """Check all three FP32 graphs; return the figures for the manifest.

    Args:
        windows: calibration windows, uint8 ``[M, T, H, W, C]`` (``None`` = random only).

    Raises:
        VerificationError: a difference beyond ``atol``, naming the graph.
        NonFiniteError: NaN or Inf in any output.
    """
    model = loaded.model.eval()
    sessions = {g: ort_session(bundle_dir / f"{g}.onnx") for g in ios}
    ex = {g: {k: v.numpy() for k, v in d.items()} for g, d in example_inputs(loaded, 3).items()}
    figures: dict[str, float] = {}
    for graph in ("encoder", "step", "clip"):
        figures[f"{graph}_max_abs_random"] = compare_graph(
            model, sessions[graph], graph, ios[graph], ex[graph], "random input"
        )
    random_clips = ex["clip"]["clip"]
    stream = stream_logits(
        sessions["encoder"], sessions["step"], random_clips, loaded.state_names, state_shapes
    )
    clip_out = sessions["clip"].run(["logits"], {"clip": random_clips})[0]
    figures["streaming_vs_clip_max_abs_random"] = float(np.max(np.abs(stream - clip_out)))
    n_windows = 0
    if windows is not None and len(windows):
        n_windows = len(windows)
        worst_clip = worst_enc = worst_stream = 0.0
        for start in range(0, n_windows, 8):
            batch = np.ascontiguousarray(windows[start : start + 8])
            worst_clip = max(
                worst_clip,
                compare_graph(
                    model,
                    sessions["clip"],
                    "clip",
                    ios["clip"],
                    {"clip": batch},
                    "calibration clips",
                ),
            )
            frames = batch.reshape(-1, *batch.shape[2:])
            worst_enc = max(
                worst_enc,
                compare_graph(
                    model,
                    sessions["encoder"],
                    "encoder",
                    ios["encoder"],
                    {"frames": frames},
                    "calibration frames",
                ),
            )
            s = stream_logits(
                sessions["encoder"], sessions["step"], batch, loaded.state_names, state_shapes
            )
            c = sessions["clip"].run(["logits"], {"clip": batch})[0]
            worst_stream = max(worst_stream, float(np.max(np.abs(s - c))))
        figures["clip_max_abs_calibration"] = worst_clip
        figures["encoder_max_abs_calibration"] = worst_enc
        figures["streaming_vs_clip_max_abs_calibration"] = worst_stream
    logit_checks = {k: v for k, v in figures.items() if k.startswith(("step", "clip", "streaming"))}
    for key, value in logit_checks.items():
        if value > atol:
            graph = "streaming (encoder+step)" if key.startswith("streaming") else key.split("_")[0]
            raise VerificationError(
                f"{graph} graph differs from the reference by {value:.3g} > {atol:g} ({key}); "
                "the export does not compute what the model computes (non-deterministic ops, "
                "state not batch-first, or forward != encode+step?)"
            )
    log.info("FP32 verification passed: %s", figures)
    return {
        "atol": atol,
        "max_abs_pytorch_vs_onnx": max(
            v for k, v in figures.items() if not k.startswith("streaming")
        ),
        "max_abs_streaming_vs_clip": max(
            v for k, v in figures.items() if k.startswith("streaming")
        ),
        "calibration_windows": n_windows,
        "details": figures,
    }


def verify_window_claim(
    loaded: LoadedModel,
    bundle_dir: Path,
    state_shapes: Sequence[tuple[int, ...]],
    atol: float = FP32_ATOL,
) -> dict[str, Any]:
    """Check a ``state_kind = "window"`` claim on the exported graphs, in ONNX Runtime.

    Streams ``encoder.onnx`` + ``step.onnx`` over two different random histories (of
    different lengths) followed by the same T = ``window`` frames, and compares the final
    logits with each other and with ``clip.onnx`` on those T frames: a window model's state
    after T steps depends only on those T frames, so all three agree.

    Raises:
        ModelProtocolError: they differ by more than ``atol`` (the claim is false).
    """
    spec = loaded.spec
    t = spec["window"]
    frame = (spec["height"], spec["width"], spec["channels"])
    rng = np.random.default_rng(4321)
    last = rng.integers(0, 256, (2, t, *frame), dtype=np.uint8)
    histories = (t + 3, 2 * t + 1)
    enc, step, clip = (ort_session(bundle_dir / f"{g}.onnx") for g in ("encoder", "step", "clip"))
    ends = []
    for n in histories:
        past = rng.integers(0, 256, (2, n, *frame), dtype=np.uint8)
        clips = np.concatenate([past, last], axis=1)
        ends.append(stream_logits(enc, step, clips, loaded.state_names, state_shapes))
    ref = clip.run(["logits"], {"clip": last})[0]
    between = float(np.max(np.abs(ends[0] - ends[1])))
    vs_clip = max(float(np.max(np.abs(e - ref))) for e in ends)
    if max(between, vs_clip) > atol:
        raise ModelProtocolError(
            f"the model declares state_kind 'window', but step.onnx streamed over histories of "
            f"{histories[0]} and {histories[1]} frames before the same {t} frames ends "
            f"{between:.3g} apart (and {vs_clip:.3g} from clip.onnx on those {t} frames; "
            f"tolerance {atol:g}): its state remembers frames older than the window; drop "
            "state_kind (recurrent, the default) or make the state depend on the last "
            f"{t} frames only"
        )
    log.info("window claim holds: %.3g between histories, %.3g vs clip", between, vs_clip)
    return {
        "histories": list(histories),
        "max_abs_between_histories": between,
        "max_abs_vs_clip": vs_clip,
        "atol": atol,
    }
