"""TensorRT runner: thin hardware calls around plain, tested planning code.

Version shim (:class:`~edge_mer.engine.TrtVersion`): TensorRT >= 8.5 uses named tensors
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``); older 8.x the binding
API (``set_binding_shape`` / ``execute_async_v2(bindings, stream)``).

Buffers (:func:`plan_buffers`, one per I/O tensor, sized for ``max_batch``):
- integrated GPU (Jetson, CPU and GPU share DRAM): pinned host memory mapped into the GPU's
  address space (``cudaHostAlloc(..., cudaHostAllocMapped)`` + ``cudaHostGetDevicePointer``);
  the numpy view the caller writes the crop into IS what TensorRT reads: no copy.
- discrete GPU: pinned host buffers + device buffers, async copies of the used rows on the
  runner's stream.
Recurrent state ping-pongs: ``S`` and ``S_next`` swap tensor addresses after every call.

Threading: CUDA contexts are per thread. The thread that calls :meth:`TrtRunner.activate`
owns the runner; ``infer`` and ``deactivate`` must be called from it (checked), and other
threads hand it work through queues. cuda-python's runtime API binds the device's primary
context on that thread; the pycuda fallback retains the primary context and pushes it on
activate, pops it on deactivate (never ``pycuda.autoinit``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bundle import Bundle
from edge_mer.engine import (
    DeviceFacts,
    EngineName,
    TrtVersion,
    gather_device_facts,
    import_tensorrt,
)
from edge_mer.errors import EngineError, MissingDependencyError
from edge_mer.runners.base import Runner, RunnerError, state_pairs

log = logging.getLogger(__name__)

__all__ = [
    "BufferPlan",
    "TensorIO",
    "TrtRunner",
    "engine_io",
    "import_cuda_backend",
    "plan_buffers",
]


@dataclass(frozen=True)
class TensorIO:
    """One engine I/O tensor: ``shape`` as the engine reports it (-1 = dynamic batch)."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype
    index: int  # binding index (8.x) or I/O tensor index (named API)


@dataclass(frozen=True)
class BufferPlan:
    """One preallocated buffer: ``shape`` has ``max_batch`` rows."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype
    index: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def engine_io(engine: Any, version: TrtVersion, trt: Any) -> list[TensorIO]:
    """The engine's I/O tensors through the API this TensorRT version has."""
    out = []
    if version.named_tensors:
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            out.append(TensorIO(name, is_input, shape, dtype, i))
    else:
        for i in range(engine.num_bindings):
            name = engine.get_binding_name(i)
            shape = tuple(int(d) for d in engine.get_binding_shape(i))
            dtype = np.dtype(trt.nptype(engine.get_binding_dtype(i)))
            out.append(TensorIO(name, bool(engine.binding_is_input(i)), shape, dtype, i))
    return out


def plan_buffers(tensors: Sequence[TensorIO], max_batch: int) -> list[BufferPlan]:
    """One buffer per tensor with ``max_batch`` rows; axis 0 must be the (dynamic) batch.

    Raises:
        EngineError: a scalar tensor, or a dynamic axis other than the batch.
    """
    if max_batch < 1:
        raise EngineError(f"max_batch {max_batch!r} must be >= 1")
    plans = []
    for t in tensors:
        if not t.shape:
            raise EngineError(f"engine tensor {t.name!r} is a scalar; bundle graphs need a batch")
        if t.shape[0] not in (-1, max_batch) and t.shape[0] < max_batch:
            raise EngineError(
                f"engine tensor {t.name!r} has a fixed batch {t.shape[0]} < max_batch {max_batch}"
            )
        if any(d < 0 for d in t.shape[1:]):
            raise EngineError(
                f"engine tensor {t.name!r} shape {t.shape} has a dynamic non-batch axis; "
                "rebuild the engine from this bundle (edge-mer build-engine)"
            )
        plans.append(BufferPlan(t.name, t.is_input, (max_batch, *t.shape[1:]), t.dtype, t.index))
    return plans


# --------------------------------------------------------------------------- CUDA backends


