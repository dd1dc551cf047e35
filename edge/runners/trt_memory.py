"""Where a TensorRT engine's bytes live: its I/O tensors, the buffer plan, and the CUDA
backends that allocate them.

On a Jetson, CPU and GPU share DRAM: buffers are pinned host memory mapped into the GPU's
address space (cudaHostAlloc with cudaHostAllocMapped, then
cudaHostGetDevicePointer), so the crop written by the CPU is read by TensorRT with no copy.
:func:`import_cuda_backend` prefers cuda-python (``cudart``) and falls back to pycuda.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_mer.errors import EngineError, MissingDependencyError
from edge_mer.runners.cuda_runtime import call, call_quietly, import_cudart, pycuda_unavailable
from edge_mer.runners.tensorrt.device import TrtVersion


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
    """The engine's I/O tensors through the API this TensorRT version has.

    Raises:
        EngineError: a tensor type numpy cannot hold (see :func:`numpy_dtype`).
    """
    out = []
    if version.named_tensors:
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            dtype = numpy_dtype(trt, engine.get_tensor_dtype(name), name)
            out.append(TensorIO(name, is_input, shape, dtype, i))
    else:
        for i in range(engine.num_bindings):
            name = engine.get_binding_name(i)
            shape = tuple(int(d) for d in engine.get_binding_shape(i))
            dtype = numpy_dtype(trt, engine.get_binding_dtype(i), name)
            out.append(TensorIO(name, bool(engine.binding_is_input(i)), shape, dtype, i))
    return out


def numpy_dtype(trt: Any, trt_type: Any, name: str) -> np.dtype:
    """``trt.nptype``, whose mapping (every version's ``tensorrt/__init__.py``) covers
    float32/16, int8, int32, bool, uint8, and int64 from 10.0; for BF16, FP8, INT4 or FP4 it
    raises ``TypeError``, which here becomes one line naming the tensor."""
    try:
        return np.dtype(trt.nptype(trt_type))
    except TypeError:
        raise EngineError(
            f"engine tensor {name!r} is {getattr(trt_type, 'name', trt_type)}, which numpy "
            "cannot hold: bundle graphs keep their inputs and outputs float32/float16/uint8; "
            "rebuild the engine from this bundle (edge-mer build-engine)"
        ) from None


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
    """The few CUDA runtime calls the runner makes, via cuda-python (``cudart``).

    Every call goes through :func:`~edge_mer.runners.cuda_runtime.call`, which unpacks its
    ``(err, *values)`` result: no usable driver/device is a
    :class:`~edge_mer.errors.CudaUnavailableError`, another CUDA error an ``EngineError``.
    """

    name = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def _call(self, fn: str, *args: Any, what: str | None = None) -> Any:
        return call(self.rt, fn, *args, what=what)

    def integrated(self, device: int = 0) -> bool:
        what = f"cudaGetDeviceProperties({device})"
        return bool(self._call("cudaGetDeviceProperties", device, what=what).integrated)

    def activate(self) -> None:
        self._call("cudaSetDevice", 0, what="cudaSetDevice(0)")

    def deactivate(self) -> None:
        pass

    def stream(self) -> Any:
        return self._call("cudaStreamCreate", what="cudaStreamCreate()")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def alloc(self, plan: BufferPlan, mapped: bool) -> HostBuffer:
        rt = self.rt
        flags = rt.cudaHostAllocMapped if mapped else rt.cudaHostAllocDefault
        host = int(self._call("cudaHostAlloc", plan.nbytes, flags))
        try:
            if mapped:
                dev = int(self._call("cudaHostGetDevicePointer", host, 0))
            else:
                dev = int(self._call("cudaMalloc", plan.nbytes))
        except BaseException:
            call_quietly(rt, "cudaFreeHost", host)
            raise
        return HostBuffer(_view(host, plan), host, dev, mapped)

    def free(self, buf: HostBuffer) -> None:
        if not buf.mapped:
            call_quietly(self.rt, "cudaFree", buf.device_ptr)
        call_quietly(self.rt, "cudaFreeHost", buf.host_ptr)

    def htod(self, buf: HostBuffer, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        args = (buf.device_ptr, buf.host_ptr, nbytes, kind, stream)
        self._call("cudaMemcpyAsync", *args, what="cudaMemcpyAsync(host to device)")

    def dtoh(self, buf: HostBuffer, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        args = (buf.host_ptr, buf.device_ptr, nbytes, kind, stream)
        self._call("cudaMemcpyAsync", *args, what="cudaMemcpyAsync(device to host)")

    def sync(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def destroy(self, stream: Any) -> None:
        call_quietly(self.rt, "cudaStreamDestroy", stream)


class PycudaBackend:
    """The pycuda fallback: primary context pushed on the owner thread, popped on release."""

    name = "pycuda"

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda
        self._ctx: Any = None

    def _device(self, index: int) -> Any:
        """``Device(index)`` after ``cuInit``; no driver or device -> CudaUnavailableError."""
        try:
            self.cuda.init()
            return self.cuda.Device(index)
        except getattr(self.cuda, "Error", RuntimeError) as exc:
            raise pycuda_unavailable(exc, f"Device({index})") from None

    def integrated(self, device: int = 0) -> bool:
        attr = self.cuda.device_attribute.INTEGRATED
        return bool(self._device(device).get_attribute(attr))

    def activate(self) -> None:
        self._ctx = self._device(0).retain_primary_context()
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
    cudart = import_cudart()
    if cudart is not None:
        return CudaPythonBackend(cudart)
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise MissingDependencyError("cuda-python", "jetson", "the TensorRT runner") from None
    return PycudaBackend(cuda)
