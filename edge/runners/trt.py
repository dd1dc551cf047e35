"""TensorRT runner: thin hardware calls around plain, tested planning code.

Version shim (:class:`~edge_mer.runners.tensorrt.device.TrtVersion`): TensorRT >= 8.5 uses
named tensors (``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``); older
8.x the binding API (``set_binding_shape`` / ``execute_async_v2(bindings, stream)``).

Buffers (:func:`~edge_mer.runners.trt_memory.plan_buffers`, one per I/O tensor, sized for
``max_batch``):
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bundle import Bundle
from edge_mer.errors import EngineError
from edge_mer.runners.base import Runner, RunnerError, state_pairs
from edge_mer.runners.tensorrt.device import (
    DeviceFacts,
    TrtVersion,
    gather_device_facts,
    import_tensorrt,
)
from edge_mer.runners.tensorrt.plan import EngineName
from edge_mer.runners.trt_memory import (
    BufferPlan,
    engine_io,
    import_cuda_backend,
    plan_buffers,
)

log = logging.getLogger(__name__)

__all__ = ["TrtRunner"]


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
        from edge_mer.runners.tensorrt.build import load_engine
        from edge_mer.runners.tensorrt.check import find_engine

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
            self.bufs = {}
            for p in self.plans:
                self.bufs[p.name] = be.alloc(p, self.mapped)
        except BaseException:
            self._release()  # what was allocated before the failure, then the context
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
        self._release()

    def _release(self) -> None:
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
