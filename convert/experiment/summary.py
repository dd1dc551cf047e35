"""A study folder's report, from its files alone (``edge-mer experiment report``).

``run`` leaves ``study.json`` and ``jobs.json`` (every job the study expands to, with its
fold and hash) beside the job folders; the report re-reads every job folder through
:func:`~edge_mer.convert.experiment.results.collect`, so it works on a partial run, a run
that is still going, or one resumed elsewhere, and names the jobs missing or failed.
"""

from __future__ import annotations

import csv as csv_module
import io
from pathlib import Path
from typing import Any

from edge_mer.convert.experiment import report as rep
from edge_mer.convert.experiment.jobs import STUDY_FILE, FoldSpec, Job, read_json, write_json
from edge_mer.convert.experiment.results import collect
from edge_mer.errors import InputError

JOBS_FILE = "jobs.json"


def save_jobs(out: Path, jobs: list[Job], labels: list[str], missing: list[str]) -> None:
    write_json(
        out / JOBS_FILE,
        {
            "labels": labels,
            "missing_samples": missing,
            "jobs": [
                {"model": j.model, "seed": j.seed, "hash": j.hash, "fold": j.fold.to_json()}
                for j in jobs
            ],
        },
    )


def load_jobs(out: Path) -> tuple[dict[str, Any], list[Job], dict[str, Any]]:
    """(study record, jobs, the job listing) of a study folder; one line if it is not one."""
    if not out.is_dir():
        raise InputError(f"{str(out)!r} is not a folder: pass the --out of experiment run")
    study = read_json(out / STUDY_FILE)
    listing = read_json(out / JOBS_FILE)
    if study is None or listing is None:
        raise InputError(
            f"{str(out)!r} has no {STUDY_FILE} and {JOBS_FILE}: it is not a study folder made "
            "by edge-mer experiment run"
        )
    jobs = [
        Job(j["model"], j["seed"], FoldSpec.from_json(j["fold"]), study["digest"], j["hash"])
        for j in listing["jobs"]
    ]
    return study, jobs, listing


def _check_target(path: Path | None, what: str) -> None:
    if path is not None and not path.parent.is_dir():
        raise InputError(f"{what} {str(path)!r}: folder {str(path.parent)!r} does not exist")


def write_report(
    out: Path,
    *,
    markdown: Path | None = None,
    latex: Path | None = None,
    csv: Path | None = None,
    plots: Path | None = None,
) -> str:
    """Re-collect the results of ``out`` and write what was asked; returns the Markdown."""
    for path, what in ((markdown, "--markdown"), (latex, "--latex"), (csv, "--csv")):
        _check_target(path, what)
    if plots is not None:
        from edge_mer.convert.experiment.plots import _pyplot

        _pyplot()  # refuse before any work when matplotlib is missing
    record, jobs, listing = load_jobs(out)
    study = record["study"]
    results = collect(
        jobs, out, study["protocol"]["kind"], listing["labels"], listing["missing_samples"]
    )
    predictions = list(csv_module.DictReader(io.StringIO((out / "predictions.csv").read_text())))
    text = rep.render(results, study, predictions)
    if markdown is not None:
        markdown.write_text(text)
    if latex is not None:
        parts = []
        for runtime in ("pytorch", "onnxruntime-fp32", "onnxruntime-int8"):
            if any(r["runtime"] == runtime for r in results["results"]):
                caption = f"{study['study']['name']}: UF1 | UAR, {rep.RUNTIME_NAMES[runtime]}"
                parts.append(rep.latex(*rep.main_table(results, runtime), caption))
        parts.append(rep.latex(*rep.deploy_table(results), "Deployed accuracy and cost"))
        latex.write_text("\n\n".join(parts) + "\n")
    if csv is not None:
        rep.write_csv(csv, results)
    if plots is not None:
        from edge_mer.convert.experiment.plots import accuracy_vs_latency, confusion_pngs

        plots.mkdir(parents=True, exist_ok=True)
        confusion_pngs(results, plots)
        accuracy_vs_latency(results, plots)
    return text
