"""ONNX Runtime runners with IOBinding on preallocated, runner-owned numpy buffers.

Every input and output is a ``[max_batch, ...]`` numpy array allocated once in
:meth:`OrtRunner.activate`. For a batch of ``n`` rows the session is bound (``bind_input`` /
``bind_output`` with the buffers' pointers) to the first ``n`` rows; one ``IOBinding`` is built
per (batch size, ping-pong phase) the first time it is needed and reused after, so a frame
costs one ``run_with_iobinding`` and no allocation. ONNX Runtime writes the outputs straight
into the bound memory. With the CUDA or TensorRT execution provider the bound buffers stay
on the host (ORT copies them); CPU is where this path is zero-copy.

Shifted state (``infer(batch, shift=s)``): the next state is written ``s`` rows further into
the buffer the next call reads, so row ``r`` of this call's state becomes row ``r + s`` of the
next call's, and rows ``0 .. s-1`` read zeros. That is how the state cache rotates its banks
(the bank that restarts enters at row 0, the one that completed its window falls off the end)
without a copy or a per-frame write: ``state_spare_rows`` extra rows behind ``max_batch`` hold
what falls off.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bundle import Bundle
from edge_mer.errors import InputError, MissingDependencyError
from edge_mer.runners.base import Runner, RunnerError, state_pairs

log = logging.getLogger(__name__)

__all__ = [
    "SMALL_ENCODER_MACS",
    "OrtEncoderRunner",
    "OrtRunner",
    "OrtStepRunner",
    "default_providers",
    "encoder_threads",
    "threads_for_macs",
]

#: Below this many multiply-accumulates a frame (the manifest's
#: ``cost.encoder_macs_per_frame``) the encoder runs on one ONNX Runtime thread unless
#: ``threads`` says otherwise. Inside the frame loop ORT's pool then costs more than it
#: saves: on a 2-vCPU x86 VM one thread ran the demo encoder (3.5 M) and a 42 M one faster
#: than two, a 94 M one 12 % slower, ResNet-18 at 112x112 (466 M) 55 % slower
#: (``benchmarks/README.md``, sixth pass).
SMALL_ENCODER_MACS = 30_000_000

PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", "cpu", "the ONNX Runtime runner") from None
    return onnxruntime


def default_providers(available: Sequence[str] | None = None) -> list[str]:
    """TensorRT, CUDA, then CPU execution providers, those this onnxruntime build has."""
    if available is None:
        available = import_onnxruntime().get_available_providers()
    return [p for p in PROVIDER_PREFERENCE if p in available] or ["CPUExecutionProvider"]


class OrtRunner(Runner):
    """One ONNX graph in ONNX Runtime, every tensor bound to a runner-owned buffer.

    Args:
        path: the ``.onnx`` file.
        max_batch: rows preallocated per tensor (axis 0 of every input and output).
        state: ping-pong pairs, state input name -> state output name (``{"h": "h_next"}``).
        providers: execution providers; default :func:`default_providers`.
        threads: ``intra_op_num_threads`` (0 = ORT decides).
        precision, name: labels for reports.
        state_spare_rows: rows each state buffer has beyond ``max_batch``: the largest
            ``shift`` :meth:`infer` accepts.
    """

    def __init__(
        self,
        path: str | Path,
        max_batch: int,
        *,
        state: Mapping[str, str] | None = None,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        precision: str = "fp32",
        name: str | None = None,
        state_spare_rows: int = 0,
    ) -> None:
        super().__init__()
        if int(max_batch) < 1:
            raise InputError(f"max_batch {max_batch!r} must be >= 1")
        if int(state_spare_rows) < 0:
            raise InputError(f"state_spare_rows {state_spare_rows!r} must be >= 0")
        self.path = Path(path)
        self.max_batch = int(max_batch)
        self.state = dict(state or {})
        self.state_names = tuple(self.state)
        self.providers = list(providers) if providers is not None else None
        self.threads = int(threads)
        self.precision = precision
        self.name = name or f"onnxruntime:{self.path.stem}"
        self.state_spare_rows = int(state_spare_rows) if self.state else 0
        self._sess: Any = None
        self._bufs: dict[str, np.ndarray] = {}
        self._in_dicts: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
        self._out_dicts: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self._bindings: dict[tuple[int, int, int], Any] = {}
        self._phase = 0
        self._layout = (0, 0)  # (batch, shift) of the last call
        self._dirty = 0  # calls left that must zero the rows a shift leaves unwritten

    # -- lifecycle ---------------------------------------------------------------------

    def activate_impl(self) -> None:
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        providers = self.providers or default_providers(ort.get_available_providers())
        self._sess = ort.InferenceSession(str(self.path), opts, providers=providers)
        self._inputs_meta = [(i.name, i.shape, i.type) for i in self._sess.get_inputs()]
        self._outputs_meta = [(o.name, o.shape, o.type) for o in self._sess.get_outputs()]
        in_names = {n for n, _, _ in self._inputs_meta}
        out_names = {n for n, _, _ in self._outputs_meta}
        for s_in, s_out in self.state.items():
            if s_in not in in_names or s_out not in out_names:
                raise InputError(
                    f"{self.path.name}: state pair {s_in!r} -> {s_out!r} is not an "
                    f"input/output pair of the graph (inputs {sorted(in_names)}, "
                    f"outputs {sorted(out_names)})"
                )
        self._bufs = {}
        state_bufs = {*self.state, *self.state.values()}
        for name, shape, typ in [*self._inputs_meta, *self._outputs_meta]:
            full = self._full_shape(name, shape)
            if name in state_bufs:
                full = (full[0] + self.state_spare_rows, *full[1:])
            self._bufs[name] = np.zeros(full, _dtype(typ, name))
        # Phase p: state input S reads buffer set p, S_next writes set 1 - p. Set 0 of S is
        # the buffer named S, set 1 the buffer named S_next.
        plain = {n: self._bufs[n] for n, _, _ in self._inputs_meta if n not in self.state}
        self._in_dicts = (
            {**plain, **{s: self._bufs[s] for s in self.state}},
            {**plain, **{s: self._bufs[o] for s, o in self.state.items()}},
        )
        self._bindings, self._out_dicts, self._phase = {}, {}, 0
        self._layout, self._dirty = (0, 0), 0
        log.debug("%s active on %s, max batch %d", self.name, providers, self.max_batch)

    def deactivate_impl(self) -> None:
        self._bindings.clear()
        self._out_dicts.clear()
        self._sess = None
        self._bufs = {}
        self._in_dicts = ({}, {})

    # -- buffers -----------------------------------------------------------------------

    @property
    def inputs(self) -> Mapping[str, np.ndarray]:
        return self._in_dicts[self._phase]

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (None while inactive)."""
        return self._sess

    def buffer_addresses(self) -> dict[str, int]:
        """Name -> data pointer of every preallocated buffer (for zero-copy checks)."""
        return {n: int(b.ctypes.data) for n, b in self._bufs.items()}

    def infer(self, batch: int, shift: int = 0) -> Mapping[str, np.ndarray]:
        """Run on the first ``batch`` rows; with ``shift`` (``0 .. state_spare_rows``) the
        next state lands ``shift`` rows further down (see the module docstring): after the
        call ``inputs[S][shift + r]`` holds the next state of row ``r``, and
        ``inputs[S][:shift]`` is zero."""
        self.check_batch(batch)
        key = (batch, self._phase, shift)
        binding = self._bindings.get(key)
        if binding is None:
            if not 0 <= shift <= self.state_spare_rows:
                raise InputError(
                    f"{self.name}: shift {shift!r} is outside 0..{self.state_spare_rows} "
                    "(the state buffers' spare rows)"
                )
            binding = self._bind(batch, self._phase, shift)
        if shift:
            # The rows above the written ones are read as zero state by the next call. In a
            # steady layout nothing writes them; after a change, clear them in both sets.
            if self._layout != (batch, shift):
                self._layout, self._dirty = (batch, shift), 2
            if self._dirty:
                nxt = self._in_dicts[1 - self._phase]
                for s in self.state:
                    nxt[s][:shift] = 0
                self._dirty -= 1
        self._sess.run_with_iobinding(binding)
        out = self._out_dicts[key]
        if self.state:
            self._phase ^= 1
        return out

    def _bind(self, batch: int, phase: int, shift: int = 0) -> Any:
        binding = self._sess.io_binding()
        ins = self._in_dicts[phase]
        for name, _, _ in self._inputs_meta:
            arr = ins[name]
            binding.bind_input(
                name, "cpu", 0, arr.dtype.type, [batch, *arr.shape[1:]], arr.ctypes.data
            )
        outs: dict[str, np.ndarray] = {}
        feed_back = {o: s for s, o in self.state.items()}
        for name, _, _ in self._outputs_meta:
            if name in feed_back:  # S_next writes the set the next call reads as S
                arr = self._in_dicts[1 - phase][feed_back[name]][shift:]
            else:
                arr = self._bufs[name]
            binding.bind_output(
                name, "cpu", 0, arr.dtype.type, [batch, *arr.shape[1:]], arr.ctypes.data
            )
            outs[name] = arr[:batch]
        self._bindings[(batch, phase, shift)] = binding
        self._out_dicts[(batch, phase, shift)] = outs
        return binding

    def _full_shape(self, name: str, shape: Sequence[Any]) -> tuple[int, ...]:
        if not shape:
            raise RunnerError(f"{self.path.name}: tensor {name!r} is a scalar; no batch axis")
        rest = []
        for axis, d in enumerate(shape[1:], start=1):
            if not isinstance(d, int) or d < 0:
                raise RunnerError(
                    f"{self.path.name}: tensor {name!r} axis {axis} is dynamic ({d!r}); "
                    "only the batch axis may be dynamic (DESIGN §3)"
                )
            rest.append(d)
        return (self.max_batch, *rest)


