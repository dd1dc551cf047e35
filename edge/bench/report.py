"""The bench report on disk: JSON (docs/bench-json.md) and Markdown tables."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_mer.bundle import write_atomic
from edge_mer.errors import InputError

# Raw samples (stages[*].samples_ms, timeline) over this many numbers in all are left out
# of the JSON file; the percentiles stay. Sub-microsecond digits are rounded off.
MAX_JSON_SAMPLES = 200_000

STAT_COLUMNS = ("count", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")


def _count_samples(report: dict[str, Any]) -> int:
    n = 0
    for run in report.get("runs", []):
        for st in (run.get("stages") or {}).values():
            n += len(st.get("samples_ms") or ())
        n += 2 * len((run.get("timeline") or {}).get("t_s") or ())
    return n


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(report: dict[str, Any]) -> str:
    """The report as JSON text: NaN/Inf become null, floats keep 4 decimals, and raw samples
    are dropped (``samples_kept: false``) when they exceed :data:`MAX_JSON_SAMPLES`."""
    keep = _count_samples(report) <= MAX_JSON_SAMPLES
    out = dict(report)
    out["samples_kept"] = keep
    if not keep:
        runs = []
        for run in report.get("runs", []):
            run = dict(run)
            run.pop("timeline", None)
            if run.get("stages"):
                run["stages"] = {
                    k: {kk: vv for kk, vv in v.items() if kk != "samples_ms"}
                    for k, v in run["stages"].items()
                }
            runs.append(run)
        out["runs"] = runs
    return json.dumps(_finite(out), indent=1) + "\n"


def write_json(report: dict[str, Any], path: Path) -> None:
    _write(path, to_json(report))


def write_markdown(report: dict[str, Any], path: Path) -> None:
    _write(path, render_markdown(report))


def _write(path: Path, text: str) -> None:
    try:
        write_atomic(Path(path), text)
    except OSError as exc:
        raise InputError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers with ``digits`` decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"
    return str(value)


def accuracy_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the runner x precision table (status, size, agreement, speed)."""
    head = [
        "runner",
        "precision",
        "status",
        "MB",
        "agree",
        "acc",
        "ms/frame",
        "fps",
        "model fps",
        "effic.",
        "drops",
        "reason",
    ]
    rows = []
    for r in report.get("runs", []):
        size = r.get("size_bytes")
        rows.append(
            [
                r["runner"],
                r["precision"],
                r["status"],
                fmt(size / 1e6 if size else None, 2),
                fmt(r.get("agreement")),
                fmt(r.get("accuracy")),
                fmt(r.get("ms_per_frame")),
                fmt(r.get("fps"), 0),
                fmt(r.get("model_only_fps"), 0),
                fmt(r.get("efficiency"), 2),
                fmt(r.get("dropped")),
                r.get("reason") or "",
            ]
        )
    return head, rows


def source_line(report: dict[str, Any]) -> str:
    """Where the frames came from, in one line; for the replayed stream, in which format
    (gray frames skip the preprocessor's colour conversion)."""
    from urllib.parse import parse_qs, urlsplit

    from edge_mer.bench.replay import REPLAY_SCHEME

    source = str((report.get("settings") or {}).get("source", ""))
    parts = urlsplit(source)
    if parts.scheme != REPLAY_SCHEME:
        return f"source: {source}"
    query = parse_qs(parts.query)
    fmt = query.get("format", ["bgr"])[0]
    size = query.get("size", ["?"])[0]
    other = "bgr" if fmt == "gray" else "gray"
    why = (
        "what picam:// and csi:// give a gray model" if fmt == "gray" else "what a USB camera gives"
    )
    return (
        f"source: the synthetic stream replayed from memory, {fmt.upper()} {size} frames "
        f"({why}; --frame-format {other} for {other.upper()} frames)"
    )


def threads_line(report: dict[str, Any]) -> str:
    """ONNX Runtime's intra-op threads in the rows that ran, and why the encoder's, in one
    line ("" when no ONNX Runtime row ran)."""
    from edge_mer.runners.ort import SMALL_ENCODER_MACS, threads_for_macs

    runs = [r for r in runs_with_stats(report) if (r.get("threads") or {}).get("step")]
    if not runs:
        return ""
    enc = {int(r["threads"]["encoder"] or 0) for r in runs}
    step = {int(r["threads"]["step"]) for r in runs}

    def name(n: int) -> str:
        return "ORT's default (one per physical core)" if n == 0 else str(n)

    line = (
        f"ONNX Runtime threads: encoder {' / '.join(name(n) for n in sorted(enc))}, "
        f"step {' / '.join(str(n) for n in sorted(step))}"
    )
    if (report.get("settings") or {}).get("threads"):
        return line + " (--threads)"
    macs = (report.get("bundle") or {}).get("encoder_macs_per_frame")
    if not macs:
        return line + " (the bundle's manifest has no encoder cost; --threads N to set them)"
    size = f"{macs / 1e6:.1f} M MACs a frame"
    why = "under" if threads_for_macs(macs) == 1 else "not under"
    return line + f" (the encoder's {size}, {why} {SMALL_ENCODER_MACS / 1e6:g} M; --threads N)"


