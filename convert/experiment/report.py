"""``edge-mer experiment report``: the tables a paper needs, from a study folder's files.

Everything is read from ``study.json``, the job folders and their markers (through
:func:`~edge_mer.convert.experiment.results.collect`), so a partial or resumed run reports
what it has and names the jobs that are missing or failed.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_mer.convert.experiment.results import ALL

RUNTIME_NAMES = {
    "pytorch": "PyTorch",
    "onnxruntime-fp32": "ORT FP32",
    "onnxruntime-int8": "ORT INT8",
}
SELECTION_TEXT = {
    "inner-val": "Model selection: the epoch with the best UF1 on each fold's validation "
    "subjects, drawn from its training subjects; test subjects were never used for any choice.",
    "fixed": "Model selection: none (the last epoch of a fixed schedule); test subjects were "
    "never used for any choice.",
}


def test_sets(results: dict[str, Any]) -> list[str]:
    """Test sets to show: each dataset, plus the pooled set when there are several."""
    found = sorted({r["test"] for r in results["results"]} - {ALL})
    return [*found, ALL] if len(found) > 1 and results["protocol"] == "megc2019" else found


def _cell(entry: dict[str, Any] | None, metric: str) -> str:
    if entry is None:
        return "—"
    mean, std = entry[f"{metric}_mean"], entry[f"{metric}_std"]
    return f"{mean:.3f} ± {std:.3f}" if entry["n_seeds"] > 1 else f"{mean:.3f}"


def main_table(results: dict[str, Any], runtime: str) -> tuple[list[str], list[list[str]]]:
    """Rows = models, columns = test sets, cells ``UF1 | UAR`` (mean ± std over seeds)."""
    index = {(r["model"], r["runtime"], r["test"]): r for r in results["results"]}
    models = sorted({r["model"] for r in results["results"]})
    sets = test_sets(results)
    header = ["model", *(f"{s} UF1 | UAR" for s in sets)]
    rows = [
        [
            m,
            *(
                f"{_cell(index.get((m, runtime, s)), 'uf1')} | "
                f"{_cell(index.get((m, runtime, s)), 'uar')}"
                for s in sets
            ),
        ]
        for m in models
    ]
    return header, rows


def deploy_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per model: FP32 vs INT8 UF1 (pooled, all test sets), worst per-fold INT8 - FP32,
    encoder + step ms per frame (INT8, this machine), bundle size."""
    index = {(r["model"], r["runtime"], r["test"]): r for r in results["results"]}
    worst: dict[str, float] = {}  # the fold where INT8 lost most UF1 (or gained least)
    for d in results["int8_minus_fp32"]:
        worst[d["model"]] = min(worst.get(d["model"], d["uf1"]), d["uf1"])
    header = ["model", "test", "FP32 UF1", "INT8 UF1", "worst fold Δ", "ms/frame", "MB"]
    rows = []
    for m in sorted({r["model"] for r in results["results"]}):
        dep = results["deploy"].get(m, {})
        for s in test_sets(results):
            fp32, int8 = (
                index.get((m, "onnxruntime-fp32", s)),
                index.get((m, "onnxruntime-int8", s)),
            )
            rows.append(
                [
                    m,
                    s,
                    _cell(fp32, "uf1"),
                    _cell(int8, "uf1"),
                    f"{worst[m]:+.3f}" if m in worst else "—",
                    f"{dep['ms_per_frame_int8']:.3f}" if dep.get("ms_per_frame_int8") else "—",
                    f"{dep['bundle_mb']:.2f}" if dep.get("bundle_mb") else "—",
                ]
            )
    return header, rows


