"""Inference runners behind one interface (``activate / infer / deactivate``).

:func:`select_runner` picks the encoder artifact for this machine from the bundle's
``manifest["targets"]``: a checked TensorRT engine where TensorRT is present, else ONNX Runtime
with the graph built for this CPU. Runners are constructed inactive; use them as context
managers. Backend modules (onnxruntime, tensorrt, CUDA bindings) are imported lazily.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any

from edge_mer.bundle import Bundle
from edge_mer.errors import EdgeMerError, InputError, MissingDependencyError
from edge_mer.runners.base import Runner, RunnerError, state_pairs

log = logging.getLogger(__name__)

__all__ = ["RUNNERS", "Runner", "RunnerError", "Selection", "select_runner", "state_pairs"]

RUNNERS = ("auto", "tensorrt", "onnxruntime")
TENSORRT_RUNNER_MISSING = (
    "the TensorRT runner needs TensorRT, which is not importable here: on a Jetson it comes "
    "with JetPack (python3-libnvinfer); use a venv made with --system-site-packages"
)


@dataclass
class Selection:
    """What :func:`select_runner` chose: ``encoder`` and ``step`` runners (inactive), and why
    the others were passed over (``unavailable``: runner name -> reason)."""

    encoder: Runner
    step: Runner
    kind: str
    unavailable: dict[str, str] = field(default_factory=dict)


def select_runner(
    bundle: Bundle,
    runner: str = "auto",
    *,
    max_batch: int = 8,
    step_max_batch: int | None = None,
    engines_dir: Any = None,
    facts: Any = None,
    providers: Any = None,
    threads: int = 0,
    encoder_graph: str | None = None,
) -> Selection:
    """Encoder and step runners for ``bundle`` on this machine.

    ``auto`` tries TensorRT (a checked engine) and falls back to ONNX Runtime, recording why
    in ``Selection.unavailable``. Naming a runner that cannot run here raises with the reason
    (for TensorRT engines from another device: ``rebuild with: edge-mer build-engine ...``).
    ``step_max_batch`` defaults to ``max_batch`` (size it as tracks x banks for a StateCache).
    ``encoder_graph`` pins the encoder's manifest graph (``encoder``, ``encoder_int8``,
    ``encoder_int8_u8s8``) instead of the one ``manifest["targets"]`` picks for this machine;
    for TensorRT it pins the engine's precision (INT8 for ``encoder_int8``, else not INT8).
    """
    if runner not in RUNNERS:
        raise InputError(f"runner {runner!r} is not one of {list(RUNNERS)}")
    step_max_batch = step_max_batch or max_batch
    unavailable: dict[str, str] = {}
    if runner in ("auto", "tensorrt"):
        try:
            from edge_mer.runners.tensorrt.device import TensorRTMissingError
            from edge_mer.runners.trt import TrtRunner

            if importlib.util.find_spec("tensorrt") is None and facts is None:
                raise TensorRTMissingError(TENSORRT_RUNNER_MISSING)  # exit 2 when asked for
            if encoder_graph is not None:
                _check_trt_graph(bundle, encoder_graph)
            enc = TrtRunner.from_bundle(bundle, "encoder", facts=facts, engines_dir=engines_dir)
            if encoder_graph is not None:
                _check_trt_precision(bundle, encoder_graph, enc.precision)
            step = TrtRunner.from_bundle(
                bundle, "step", facts=facts, engines_dir=engines_dir, min_batch=step_max_batch
            )
            return Selection(enc, step, "tensorrt", unavailable)
        except EdgeMerError as exc:
            if runner == "tensorrt":
                raise
            unavailable["tensorrt"] = str(exc)
            log.info("TensorRT runner unavailable: %s", exc)
    try:
        from edge_mer.runners.ort import OrtEncoderRunner, OrtStepRunner, import_onnxruntime

        import_onnxruntime()
    except EdgeMerError as exc:
        unavailable["onnxruntime"] = str(exc)
        message = "no runner can run this bundle here: " + "; ".join(
            f"{k}: {v}" for k, v in unavailable.items()
        )
        # A runtime that is simply not installed is the user's to fix (exit 2), not a failure.
        if isinstance(exc, MissingDependencyError):
            raise InputError(message) from None
        raise RunnerError(message) from None
    kw = {"providers": providers, "threads": threads}
    enc = OrtEncoderRunner.from_bundle(bundle, max_batch, graph=encoder_graph, **kw)
    step = OrtStepRunner.from_bundle(bundle, step_max_batch, **kw)
    return Selection(enc, step, "onnxruntime", unavailable)


def _check_trt_graph(bundle: Bundle, graph: str) -> None:
    if graph not in bundle.manifest["graphs"]:
        bundle.graph_path(graph)  # raises BundleError naming the graphs it has
    if graph not in ("encoder", "encoder_int8"):
        raise RunnerError(
            f"graph {graph!r} is an ONNX Runtime artifact; TensorRT engines are built from "
            "'encoder' (FP32/FP16) or 'encoder_int8' (INT8)"
        )


def _check_trt_precision(bundle: Bundle, graph: str, precision: str) -> None:
    want_int8 = graph == "encoder_int8"
    if (precision == "int8") != want_int8:
        want = "int8" if want_int8 else "fp16"
        raise RunnerError(
            f"the TensorRT encoder engine here is {precision}, not what {graph!r} asks for; "
            f"rebuild with: edge-mer build-engine {bundle.path} --precision {want}"
        )