def frame_loop_line(report: dict[str, Any]) -> str:
    """Whether the pipeline ran compiled (it moves the efficiency column), in one line."""
    how = (report.get("machine") or {}).get("frame_loop")
    if not how:
        return ""
    if how == "pure Python":  # nothing compiled there at all
        how += (
            " (installed without mypyc or a C compiler, or with EDGE_MER_PURE=1); compiled, "
            "it spends less per frame around the model"
        )
    return f"frame loop: {how}"


def stage_rows(run: dict[str, Any], stages: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one run's per-stage latency table (ms)."""
    head = ["stage", "count", "mean", "p50", "p90", "p95", "p99", "max"]
    rows = []
    for s in stages:
        st = (run.get("stages") or {}).get(s)
        if st is None:
            continue
        rows.append([s, *(fmt(st.get(c)) for c in STAT_COLUMNS)])
    return head, rows


def machine_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(fact, value) pairs: the machine, then what the monitor saw during the run."""
    m = report.get("machine") or {}
    out = [(k, fmt(v)) for k, v in m.items() if k != "versions"]
    out += [(f"{k} version", fmt(v)) for k, v in (m.get("versions") or {}).items()]
    mon = report.get("monitor") or {}
    out += [(f"during run: {k}", fmt(v, 1)) for k, v in mon.items()]
    return out


def streaming_line(report: dict[str, Any]) -> str:
    st = report.get("streaming")
    if not st:
        return "Streaming vs sliding window: not measured."
    if "error" in st:
        return f"Streaming vs sliding window: failed ({st['error']})."
    return (
        f"Streaming vs sliding window (T={st['window']}, ONNX Runtime FP32, median of "
        f"{st['rounds']} interleaved frames): state cache {st['streaming_ms_per_frame']:.3f} "
        f"ms/frame, clip graph over the last T frames {st['window_ms_per_frame']:.3f} ms/frame, "
        f"ratio {st['ratio_window_vs_streaming']:.1f}x."
    )


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|")

    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows),
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: accuracy/status table, per-stage tables, streaming, machine."""
    b, s = report["bundle"], report["settings"]
    lines = [
        f"# edge-mer bench: {b['name']}",
        "",
        f"{report['created']}, {report['tool']}; bundle `{b['path']}`; source `{s['source']}`, "
        f"face detector {s['face']}; {s['frames']} timed frames per run after {s['warmup']} "
        f"warm-up; agreement = top-1 agreement with {s['reference']} on "
        f"{report.get('accuracy_windows')} synthetic windows (check: >= {s['min_agreement']:g}); "
        "efficiency = pipeline fps / model-only fps.",
        "",
        "## Runners x precisions",
        "",
        *_md_table(*accuracy_rows(report)),
        "",
        frame_loop_line(report),
        "",
        threads_line(report),
        "",
        "## " + streaming_line(report).split(":")[0],
        "",
        streaming_line(report),
        "",
    ]
    stages = stage_names(report)
    for run in runs_with_stats(report):
        lines += [
            f"## Stage latency (ms): {run['runner']} {run['precision']}",
            "",
            *_md_table(*stage_rows(run, stages)),
            "",
            "`capture` is the wait for a frame (for a finite source, its read); "
            "`capture_to_probs` is each frame's time from leaving the ring to its "
            "probabilities and sinks; `end_to_end` is the events' capture-to-event latency.",
            "",
        ]
    lines += [
        "## Machine",
        "",
        *_md_table(["fact", "value"], [list(p) for p in machine_rows(report)]),
    ]
    return "\n".join(lines) + "\n"


def stage_names(report: dict[str, Any]) -> list[str]:
    """Stages seen in any run, in pipeline order."""
    from edge_mer.pipeline.live import STAGES

    order = [*STAGES, "capture_to_probs", "end_to_end"]
    seen = {s for r in report.get("runs", []) for s in (r.get("stages") or {})}
    return [s for s in order if s in seen] + sorted(seen - set(order))


def runs_with_stats(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows that produced timings."""
    return [r for r in report.get("runs", []) if r.get("stages")]


def ensure_writable(paths: Sequence[Path | None]) -> None:
    """Raise :class:`InputError` unless every given path can be created or replaced."""
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        parent = p.parent if str(p.parent) else Path(".")
        if p.is_dir():
            raise InputError(f"output {str(p)!r} is a directory; give a file name")
        if not parent.is_dir():
            raise InputError(
                f"cannot write {str(p)!r}: folder {str(parent)!r} does not exist "
                "(or is not a folder)"
            )
        if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
            raise InputError(f"cannot write {str(p)!r}: permission denied")
