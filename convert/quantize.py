"""INT8 encoder: ONNX Runtime static QDQ quantization, checked against FP32 on held-out clips.

Flavours:
- ``s8s8``: symmetric signed int8 activations and weights, every zero point 0. TensorRT's
  explicit quantization accepts only this, and ONNX Runtime on ARM (Raspberry Pi) runs it
  well. Always written, as ``encoder.int8.onnx``.
- ``u8s8``: asymmetric uint8 activations, symmetric int8 weights. On x86 CPUs without VNNI
  ORT runs it much faster than s8s8; written as ``encoder.int8.u8s8.onnx`` when it is the
  faster INT8 flavour here.

The step graph stays float: TensorRT has no INT8 LSTM, and it is tiny.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.errors import InputError, QuantizationError
from edge_mer.streaming import ort_session, softmax, stream_logits

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
FLAVOURS = ("s8s8", "u8s8")
_QUANT_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class Agreement:
    """INT8 vs FP32 on held-out windows (the same step graph, FP32, in both)."""

    windows: int
    top1_agreement: float
    max_prob_diff: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "top1_agreement": round(self.top1_agreement, 6),
            "max_prob_diff": round(self.max_prob_diff, 6),
        }


@dataclass
class QuantResult:
    path: Path
    flavour: str
    agreement: Agreement
    float_nodes: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)


class HeldOut:
    """Held-out windows and their FP32 reference probabilities, computed once."""

    def __init__(
        self,
        fp32_encoder: Path,
        step: Path,
        windows: np.ndarray,
        state_names: Sequence[str],
        state_shapes: Sequence[tuple[int, ...]],
    ) -> None:
        self.windows = windows
        self.step = ort_session(step)
        self.state_names = list(state_names)
        self.state_shapes = list(state_shapes)
        self.ref = self.probs(ort_session(fp32_encoder))

    def probs(self, encoder: Any) -> np.ndarray:
        out = [
            stream_logits(
                encoder,
                self.step,
                np.ascontiguousarray(self.windows[i : i + 16]),
                self.state_names,
                self.state_shapes,
            )
            for i in range(0, len(self.windows), 16)
        ]
        return softmax(np.concatenate(out))

    def agreement(self, int8_encoder: Path) -> Agreement:
        p = self.probs(ort_session(int8_encoder))
        agree = float(np.mean(p.argmax(1) == self.ref.argmax(1)))
        return Agreement(len(self.windows), agree, float(np.max(np.abs(p - self.ref))))


def quantizable_nodes(model_path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(model_path))
    return [n.name for n in model.graph.node if n.op_type in _QUANT_OPS]


def zero_points(model_path: Path) -> list[np.ndarray]:
    """Every zero point of every QuantizeLinear/DequantizeLinear in the model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {
        o: numpy_helper.to_array(a.t)
        for n in model.graph.node
        if n.op_type == "Constant"
        for o in n.output
        for a in n.attribute
        if a.name == "value"
    }
    zps = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            name = node.input[2]
            zps.append(inits.get(name, consts.get(name)))
    return [z for z in zps if z is not None]


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