def subject_table(predictions: Sequence[dict[str, str]], runtime: str) -> list[list[str]]:
    """Accuracy per (model, subject) over seeds: a secondary view, not the pooled metric."""
    hits: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in predictions:
        if r["runtime"] != runtime:
            continue
        key = (r["model"], r["dataset"], r["subject"])
        hits[key][0] += r["label"] == r["predicted"]
        hits[key][1] += 1
    return [[m, d, s, f"{h / n:.3f}", str(n)] for (m, d, s), (h, n) in sorted(hits.items())]


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cells(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    lines = [cells(header), "|" + "---|" * len(header)]
    lines += [cells(r) for r in rows]
    return "\n".join(lines)


def latex(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> str:
    def esc(s: str) -> str:
        return (
            s.replace("\\", r"\textbackslash{}")
            .replace("_", r"\_")
            .replace("%", r"\%")
            .replace("&", r"\&")
            .replace("±", r"$\pm$")
            .replace("Δ", r"$\Delta$")
            .replace("—", "--")
            .replace("|", "/")
        )

    cols = "l" * len(header)
    body = [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{esc(caption)}}}",
            rf"\begin{{tabular}}{{{cols}}}",
            r"\toprule",
            " & ".join(esc(h) for h in header) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def streams_text(results: dict[str, Any], predictions: Sequence[dict[str, str]]) -> str:
    """What ``[train] streams = true`` changed, and how often a test sample was predicted
    as a class outside the protocol's (a miss)."""
    labels = set(results["labels"])
    total: dict[str, int] = defaultdict(int)
    out: dict[str, int] = defaultdict(int)
    for r in predictions:
        total[r["runtime"]] += 1
        out[r["runtime"]] += r["predicted"] not in labels
    counts = ", ".join(f"{RUNTIME_NAMES.get(k, k)} {out[k]} of {total[k]}" for k in sorted(total))
    return (
        "Training: clips and the streams of each fold's training subjects (never a validation "
        "or test subject's); the models also output the background class 'none' (and 'macro' "
        "where the streams hold macro-expressions), and a test sample predicted as one of "
        f"those counts as a miss of its true class ({counts or 'none yet'})."
    )


def render(
    results: dict[str, Any],
    study: dict[str, Any],
    predictions: Sequence[dict[str, str]],
) -> str:
    """The whole Markdown report."""
    name = study.get("study", {}).get("name", "study")
    proto = study["protocol"]
    lines = [f"# {name}", ""]
    lines.append(
        f"Protocol: {proto['kind']}, label map {proto['label_map']}, labels "
        f"{', '.join(results['labels'])}. Metrics on predictions pooled over all folds, "
        "joined to labels by sample id; mean ± sample std over seeds "
        f"({', '.join(str(s) for s in study['train']['seeds'])})."
    )
    lines.append(SELECTION_TEXT[study["train"]["selection"]])
    if study["train"].get("streams"):
        lines.append(streams_text(results, predictions))
    lines.append("")
    for runtime in ("pytorch", "onnxruntime-fp32", "onnxruntime-int8"):
        if not any(r["runtime"] == runtime for r in results["results"]):
            continue
        lines += [f"## {RUNTIME_NAMES[runtime]}", "", markdown(*main_table(results, runtime)), ""]
    lines += ["## Deployed accuracy (ONNX Runtime, streamed as on the device)", ""]
    lines += [markdown(*deploy_table(results)), ""]
    jobs = results["jobs"]
    lines.append(f"Jobs: {jobs['done']} of {jobs['total']} finished.")
    for key in jobs["missing"]:
        lines.append(f"- missing: {key}")
    for f in jobs["failed"]:
        lines.append(f"- failed: {f['job']}: {f['reason']}")
    for f in jobs["broken"]:
        lines.append(f"- broken (not scored): {f['job']}: {f['reason']}")
    lines += ["", "## Per subject (secondary; accuracy over seeds, ORT INT8)", ""]
    runtime = (
        "onnxruntime-int8"
        if any(r["runtime"] == "onnxruntime-int8" for r in predictions)
        else "onnxruntime-fp32"
    )
    lines.append(
        markdown(
            ["model", "dataset", "subject", "accuracy", "n"], subject_table(predictions, runtime)
        )
    )
    return "\n".join(lines) + "\n"


def write_csv(path: Path, results: dict[str, Any]) -> None:
    cols = ["model", "runtime", "test", "n_seeds", "samples"]
    cols += [f"{m}_{s}" for m in ("uf1", "uar", "war") for s in ("mean", "std")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in results["results"]:
            w.writerow([r[c] for c in cols])
