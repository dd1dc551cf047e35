"""Text for a spotting evaluation (:mod:`edge_mer.bench.spotting`): the pooled figures, a
row per stream, and one stream's events against its ground truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edge_mer.bench.spotting import SpotStream
from edge_mer.pipeline.spotter import MICRO
from edge_mer.pipeline.spotting_eval import interval_iou, match_events


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The figures that matter, one per line: micro precision / recall / F1, false alarms
    per minute, latency. Zero events are said as such, never left out."""
    m, d, lat = report["micro"], report["distractors"], report["latency"]
    iou = report.get("iou", 0.5)
    lines = []
    if m["streams"]:
        seconds = sum(s["seconds"] for s in report["streams"] if not s["distractors_only"])
        lines.append(
            f"micro-expressions: {m['events']} events for {m['truth']} in the ground truth "
            f"({_n(m['streams'], 'stream')}, {seconds:g} s): precision {m['precision']:.2f}, "
            f"recall {m['recall']:.2f}, F1 {m['f1']:.2f} (TP {m['tp']}, FP {m['fp']}, "
            f"FN {m['fn']}; IoU >= {iou:g}, F1 per stream {m['f1_min']:.2f}-{m['f1_max']:.2f})"
        )
        if m["label_accuracy"] is not None:
            lines.append(f"  label of matched events: {m['label_accuracy']:.2f} correct")
    if d["streams"]:
        lines.append(
            f"false alarms: {d['false_alarms_per_minute']:.2f} per minute ({d['false_alarms']} "
            f"micro events in {d['minutes']:.1f} min of distractor-only streams: blinks, head "
            f"drift, {_n(d['truth_macro'], 'macro-expression')}; "
            f"{_n(d['macro_events'], 'macro event')})"
        )
    dd, pr = lat["detection_delay"], lat["processing"]
    lines.append(
        f"latency: event emitted {_ms(dd['p50_ms'])} (p50) / {_ms(dd['p95_ms'])} (p95) after "
        f"the micro-expression ended; processing {_ms(pr['p50_ms'])} / {_ms(pr['p95_ms'])}"
        if dd["count"]
        else f"latency: no matched event; processing {_ms(pr['p50_ms'])} (p50)"
    )
    return lines


def stream_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A table of the per-stream counts: header and rows."""
    head = ["stream", "s", "truth", "micro ev", "macro ev", "TP", "FP", "FN", "F1"]
    rows = []
    for s in report["streams"]:
        rows.append(
            [
                s["name"],
                f"{s['seconds']:g}",
                str(s["truth_micro"]),
                str(s["events_micro"]),
                str(s["events_macro"]),
                str(s["tp"]),
                str(s["fp"]),
                str(s["fn"]),
                "-" if s["distractors_only"] else f"{s['f1']:.2f}",
            ]
        )
    return head, rows


def timeline_lines(
    stream: SpotStream, records: Sequence[Mapping[str, Any]], iou: float = 0.5
) -> list[str]:
    """One stream's micro-expressions and events in time order: each ground-truth event
    with the event matched to it (or ``missed``), and each unmatched event (``false
    alarm``); macro-expressions and macro events are listed as context."""
    micro = [r for r in records if r["type"] == MICRO and r["onset_ts"] < stream.seconds]
    truth = [t for t in stream.truth if t.kind == "micro" and t.onset_s < stream.seconds]
    _, _, _, pairs = match_events(
        [(r["onset_ts"], r["offset_ts"]) for r in micro],
        [(t.onset_s, t.offset_s) for t in truth],
        iou,
    )
    by_truth = {j: (i, v) for i, j, v in pairs}
    matched = {i for i, _, _ in pairs}
    rows: list[tuple[float, str]] = []
    for j, t in enumerate(truth):
        head = f"{t.onset_s:7.2f}-{t.offset_s:6.2f} s  truth {t.label or '?':<9}"
        if j in by_truth:
            i, v = by_truth[j]
            r = micro[i]
            rows.append(
                (
                    t.onset_s,
                    f"{head} -> event {r['onset_ts']:6.2f}-{r['offset_ts']:6.2f} s "
                    f"{r['label']:<9} IoU {v:.2f}",
                )
            )
        else:
            best = max(
                (
                    interval_iou((r["onset_ts"], r["offset_ts"]), (t.onset_s, t.offset_s))
                    for r in micro
                ),
                default=0.0,
            )
            near = f" (an event overlaps it, IoU {best:.2f} < {iou:g})" if best > 0 else ""
            rows.append((t.onset_s, f"{head} -> missed{near}"))
    for i, r in enumerate(micro):
        if i not in matched:
            rows.append(
                (
                    r["onset_ts"],
                    f"{r['onset_ts']:7.2f}-{r['offset_ts']:6.2f} s  event {r['label']:<9} "
                    "false alarm",
                )
            )
    for t in stream.truth:
        if t.kind == "macro" and t.onset_s < stream.seconds:
            rows.append((t.onset_s, f"{t.onset_s:7.2f}-{t.offset_s:6.2f} s  (macro-expression)"))
    for r in records:
        if r["type"] != MICRO and r["onset_ts"] < stream.seconds:
            rows.append(
                (
                    r["onset_ts"],
                    f"{r['onset_ts']:7.2f}-{r['offset_ts']:6.2f} s  (macro event {r['label']})",
                )
            )
    return [text for _, text in sorted(rows, key=lambda x: x[0])]
