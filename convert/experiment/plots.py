"""Figures of a study (``edge-mer experiment report --plots DIR``; matplotlib, extra ``plots``).

- ``confusion-<model>-<runtime>.png``: row-normalised confusion matrix of the pooled
  predictions (rows = true label, columns = predicted label), over every seed; a row's
  share predicted as a class outside the protocol's (a miss) is what its cells lack of 1.
- ``accuracy-vs-latency.png``: pooled INT8 UF1 (mean over seeds, error bar = std) against
  the INT8 encoder + step milliseconds per frame measured on the machine that ran the jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.convert.experiment.results import ALL
from edge_mer.errors import MissingDependencyError


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "plots", "--plots") from None
    return plt


def confusion_pngs(results: dict[str, Any], folder: Path) -> list[Path]:
    plt = _pyplot()
    labels = results["labels"]
    written = []
    for entry in results["results"]:
        if entry["test"] != ALL:
            continue
        total = np.sum([np.asarray(s["confusion"]) for s in entry["seeds"].values()], axis=0)
        # Predictions of a class outside the protocol's (streams' "none"/"macro") are
        # misses: they count in a row's total, in no column.
        rows = total.sum(axis=1, keepdims=True)
        for s in entry["seeds"].values():
            for counts in s.get("outside", {}).values():
                rows = rows + np.asarray(counts).reshape(-1, 1)
        norm = np.divide(total, rows, out=np.zeros(total.shape), where=rows > 0)
        fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5))
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("Predicted label")
        ax.set_ylabel("True label")
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}\n({total[i, j]})",
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.6 else "black",
                    fontsize=8,
                )
        ax.set_title(f"{entry['model']} · {entry['runtime']} · n={entry['samples']}")
        fig.tight_layout()
        path = folder / f"confusion-{entry['model']}-{entry['runtime']}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def accuracy_vs_latency(results: dict[str, Any], folder: Path) -> Path | None:
    plt = _pyplot()
    points = []
    for entry in results["results"]:
        if entry["test"] != ALL or entry["runtime"] != "onnxruntime-int8":
            continue
        ms = results["deploy"].get(entry["model"], {}).get("ms_per_frame_int8")
        if ms:
            points.append((entry["model"], ms, entry["uf1_mean"], entry["uf1_std"]))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ms, uf1, std in points:
        ax.errorbar(ms, uf1, yerr=std, fmt="o", capsize=3)
        ax.annotate(name, (ms, uf1), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("INT8 encoder + step, ms per frame (this machine)")
    ax.set_ylabel("pooled UF1 (ORT INT8)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = folder / "accuracy-vs-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
