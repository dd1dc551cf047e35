"""The runner interface: one small, Polygraphy-style API over every inference backend.

A runner owns the buffers its graph reads and writes. Callers write inputs straight into
:attr:`Runner.inputs` (numpy views, e.g. ``cv2.resize(..., dst=runner.inputs["frames"][i])``),
call :meth:`Runner.infer` with the number of rows they filled, and read the returned output
views. Nothing is allocated per call in steady state.

Recurrent graphs (``step``) ping-pong their state: the state inputs ``S`` and outputs
``S_next`` are two preallocated buffer sets that swap roles after every :meth:`infer`, so
after a call ``inputs[S]`` already holds the next state and no state is copied. Re-read
:attr:`inputs` after each call (it returns one of two prebuilt dicts, no allocation).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import TracebackType

import numpy as np

from edge_mer.errors import EdgeMerError, InputError

__all__ = ["Runner", "RunnerError", "state_pairs"]


class RunnerError(EdgeMerError):
    """A runner used out of order (inactive, wrong thread) or a batch that does not fit."""


def state_pairs(state_names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """DESIGN §3 naming: state input ``S`` is fed back from output ``S_next``."""
    return {s: f"{s}_next" for s in state_names}


class Runner(abc.ABC):
    """Context-managed inference over preallocated, runner-owned buffers.

    Lifecycle: ``activate()`` (allocates buffers, creates sessions/contexts) -> any number of
    ``infer(batch)`` -> ``deactivate()`` (frees them). ``with runner:`` does both. The views in
    :attr:`inputs` and those :meth:`infer` returns are valid only while the runner is active;
    an output view is overwritten by the next :meth:`infer`.

    Attributes:
        name: a human label (``"onnxruntime:encoder"``, ``"tensorrt:step"``).
        precision: what the graph computes in (``fp32``, ``fp16``, ``int8``).
        max_batch: rows preallocated per tensor; ``infer(batch)`` needs ``1 <= batch <= max_batch``.
        state_spare_rows: state rows beyond ``max_batch``. A runner with some (the ONNX
            Runtime one) also takes ``infer(batch, shift=s)``, ``s <= state_spare_rows``:
            the next state lands ``s`` rows further down, which rotates a state cache's
            banks without a copy. 0: no shifted state (the state cache keeps fixed banks).
    """

    name: str = "runner"
    precision: str = "fp32"
    max_batch: int = 1
    state_spare_rows: int = 0

    def __init__(self) -> None:
        self.is_active = False

    # -- lifecycle ---------------------------------------------------------------------

    def activate(self) -> Runner:
        """Allocate buffers and bring the backend up; returns ``self``."""
        if self.is_active:
            raise RunnerError(f"{self.name}: activate() called twice; deactivate() first")
        self.activate_impl()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release everything :meth:`activate` made; the buffer views become invalid."""
        if not self.is_active:
            return
        try:
            self.deactivate_impl()
        finally:
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        state = "active" if self.is_active else "inactive"
        return f"<{type(self).__name__} {self.name} {self.precision} b{self.max_batch} {state}>"

    # -- buffers and inference ---------------------------------------------------------

    @property
    @abc.abstractmethod
    def inputs(self) -> Mapping[str, np.ndarray]:
        """Input name -> ``[max_batch, ...]`` numpy view the caller writes rows into (state
        inputs: ``max_batch + state_spare_rows`` rows).

        Owned by the runner; valid while active. For recurrent graphs the state entries
        point at the current ping-pong set: re-read after every :meth:`infer`.
        """

    @abc.abstractmethod
    def infer(self, batch: int) -> Mapping[str, np.ndarray]:
        """Run the graph on the first ``batch`` rows of every input.

        Returns output name -> ``[batch, ...]`` views owned by the runner, valid until the
        next call. State outputs (``S_next``) are, after the call, also ``inputs[S]``.
        """

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def deactivate_impl(self) -> None: ...

    def reset_state(self, batch: int | None = None) -> None:
        """Zero the first ``batch`` rows (all when None) of the current state inputs."""
        for name in getattr(self, "state_names", ()):
            view = self.inputs[name]
            view[: view.shape[0] if batch is None else batch] = 0

    def check_batch(self, batch: int) -> None:
        """Raise unless active and ``1 <= batch <= max_batch``."""
        if not self.is_active:
            raise RunnerError(f"{self.name}: infer() before activate(); use `with runner:`")
        if not 1 <= batch <= self.max_batch:
            raise InputError(
                f"{self.name}: batch {batch!r} is outside 1..{self.max_batch} "
                "(the buffers were preallocated for max_batch rows)"
            )