@dataclass
class HostBuffer:
    """Pinned host memory: ``array`` (numpy view), ``host_ptr``, and ``device_ptr`` (mapped
    memory: the GPU address of the same bytes; else a separate device allocation)."""

    array: np.ndarray
    host_ptr: int
    device_ptr: int
    mapped: bool


class CudaPythonBackend:
    """The few CUDA runtime calls the runner makes, via cuda-python (``cudart``)."""

    name = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def _ok(self, res: Any, what: str) -> Any:
        err, *rest = res if isinstance(res, tuple) else (res,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise EngineError(f"CUDA {what} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def integrated(self, device: int = 0) -> bool:
        prop = self._ok(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        return bool(prop.integrated)

    def activate(self) -> None:
        self._ok(self.rt.cudaSetDevice(0), "cudaSetDevice")

    def deactivate(self) -> None:
        pass

    def stream(self) -> Any:
        return self._ok(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def alloc(self, plan: BufferPlan, mapped: bool) -> HostBuffer:
        flags = self.rt.cudaHostAllocMapped if mapped else self.rt.cudaHostAllocDefault
        host = int(self._ok(self.rt.cudaHostAlloc(plan.nbytes, flags), "cudaHostAlloc"))
        if mapped:
            dev = int(self._ok(self.rt.cudaHostGetDevicePointer(host, 0), "cudaHostGetDevicePtr"))
        else:
            dev = int(self._ok(self.rt.cudaMalloc(plan.nbytes), "cudaMalloc"))
        array = _view(host, plan)
        return HostBuffer(array, host, dev, mapped)

    def free(self, buf: HostBuffer) -> None:
        if not buf.mapped:
            self.rt.cudaFree(buf.device_ptr)
        self.rt.cudaFreeHost(buf.host_ptr)

    def htod(self, buf: HostBuffer, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.rt.cudaMemcpyAsync(buf.device_ptr, buf.host_ptr, nbytes, kind, stream)

    def dtoh(self, buf: HostBuffer, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.rt.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, nbytes, kind, stream)

    def sync(self, stream: Any) -> None:
        self._ok(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def destroy(self, stream: Any) -> None:
        self.rt.cudaStreamDestroy(stream)


class PycudaBackend:
    """The pycuda fallback: primary context pushed on the owner thread, popped on release."""

    name = "pycuda"

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda
        self._ctx: Any = None

    def integrated(self, device: int = 0) -> bool:
        self.cuda.init()
        attr = self.cuda.device_attribute.INTEGRATED
        return bool(self.cuda.Device(device).get_attribute(attr))

    def activate(self) -> None:
        self.cuda.init()
        self._ctx = self.cuda.Device(0).retain_primary_context()
        self._ctx.push()

    def deactivate(self) -> None:
        if self._ctx is not None:
            self.cuda.Context.pop()
            self._ctx = None

    def stream(self) -> Any:
        return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def alloc(self, plan: BufferPlan, mapped: bool) -> HostBuffer:
        cuda = self.cuda
        flags = cuda.host_alloc_flags.DEVICEMAP if mapped else 0
        arr = cuda.pagelocked_empty(plan.shape, plan.dtype, mem_flags=flags)
        if mapped:
            dev: Any = arr.base.get_device_pointer()
        else:
            dev = cuda.mem_alloc(plan.nbytes)
        return HostBuffer(arr, int(arr.ctypes.data), int(dev), mapped)

    def free(self, buf: HostBuffer) -> None:
        pass  # pycuda frees pinned and device memory with their Python owners

    def htod(self, buf: HostBuffer, nbytes: int, stream: Any) -> None:
        self.cuda.memcpy_htod_async(
            buf.device_ptr, buf.array.reshape(-1).view(np.uint8)[:nbytes], stream
        )

    def dtoh(self, buf: HostBuffer, nbytes: int, stream: Any) -> None:
        self.cuda.memcpy_dtoh_async(
            buf.array.reshape(-1).view(np.uint8)[:nbytes], buf.device_ptr, stream
        )

    def sync(self, stream: Any) -> None:
        stream.synchronize()

    def destroy(self, stream: Any) -> None:
        pass


def _view(ptr: int, plan: BufferPlan) -> np.ndarray:
    """A numpy array over ``plan.nbytes`` of foreign memory at ``ptr`` (not owned)."""
    import ctypes

    raw = (ctypes.c_byte * plan.nbytes).from_address(ptr)
    return np.frombuffer(raw, dtype=plan.dtype).reshape(plan.shape)


def import_cuda_backend() -> CudaPythonBackend | PycudaBackend:
    """cuda-python (``cuda.bindings.runtime``, then ``cuda.cudart``), else pycuda."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            cudart = None
    if cudart is not None:
        return CudaPythonBackend(cudart)
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise MissingDependencyError("cuda-python", "jetson", "the TensorRT runner") from None
    return PycudaBackend(cuda)


# --------------------------------------------------------------------------- the runner


class TrtRunner(Runner):
    """A deserialized TensorRT engine behind the runner interface.

    Args:
        engine: the ``ICudaEngine`` (keep ``runtime`` alive beside it).
        version: the TensorRT version (selects named tensors or bindings).
        trt: the ``tensorrt`` module (``TensorIOMode``, ``nptype``).
        max_batch: rows per buffer (the engine profile's max batch).
        backend: CUDA calls (:func:`import_cuda_backend`); injectable for tests.
        state: ping-pong pairs ``{"h": "h_next", ...}``.
        mapped: zero-copy mapped host memory; default: when the GPU is integrated.
    """

    def __init__(
        self,
        engine: Any,
        version: TrtVersion,
        trt: Any,
        max_batch: int,
        *,
        backend: Any = None,
        state: Mapping[str, str] | None = None,
        mapped: bool | None = None,
        precision: str = "fp16",
        name: str = "tensorrt",
        runtime: Any = None,
    ) -> None:
        super().__init__()
        self.engine, self.version, self.trt, self.runtime = engine, version, trt, runtime
        self.max_batch = int(max_batch)
        self.backend = backend
        self.state = dict(state or {})
        self.state_names = tuple(self.state)
        self.mapped = mapped
        self.precision, self.name = precision, name
        self.owner: int | None = None

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        graph: str,
        *,
        facts: DeviceFacts | None = None,
        engines_dir: Path | None = None,
        min_batch: int = 1,
        backend: Any = None,
        trt: Any = None,
    ) -> TrtRunner:
        """The checked engine for ``graph`` (``encoder`` or ``step``) on this device.

        Raises:
            EngineError: no engine fits this device (another TensorRT, GPU or model), or it
                is corrupt: the message ends with ``rebuild with: edge-mer build-engine ...``.
        """
        from edge_mer.engine_check import find_engine
        from edge_mer.trt_build import load_engine

        facts = facts or gather_device_facts(trt)
        path = find_engine(bundle, graph, facts, engines_dir, min_batch=min_batch)
        fp = EngineName.parse(path.name)
        assert fp is not None  # find_engine only returns parsable names
        engine, runtime = load_engine(
            path, facts=facts, bundle=bundle, engines_dir=engines_dir, trt=trt
        )
        state = state_pairs([s.name for s in bundle.states]) if graph == "step" else None
        return cls(
            engine,
            facts.trt_version,
            trt if trt is not None else import_tensorrt(),
            fp.max_batch,
            backend=backend,
            state=state,
            precision=fp.precision,
            name=f"tensorrt:{graph}",
            runtime=runtime,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def activate_impl(self) -> None:
        self.owner = threading.get_ident()
        be = self.backend = self.backend or import_cuda_backend()
        be.activate()
        try:
            if self.mapped is None:
                self.mapped = be.integrated()
            self.plans = plan_buffers(
                engine_io(self.engine, self.version, self.trt), self.max_batch
            )
            names = {p.name for p in self.plans}
            for s_in, s_out in self.state.items():
                if s_in not in names or s_out not in names:
                    raise EngineError(f"{self.name}: engine has no state pair {s_in!r}/{s_out!r}")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise EngineError(f"{self.name}: TensorRT could not create an execution context")
            self.stream = be.stream()
            self._stream_h = be.stream_handle(self.stream)
            self.bufs = {p.name: be.alloc(p, self.mapped) for p in self.plans}
        except BaseException:
            be.deactivate()
            raise
        self._inputs_plan = [p for p in self.plans if p.is_input]
        self._outputs_plan = [p for p in self.plans if not p.is_input]
        feed_back = {o: s for s, o in self.state.items()}
        # Phase p reads state S from buffer set p (set 0 = buffer "S", set 1 = buffer "S_next").
        plain = {p.name: self.bufs[p.name] for p in self._inputs_plan if p.name not in self.state}
        self._in_bufs = (
            {**plain, **{s: self.bufs[s] for s in self.state}},
            {**plain, **{s: self.bufs[o] for s, o in self.state.items()}},
        )
        self._out_bufs = tuple(
            {
                p.name: self._in_bufs[1 - ph][feed_back[p.name]]
                if p.name in feed_back
                else self.bufs[p.name]
                for p in self._outputs_plan
            }
            for ph in (0, 1)
        )
        self._in_views = tuple({n: b.array for n, b in d.items()} for d in self._in_bufs)
        self._bindings = tuple(self._binding_list(ph) for ph in (0, 1))
        self._out_views: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self._phase, self._shape_batch = 0, -1

    def deactivate_impl(self) -> None:
        self._check_thread()
        be = self.backend
        try:
            for buf in getattr(self, "bufs", {}).values():
                be.free(buf)
            if getattr(self, "stream", None) is not None:
                be.destroy(self.stream)
        finally:
            self.bufs, self.stream, self.context = {}, None, None
            be.deactivate()
            self.owner = None

    def _binding_list(self, phase: int) -> list[int]:
        ptrs = [0] * len(self.plans)
        for d in (self._in_bufs[phase], self._out_bufs[phase]):
            for name, buf in d.items():
                ptrs[self._plan(name).index] = buf.device_ptr
        return ptrs

    def _plan(self, name: str) -> BufferPlan:
        return next(p for p in self.plans if p.name == name)

    def _check_thread(self) -> None:
        if self.owner is not None and threading.get_ident() != self.owner:
            raise RunnerError(
                f"{self.name}: called from another thread than the one that activated it "
                "(CUDA context owner); send work to the inference thread through a queue"
            )

    # -- inference ---------------------------------------------------------------------

    @property
    def inputs(self) -> Mapping[str, np.ndarray]:
        return self._in_views[self._phase]

    def infer(self, batch: int) -> Mapping[str, np.ndarray]:
        self.check_batch(batch)
        self._check_thread()
        ph, ctx, be = self._phase, self.context, self.backend
        if batch != self._shape_batch:
            for p in self._inputs_plan:
                shape = (batch, *p.shape[1:])
                if self.version.named_tensors:
                    ctx.set_input_shape(p.name, shape)
                else:
                    ctx.set_binding_shape(p.index, shape)
            self._shape_batch = batch
        if not self.mapped:
            for p in self._inputs_plan:
                be.htod(self._in_bufs[ph][p.name], batch * p.row_bytes, self.stream)
        if self.version.named_tensors:
            for d in (self._in_bufs[ph], self._out_bufs[ph]):
                for name, buf in d.items():
                    ctx.set_tensor_address(name, buf.device_ptr)
            ok = ctx.execute_async_v3(self._stream_h)
        else:
            ok = ctx.execute_async_v2(self._bindings[ph], self._stream_h)
        if not ok:
            raise EngineError(f"{self.name}: TensorRT execution failed (batch {batch})")
        if not self.mapped:
            for p in self._outputs_plan:
                be.dtoh(self._out_bufs[ph][p.name], batch * p.row_bytes, self.stream)
        be.sync(self.stream)
        key = (batch, ph)
        out = self._out_views.get(key)
        if out is None:
            out = self._out_views[key] = {n: b.array[:batch] for n, b in self._out_bufs[ph].items()}
        if self.state:
            self._phase ^= 1
        return out