def _dtype(ort_type: str, name: str) -> type:
    try:
        return _ORT_DTYPES[ort_type]
    except KeyError:
        raise RunnerError(f"tensor {name!r} has type {ort_type!r}, which no runner binds") from None


def encoder_graph_key(bundle: Bundle, machine: str | None = None) -> str:
    """The manifest graph for ONNX Runtime on this CPU, from ``manifest["targets"]``.

    ``onnxruntime-<machine>`` (e.g. ``onnxruntime-x86_64``), then ``onnxruntime-arm`` on ARM
    (aarch64/armv7l), then ``onnxruntime-cpu``, then the FP32 ``encoder``.
    """
    machine = (machine or platform.machine()).lower()
    targets = bundle.manifest.get("targets") or {}
    keys = [f"onnxruntime-{machine}"]
    if machine.startswith(("aarch64", "arm")):
        keys.append("onnxruntime-arm")
    keys.append("onnxruntime-cpu")
    for k in keys:
        if k in targets and targets[k] in bundle.manifest["graphs"]:
            return str(targets[k])
    return "encoder"


def threads_for_macs(macs: Any) -> int:
    """The default ``intra_op_num_threads`` for an encoder of ``macs`` a frame: 1 under
    :data:`SMALL_ENCODER_MACS`, else 0 (ONNX Runtime's default, one thread per physical
    core), also when the size is unknown (None)."""
    if isinstance(macs, int | float) and 0 < macs < SMALL_ENCODER_MACS:
        return 1
    return 0