class Quantizer:
    """Quantizes one FP32 encoder repeatedly (different float layers, flavours) from one
    calibration pass when ORT supports a calibration cache (ORT >= 1.32), else recalibrates.
    """

    def __init__(self, fp32_encoder: Path, reader: Any, method: str, workdir: Path) -> None:
        if method not in METHODS:
            raise InputError(f"--calib-method {method!r}: choose one of {list(METHODS)}")
        from onnxruntime.quantization import quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.reader = reader
        self.method = method
        self.workdir = workdir
        self._quantize_static = quantize_static
        self.model = workdir / "encoder.pre.onnx"
        try:
            with contextlib.redirect_stdout(None):
                quant_pre_process(str(fp32_encoder), str(self.model), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation, not a requirement
            log.warning("quant_pre_process failed (%s); quantizing the exported graph", exc)
            shutil.copy(fp32_encoder, self.model)
        self.nodes = quantizable_nodes(self.model)
        params = inspect.signature(quantize_static).parameters
        self.cache = (
            workdir / f"calib-{method}.json" if "calibration_cache_path" in params else None
        )

    def quantize(
        self,
        out: Path,
        flavour: str = "s8s8",
        exclude: Sequence[str] = (),
        only: Sequence[str] | None = None,
    ) -> Path:

        extra = {"WeightSymmetric": True, "ActivationSymmetric": flavour == "s8s8"}
        if self.method == "percentile":
            extra["CalibPercentile"] = 99.99
        kwargs: dict[str, Any] = {}
        if self.cache is not None:
            kwargs["calibration_cache_path"] = str(self.cache)
        if self.cache is None or not self.cache.exists():
            self.reader.rewind()
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints progress to stdout
            self._quantize(out, flavour, exclude, only, extra, kwargs)
        return out

    def _quantize(
        self,
        out: Path,
        flavour: str,
        exclude: Sequence[str],
        only: Sequence[str] | None,
        extra: dict[str, Any],
        kwargs: dict[str, Any],
    ) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType

        self._quantize_static(
            str(self.model),
            str(out),
            self.reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if flavour == "s8s8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=_method(self.method),
            op_types_to_quantize=list(_QUANT_OPS),
            nodes_to_exclude=list(exclude),
            nodes_to_quantize=list(only) if only is not None else None,
            extra_options=extra,
            **kwargs,
        )


def quantize_encoder(
    fp32_encoder: Path,
    out: Path,
    reader: Any,
    held_out: HeldOut,
    *,
    method: str = "entropy",
    flavour: str = "s8s8",
    min_agreement: float = 0.98,
    progress: Callable[[str], None] | None = None,
) -> QuantResult:
    """Quantize the encoder; keep the most sensitive layers in float until INT8 agrees with
    FP32 on at least ``min_agreement`` of held-out windows.

    Raises:
        QuantizationError: the target cannot be met even with most layers in float.
    """
    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="edge-mer-quant-") as tmp:
        work = Path(tmp)
        q = Quantizer(fp32_encoder, reader, method, work)
        say(f"calibrating ({method}) and quantizing {len(q.nodes)} layers")
        q.quantize(work / "full.onnx", flavour)
        agreement = held_out.agreement(work / "full.onnx")
        log.info("INT8 %s, all layers: %s", flavour, agreement)
        result = QuantResult(out, flavour, agreement)
        if agreement.top1_agreement < min_agreement:
            say(
                f"agreement {agreement.top1_agreement:.3f} < {min_agreement}: measuring "
                "per-layer sensitivity"
            )
            result = _fallback(q, held_out, work, flavour, min_agreement, agreement, say)
            best = result.path
        else:
            best = work / "full.onnx"
        shutil.copy(best, out)
        result.path = out
    return result


def _fallback(
    q: Quantizer,
    held_out: HeldOut,
    work: Path,
    flavour: str,
    target: float,
    first: Agreement,
    say: Callable[[str], None],
) -> QuantResult:
    sensitivity: dict[str, float] = {}
    for i, node in enumerate(q.nodes):
        path = q.quantize(work / f"only-{i}.onnx", flavour, only=[node])
        a = held_out.agreement(path)
        # Disagreement first, then probability drift, as one sortable number.
        sensitivity[node] = (1.0 - a.top1_agreement) + a.max_prob_diff * 1e-3
    ranked = sorted(q.nodes, key=lambda n: sensitivity[n], reverse=True)
    float_nodes: list[str] = []
    best = first
    for node in ranked[:-1]:  # at least one layer stays INT8, or this is not an INT8 model
        float_nodes.append(node)
        path = q.quantize(work / f"fallback-{len(float_nodes)}.onnx", flavour, exclude=float_nodes)
        best = held_out.agreement(path)
        say(f"{len(float_nodes)} layer(s) in float: agreement {best.top1_agreement:.3f}")
        if best.top1_agreement >= target:
            return QuantResult(
                path,
                flavour,
                best,
                list(float_nodes),
                {k: round(v, 6) for k, v in sensitivity.items()},
            )
    raise QuantizationError(
        f"INT8 encoder agrees with FP32 on {first.top1_agreement:.3f} of {first.windows} held-out "
        f"windows (max prob diff {first.max_prob_diff:.3f}) and still only "
        f"{best.top1_agreement:.3f} with {len(float_nodes)} of {len(q.nodes)} layers in float; "
        f"target --min-agreement {target}: add calibration clips, try --calib-method, or lower "
        "--min-agreement"
    )


def encoder_latency_ms(
    paths: dict[str, Path],
    frame_shape: Sequence[int],
    *,
    rounds: int = 60,
    batch: int = 1,
    threads: int = 0,
) -> dict[str, float]:
    """Median wall time (ms) of one call of each encoder on ``batch`` frames.

    The encoders are timed round-robin, in a rotating order, on the same input, so that
    machine noise falls on all of them alike: the ratios are side by side.
    """
    from edge_mer.streaming import ort_session

    sessions = {name: ort_session(path, threads) for name, path in paths.items()}
    x = np.random.default_rng(0).integers(0, 256, (batch, *frame_shape), dtype=np.uint8)
    for sess in sessions.values():
        for _ in range(5):
            sess.run(None, {"frames": x})
    names = list(sessions)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            sessions[name].run(None, {"frames": x})
            times[name].append(time.perf_counter() - t0)
    return {n: float(np.median(t) * 1e3) for n, t in times.items()}
