"""Per-stage wall times of the frame loop, in preallocated rings (:class:`StageClock`)."""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

__all__ = ["STAGES", "StageClock"]

STAGES = ("capture", "face", "preprocess", "encoder", "step", "spotting", "sinks")


class StageClock:
    """Per-stage wall times of the last ``keep`` frames (seconds), in preallocated rings:
    recording a sample allocates nothing. Beside the stages, each frame's capture-to-
    probabilities latency (:meth:`add_latency`), which the Prometheus histogram takes from
    here at a low rate (:meth:`~edge_mer.pipeline.telemetry.RuntimeMetrics.record_stages`).

    The rings are ``array('d')`` (storing a float is a C store, a fraction of a numpy
    scalar assignment) read through numpy views; a frame that went through every stage is
    recorded with one :meth:`frame` call."""

    def __init__(self, keep: int = 8192) -> None:
        self.keep = keep
        self._rings = [array("d", bytes(8 * keep)) for _ in STAGES]
        self._values = {s: np.frombuffer(r) for s, r in zip(STAGES, self._rings, strict=True)}
        self._index = {s: i for i, s in enumerate(STAGES)}
        self._n = [0] * len(STAGES)
        self._lat = array("d", bytes(8 * keep))
        self._latency = np.frombuffer(self._lat)
        self._latency_n = 0

    def add(self, stage: str, seconds: float) -> None:
        k = self._index[stage]
        n = self._n[k]
        self._rings[k][n % self.keep] = seconds
        self._n[k] = n + 1

    def frame(
        self, t0: float, t1: float, t2: float, t3: float, t4: float, t5: float, t6: float,
        end: float,
    ) -> None:  # fmt: skip
        """A frame that went through capture, face, preprocess, encoder, step and spotting
        (the differences of the clock readings ``t0`` .. ``t6``), with its latency
        ``end - t1`` (from leaving the ring to probabilities and sinks)."""
        keep, n, (cap, face, pre, enc, step, spot, _) = self.keep, self._n, self._rings
        c = n[0]
        cap[c % keep] = t1 - t0
        n[0] = c + 1
        c = n[1]
        face[c % keep] = t2 - t1
        n[1] = c + 1
        c = n[2]
        pre[c % keep] = t3 - t2
        n[2] = c + 1
        c = n[3]
        enc[c % keep] = t4 - t3
        n[3] = c + 1
        c = n[4]
        step[c % keep] = t5 - t4
        n[4] = c + 1
        c = n[5]
        spot[c % keep] = t6 - t5
        n[5] = c + 1
        c = self._latency_n
        self._lat[c % keep] = end - t1
        self._latency_n = c + 1

    def add_latency(self, seconds: float) -> None:
        n = self._latency_n
        self._lat[n % self.keep] = seconds
        self._latency_n = n + 1

    def latency_ring(self) -> tuple[int, np.ndarray]:
        """(frames recorded so far, ring) of the per-frame latencies; read, don't write."""
        return self._latency_n, self._latency

    def rings(self) -> list[tuple[str, int, np.ndarray]]:
        """(stage, samples recorded so far, ring) per stage; sample ``i`` is at
        ``ring[i % keep]`` until ``keep`` newer ones overwrite it. Read, don't write."""
        return [(s, self._n[i], self._values[s]) for i, s in enumerate(STAGES)]

    def summary(self, *, samples: bool = False) -> dict[str, dict[str, Any]]:
        """Per stage seen: count, mean, p50, p90, p95, p99, max (ms) over the kept samples.

        ``samples=True`` adds ``samples_ms``: the kept samples in recording order (a list).
        """
        out: dict[str, dict[str, Any]] = {}
        for i, (stage, values) in enumerate(self._values.items()):
            n = self._n[i]
            if n:
                kept = min(n, self.keep)
                # Oldest first: once the ring has wrapped, the oldest sample is at n % keep.
                ms = (np.roll(values, -(n % self.keep)) if n > self.keep else values[:kept]) * 1e3
                p50, p90, p95, p99 = np.percentile(ms, (50, 90, 95, 99))
                out[stage] = {
                    "count": n,
                    "mean_ms": float(ms.mean()),
                    "p50_ms": float(p50),
                    "p90_ms": float(p90),
                    "p95_ms": float(p95),
                    "p99_ms": float(p99),
                    "max_ms": float(ms.max()),
                }
                if samples:
                    out[stage]["samples_ms"] = ms.tolist()
        return out
