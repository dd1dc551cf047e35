"""From the job folders to ``predictions.csv`` and ``results.json``, using the files alone.

Each finished job folder holds ``fold.json`` (its fold record: subjects, and every test
sample's id, dataset, subject and label) and ``predictions.csv`` (``sample, runtime,
predicted``). Predictions are joined to labels by sample id (never by row order); a job whose
predictions miss a test sample, name one twice or name an unknown one is reported as
broken, not scored. Metrics are pooled: for each (model, runtime, test set, seed) all folds'
predictions are scored together (UF1, UAR, WAR); then mean and standard deviation over seeds
(sample standard deviation, ddof = 1; 0 with one seed). Per-fold figures and the INT8 minus
FP32 UF1 difference per fold are secondary.

A model may have output classes beyond the protocol's (``[train] streams = true`` adds the
background class ``none``, and ``macro`` when the streams hold macro-expressions; a job's
``fold.json`` lists them as ``model_labels``). A test sample whose prediction is such a
class is a miss: a false negative of its true class and a false positive of no protocol
class, never dropped. UF1 and UAR stay averages over the protocol's classes, the confusion
matrix stays the protocol's classes by the protocol's classes, and ``outside`` counts those
predictions per class of the truth (``{"none": [per protocol class], ...}``).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_mer.convert.experiment.jobs import DONE, FAILED, Job, read_json, status, write_json
from edge_mer.errors import InputError
from edge_mer.metrics import pooled_scores

PREDICTION_COLUMNS = (
    "model",
    "seed",
    "protocol",
    "fold",
    "dataset",
    "subject",
    "sample",
    "label",
    "predicted",
    "runtime",
)
ALL = "all"  # the pooled test set over every dataset (the composite, for megc2019)


class BrokenJob(Exception):
    """A job folder whose files do not add up (reported, not scored)."""


def job_rows(
    folder: Path, model: str, seed: int, protocol: str, labels: Sequence[str]
) -> list[dict[str, str]]:
    """The job's predictions joined to its fold record by sample id; a prediction must be
    one of the model's classes (``model_labels``; the protocol's ``labels`` when the record
    has none)."""
    record = read_json(folder / "fold.json")
    if record is None:
        raise BrokenJob(f"{folder}: fold.json is missing or unreadable")
    samples = {s["sample"]: s for s in record["test_samples"]}
    outputs = set(record.get("model_labels") or labels)
    try:
        text = (folder / "predictions.csv").read_text()
    except OSError as exc:
        raise BrokenJob(f"{folder}: predictions.csv: {exc.strerror}") from None
    seen: dict[str, set[str]] = defaultdict(set)
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        sid, runtime = r["sample"], r["runtime"]
        if sid not in samples:
            raise BrokenJob(f"{folder}: prediction for {sid!r}, which is not a test sample")
        if sid in seen[runtime]:
            raise BrokenJob(f"{folder}: two {runtime} predictions for {sid!r}")
        if r["predicted"] not in outputs:
            raise BrokenJob(
                f"{folder}: {runtime} predicts {r['predicted']!r} for {sid!r}, not one of the "
                f"model's classes {sorted(outputs)}"
            )
        seen[runtime].add(sid)
        s = samples[sid]
        rows.append(
            {
                "model": model,
                "seed": str(seed),
                "protocol": protocol,
                "fold": str(record["fold"]["id"]),
                "dataset": s["dataset"],
                "subject": s["subject"],
                "sample": sid,
                "label": s["label"],
                "predicted": r["predicted"],
                "runtime": runtime,
            }
        )
    for runtime, got in seen.items():
        missing = sorted(set(samples) - got)
        if missing:
            raise BrokenJob(f"{folder}: no {runtime} prediction for {missing[:3]} ...")
    return rows


def pooled(rows: Sequence[dict[str, str]], labels: Sequence[str]) -> dict[str, Any]:
    """UF1/UAR/WAR and the confusion matrix (rows = truth, columns = prediction) of the
    rows' predictions, joined to their labels by sample id
    (:func:`edge_mer.metrics.pooled_scores`); predictions outside ``labels`` are misses,
    counted per true class in ``outside`` (see the module docstring)."""
    labels = list(labels)
    bad = next((r for r in rows if r["label"] not in labels), None)
    if bad is not None:
        raise BrokenJob(f"label {bad['label']!r} of {bad['sample']!r} is not one of {labels}")
    extra = sorted({r["predicted"] for r in rows} - set(labels))
    try:
        s = pooled_scores(
            [(r["sample"], r["label"]) for r in rows],
            [(r["sample"], r["predicted"]) for r in rows],
            [*labels, *extra],  # never in the truth: not averaged, a miss of the true class
        )
    except InputError as exc:
        raise BrokenJob(str(exc)) from None
    k = len(labels)
    m = s["confusion"]
    return {
        **{key: s[key] for key in ("uf1", "uar", "war", "n")},
        "confusion": [row[:k] for row in m[:k]],
        "outside": {name: [row[k + i] for row in m[:k]] for i, name in enumerate(extra)},
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def collect(
    jobs: Sequence[Job],
    out: Path,
    protocol: str,
    labels: Sequence[str],
    missing_samples: Sequence[str] = (),
) -> dict[str, Any]:
    """Read every job folder; write ``predictions.csv`` and ``results.json`` in ``out``."""
    rows: list[dict[str, str]] = []
    done, failed, missing, broken, stale = [], [], [], [], []
    extras: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:
        folder = job.folder(out)
        st = status(job, out)
        if st == "failed":
            info = read_json(folder / FAILED) or {}
            failed.append({"job": job.key, "reason": info.get("reason", "?")})
            continue
        if st != "done":
            (stale if st == "stale" else missing).append(job.key)
            continue
        try:
            rows += job_rows(folder, job.model, job.seed, protocol, labels)
        except BrokenJob as exc:
            broken.append({"job": job.key, "reason": str(exc)})
            continue
        done.append(job.key)
        marker = read_json(folder / DONE) or {}
        extras[job.model].append({"seed": job.seed, "fold": job.fold.id, **marker})
    _write_predictions(out / "predictions.csv", rows)
    results = {
        "protocol": protocol,
        "labels": list(labels),
        # megc2019 run with allow_missing: the official samples this copy lacks.
        "missing_samples": list(missing_samples),
        "jobs": {
            "total": len(jobs),
            "done": len(done),
            "failed": failed,
            "broken": broken,
            "missing": missing + stale,
        },
        **summarise(rows, labels),
        "deploy": _deploy(extras),
    }
    write_json(out / "results.json", results)
    return results


def summarise(rows: Sequence[dict[str, str]], labels: Sequence[str]) -> dict[str, Any]:
    """Pooled figures per (model, runtime, test set), per seed and over seeds; per fold."""
    groups: dict[tuple[str, str, str, str], list[dict[str, str]]] = defaultdict(list)
    folds: dict[tuple[str, str, str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        for test in (r["dataset"], ALL):
            groups[(r["model"], r["runtime"], test, r["seed"])].append(r)
        folds[(r["model"], r["seed"], r["fold"], r["runtime"])].append(r)
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for (model, runtime, test, seed), grp in sorted(groups.items()):
        entry = table.setdefault(
            (model, runtime, test), {"model": model, "runtime": runtime, "test": test, "seeds": {}}
        )
        entry["seeds"][seed] = pooled(grp, labels)
    pooled_rows = []
    for entry in table.values():
        per_seed = list(entry["seeds"].values())
        for metric in ("uf1", "uar", "war"):
            entry[f"{metric}_mean"], entry[f"{metric}_std"] = _mean_std(
                [s[metric] for s in per_seed]
            )
        entry["n_seeds"] = len(per_seed)
        entry["samples"] = per_seed[0]["n"]
        pooled_rows.append(entry)
    per_fold = []
    for (model, seed, fold, runtime), grp in sorted(folds.items()):
        s = pooled(grp, labels)
        per_fold.append(
            {"model": model, "seed": int(seed), "fold": fold, "runtime": runtime}
            | {k: s[k] for k in ("uf1", "uar", "war", "n")}
        )
    deltas = []
    index = {(f["model"], f["seed"], f["fold"], f["runtime"]): f for f in per_fold}
    for (model, seed, fold, runtime), f in index.items():
        if runtime != "onnxruntime-int8":
            continue
        fp32 = index.get((model, seed, fold, "onnxruntime-fp32"))
        if fp32 is not None:
            deltas.append(
                {"model": model, "seed": seed, "fold": fold, "uf1": f["uf1"] - fp32["uf1"]}
            )
    return {"results": pooled_rows, "folds": per_fold, "int8_minus_fp32": deltas}


def _deploy(extras: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per model: the median encoder+step latency and bundle size the jobs measured."""
    out = {}
    for model, markers in extras.items():
        ms = sorted(m["ms_per_frame"] for m in markers if m.get("ms_per_frame") is not None)
        size = sorted(m["bundle_mb"] for m in markers if m.get("bundle_mb") is not None)
        out[model] = {
            "ms_per_frame_int8": ms[len(ms) // 2] if ms else None,
            "bundle_mb": size[len(size) // 2] if size else None,
            "jobs": len(markers),
        }
    return out


def _write_predictions(path: Path, rows: Sequence[dict[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
