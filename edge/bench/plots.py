"""One PNG from a bench report: where each stage spends its time, and how that drifts.

The top panel shows each pipeline stage's latency distribution per run row (box plots on a
log ms axis; rows that kept only percentiles get a p50-p99 bar with the max marked). The
bottom panel shows per-frame latency against time for each row, raw and as a rolling
median, so thermal throttling (a slow climb) and GC or scheduler pauses (isolated spikes)
stand out.

matplotlib is the ``plots`` extra: it is imported only when a plot is drawn, and drawn on
an explicit Agg canvas, so neither pyplot nor the process-wide backend is touched.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.errors import InputError, MissingDependencyError

log = logging.getLogger(__name__)

# Log axes cannot show 0 ms; timer-resolution zeros are drawn at 1 µs instead of dropped.
_FLOOR_MS = 1e-3
# Stage names that mean "the whole frame"; otherwise the slowest stage stands in for it.
_END_TO_END = ("end_to_end", "e2e", "total", "frame", "pipeline")


@dataclass
class _Row:
    label: str
    # stage name -> samples in ms (None when the report kept only the summary)
    samples: dict[str, np.ndarray | None] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per-frame latency (ms) and its x values: seconds since the first frame, or None
    frame_ms: np.ndarray | None = None
    t_s: np.ndarray | None = None
    frame_source: str = "timeline"


def require_matplotlib() -> None:
    """Raise :class:`MissingDependencyError` now if ``--plot`` could not be drawn later.

    Lets a command refuse before a long benchmark rather than after it.
    """
    _matplotlib()


def plot_report(report: dict, out: Path) -> Path:
    """Draw ``report`` (the bench report) as one PNG at ``out``; returns ``out``.

    Rows of ``report["runs"]`` with neither stage timings nor a timeline (unavailable or
    failed runners) are left out. The file is written to a temporary name in the same
    folder and renamed, so ``out`` is never left half-written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InputError: no row has timings, or ``out`` cannot be written.
    """
    figure_cls, canvas_cls = _matplotlib()
    out = Path(out)
    rows = _rows(report)
    if not rows:
        raise InputError("nothing to plot: no run produced timings")

    stages = list(dict.fromkeys(s for r in rows for s in r.summaries))
    width = max(9.0, min(24.0, 2.0 + 0.6 * len(stages) * max(1, len(rows))))
    fig = figure_cls(figsize=(width, 9.0), dpi=100, layout="constrained")
    canvas_cls(fig)
    dist_ax, time_ax = fig.subplots(2, 1, height_ratios=(1.1, 1.0))
    _draw_distributions(dist_ax, rows, stages)
    _draw_timeline(time_ax, rows)
    fig.suptitle(_title(report))
    _save(fig, out)
    log.info("wrote bench plot %s (%d runs, %d stages)", out, len(rows), len(stages))
    return out


def _matplotlib() -> tuple[type, type]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "plots", "--plot") from exc
    return Figure, FigureCanvasAgg


def _title(report: dict) -> str:
    bundle = (report.get("bundle") or {}).get("name")
    cpu = (report.get("machine") or {}).get("cpu")
    title = "edge-mer bench"
    if bundle:
        title += f": {bundle}"
    if cpu:
        title += f" on {cpu}"
    return title


def _array(values: Any) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.float64).ravel()


def _clean(values: Any) -> np.ndarray:
    a = _array(values)
    return a[np.isfinite(a)]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _rows(report: dict) -> list[_Row]:
    rows = []
    for run in report.get("runs") or []:
        label = f"{run.get('runner', '?')} {run.get('precision', '')}".strip()
        status = run.get("status", "ok")
        if status != "ok":
            label += f" ({status})"
        row = _Row(label)
        for name, st in (run.get("stages") or {}).items():
            samples = _clean(st.get("samples_ms"))
            if samples.size:
                row.samples[name] = samples
                row.summaries[name] = st
            elif _finite(st.get("p50_ms")):
                row.samples[name] = None
                row.summaries[name] = st
        timeline = run.get("timeline") or {}
        frame_ms = _array(timeline.get("frame_ms"))
        if frame_ms.size:
            t_s = _array(timeline.get("t_s"))
            row.frame_ms = frame_ms
            if t_s.size == frame_ms.size and np.isfinite(t_s).all():
                row.t_s = t_s - t_s[0]
        else:
            # No timeline: stage samples are recorded in frame order, so the whole-frame
            # stage (or the slowest one) still shows drift against frame index.
            with_samples = [s for s in row.samples if row.samples[s] is not None]
            named = [s for s in _END_TO_END if s in with_samples]
            if named or with_samples:
                source = (
                    named[0]
                    if named
                    else max(with_samples, key=lambda s: float(np.mean(row.samples[s])))
                )
                row.frame_ms = row.samples[source]
                row.frame_source = source
        if row.summaries or row.frame_ms is not None:
            rows.append(row)
    return rows


def _draw_distributions(ax: Any, rows: list[_Row], stages: list[str]) -> None:
    from matplotlib.patches import Patch

    if not stages:
        ax.text(0.5, 0.5, "no per-stage timings", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    slot = 0.8 / len(rows)
    for j, row in enumerate(rows):
        color = f"C{j % 10}"
        for i, stage in enumerate(stages):
            if stage not in row.summaries:
                continue
            pos = i - 0.4 + slot * (j + 0.5)
            samples = row.samples[stage]
            if samples is not None:
                ax.boxplot(
                    np.maximum(samples, _FLOOR_MS),
                    positions=[pos],
                    widths=slot * 0.8,
                    whis=(1, 99),
                    patch_artist=True,
                    manage_ticks=False,
                    boxprops={"facecolor": color, "alpha": 0.6},
                    medianprops={"color": "black"},
                    flierprops={"marker": ".", "markersize": 2, "markeredgecolor": color},
                )
            else:
                st = row.summaries[stage]
                p50 = st["p50_ms"]
                p99 = st.get("p99_ms") if _finite(st.get("p99_ms")) else p50
                ax.vlines(pos, max(p50, _FLOOR_MS), max(p99, _FLOOR_MS), color=color, lw=3)
                ax.plot(pos, max(p50, _FLOOR_MS), "o", color="black", ms=4)
                if _finite(st.get("max_ms")):
                    ax.plot(pos, max(st["max_ms"], _FLOOR_MS), "x", color=color, ms=5)
    ax.set_yscale("log")
    ax.set_xticks(range(len(stages)), stages, rotation=30 if len(stages) > 4 else 0)
    ax.set_xlim(-0.6, len(stages) - 0.4)
    ax.set_ylabel("latency (ms, log)")
    ax.set_title("latency per stage (box: p25-p75, whiskers: p1-p99; bar: p50-p99, x: max)")
    ax.grid(axis="y", which="both", alpha=0.3)
    handles = [Patch(color=f"C{j % 10}", alpha=0.6, label=r.label) for j, r in enumerate(rows)]
    ax.legend(handles=handles, fontsize="small", loc="best")


def _rolling_median(y: np.ndarray, window: int) -> np.ndarray:
    return np.median(np.lib.stride_tricks.sliding_window_view(y, window), axis=1)


def _draw_timeline(ax: Any, rows: list[_Row]) -> None:
    drawn = [r for r in rows if r.frame_ms is not None]
    if not drawn:
        ax.text(0.5, 0.5, "no per-frame timings", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    # One x unit for every line: seconds only if every row has them.
    seconds = all(r.t_s is not None for r in drawn)
    for j, row in enumerate(rows):
        if row.frame_ms is None:
            continue
        color = f"C{j % 10}"
        y = np.maximum(row.frame_ms, _FLOOR_MS)
        x = row.t_s if seconds else np.arange(y.size, dtype=np.float64)
        keep = np.isfinite(y)
        x, y = x[keep], y[keep]
        label = row.label if row.frame_source == "timeline" else f"{row.label} [{row.frame_source}]"
        ax.plot(x, y, color=color, lw=0.6, alpha=0.35)
        window = min(101, max(5, y.size // 20)) | 1
        if y.size >= window:
            half = window // 2
            ax.plot(
                x[half : y.size - half],
                _rolling_median(y, window),
                color=color,
                lw=2,
                label=f"{label} (rolling median, {window} frames)",
            )
        else:
            ax.plot([], [], color=color, lw=2, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("time since first frame (s)" if seconds else "frame")
    ax.set_ylabel("frame latency (ms, log)")
    ax.set_title("latency over time (throttling shows as drift, pauses as spikes)")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="best")


def _save(fig: Any, out: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise InputError(f"cannot write the plot to {out}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, out)
    except OSError as exc:
        raise InputError(f"cannot write the plot to {out}: {exc.strerror or exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