def encoder_threads(bundle: Bundle, threads: int = 0) -> int:
    """The encoder's ``intra_op_num_threads``: ``threads`` when set, else
    :func:`threads_for_macs` of the manifest's ``cost.encoder_macs_per_frame``."""
    if threads:
        return int(threads)
    return threads_for_macs((bundle.manifest.get("cost") or {}).get("encoder_macs_per_frame"))


class OrtEncoderRunner(OrtRunner):
    """``encoder*.onnx``: input ``frames`` uint8 ``[N,H,W,C]`` -> ``features`` float32 ``[N,D]``.

    ``from_bundle`` with ``threads`` 0 picks the thread count by the encoder's size
    (:func:`encoder_threads`)."""

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, max_batch: int, *, graph: str | None = None, **kw: Any
    ) -> OrtEncoderRunner:
        key = graph or encoder_graph_key(bundle)
        entry = bundle.manifest["graphs"].get(key, {})
        kw["threads"] = encoder_threads(bundle, kw.get("threads") or 0)
        return cls(
            bundle.graph_path(key),
            max_batch,
            precision=str(entry.get("precision", "fp32")),
            name=f"onnxruntime:{key}",
            **kw,
        )


class OrtStepRunner(OrtRunner):
    """``step.onnx``: ``features`` + states ``S`` -> ``logits`` + ``S_next``, state ping-pong.

    For a recurrent bundle the state buffers get ``ceil(max_batch / window)`` spare rows (one
    per track when ``max_batch`` is tracks x window): what the state cache's bank rotation
    (``infer(batch, shift=tracks)``) needs."""

    @classmethod
    def from_bundle(cls, bundle: Bundle, max_batch: int, **kw: Any) -> OrtStepRunner:
        entry = bundle.manifest["graphs"]["step"]
        kw["threads"] = kw.get("threads") or 1
        if bundle.state_kind == "recurrent":
            kw.setdefault("state_spare_rows", -(-int(max_batch) // int(bundle.input["window"])))
        return cls(
            bundle.graph_path("step"),
            max_batch,
            state=state_pairs([s.name for s in bundle.states]),
            precision=str(entry.get("precision", "fp32")),
            name="onnxruntime:step",
            **kw,
        )
