"""``edge-mer datasets``: summary, check and the label maps of the MER datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_mer.cli.common import console, errors
from edge_mer.errors import InputError

app = typer.Typer(
    help="Micro-expression datasets as distributed: counts, completeness, label maps.",
    no_args_is_help=True,
)

DATASET_HELP = "casme2, samm, smic-hs, smic-vis, smic-nir, casme3, or megc2019 (the composite)."
RootArg = Annotated[
    Path | None,
    typer.Argument(help="The dataset's root folder (not for megc2019: use the options)."),
]
Casme2Opt = Annotated[Path | None, typer.Option("--casme2", help="megc2019: CASME II root.")]
SammOpt = Annotated[Path | None, typer.Option("--samm", help="megc2019: SAMM root.")]
SmicOpt = Annotated[Path | None, typer.Option("--smic-hs", help="megc2019: SMIC (HS) root.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON.")]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a temp file beside ``path``, then rename (never a half-written file)."""
    if path.is_dir():
        raise InputError(f"--json {str(path)!r} is a folder; name a file")
    if not path.parent.is_dir():
        raise InputError(f"--json {str(path)!r}: folder {str(path.parent)!r} does not exist")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _load(
    dataset: str,
    root: Path | None,
    casme2: Path | None,
    samm: Path | None,
    smic_hs: Path | None,
    allow_missing: bool,
) -> Any:
    """A DatasetCopy, or a Composite for megc2019, after checking the arguments."""
    from edge_mer.calibration.datasets import DATASETS, build_megc2019, read_dataset

    if dataset == "megc2019":
        roots = {"--casme2": casme2, "--samm": samm, "--smic-hs": smic_hs}
        lacking = [k for k, v in roots.items() if v is None]
        if root is not None or lacking:
            raise InputError(
                f"megc2019 takes the three roots as options, not ROOT: give {' '.join(lacking)} "
                "(edge-mer datasets summary megc2019 --casme2 R --samm R --smic-hs R)"
            )
        return build_megc2019(casme2, samm, smic_hs, allow_missing=allow_missing)  # type: ignore[arg-type]
    if dataset not in DATASETS:
        raise InputError(f"no dataset {dataset!r}: choose one of {DATASET_HELP}")
    if root is None:
        raise InputError(
            f"{dataset} needs its ROOT folder: edge-mer datasets summary {dataset} ROOT"
        )
    if any(v is not None for v in (casme2, samm, smic_hs)):
        raise InputError(f"--casme2/--samm/--smic-hs are for megc2019 only, not {dataset}")
    return read_dataset(dataset, root)


def _print_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{s.get('title', s['dataset'])}  ({s['label_map']} labels)")
    table.add_column("label")
    table.add_column("samples", justify="right")
    for label, n in s["labels"].items():
        table.add_row(label, str(n))
    table.add_row("[b]total[/b]", f"[b]{s['samples']}[/b]")
    console.print(table)
    console.print(
        f"{s['samples']} samples of {s['subjects']} subjects ({s['dropped']} dropped by "
        f"{s['label_map']}); {s['rows']} rows; {s['fps']:g} fps; sheet {s['sheet'] or '-'}",
        markup=False,
    )
    console.print(f"sheet emotions: {s['emotions']}", markup=False)
    _print_tail(s)


def _print_tail(s: dict[str, Any]) -> None:
    for note in s.get("notes", []):
        console.print(f"note: {note}", markup=False)
    for e in s["errata"]:
        console.print(
            f"erratum {e['sample']}: {e['issue']} -> {e['action']} [{e['source']}]", markup=False
        )
    if s["missing"]:
        shown = ", ".join(s["missing"][:10]) + (" ..." if len(s["missing"]) > 10 else "")
        console.print(f"MISSING {len(s['missing'])}: {shown}", markup=False)


def _print_composite(s: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="MEGC 2019 composite (official list)")
    for col in ("dataset", "samples", "subjects", "negative", "positive", "surprise", "official"):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for name, d in s["datasets"].items():
        o = s["official"][name]
        official = (
            f"{o['samples']}/{o['subjects']} ({'/'.join(str(v) for v in o['labels'].values())})"
        )
        labels = [str(d["labels"].get(k, 0)) for k in ("negative", "positive", "surprise")]
        table.add_row(name, str(d["samples"]), str(d["subjects"]), *labels, official)
    totals = [str(s["labels"].get(k, 0)) for k in ("negative", "positive", "surprise")]
    table.add_row("[b]total[/b]", str(s["samples"]), str(s["subjects"]), *totals, "442/68")
    console.print(table)
    if s["label_disagreements"]:
        console.print(
            f"{len(s['label_disagreements'])} sample(s) whose sheet emotion under megc3 differs "
            "from the official label (the official label is used)",
            markup=False,
        )
    _print_tail(s)


@errors
def summary(
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP)],
    root: RootArg = None,
    label_map: Annotated[
        str | None,
        typer.Option(help="megc3, cdmer3, casme2-5, samm-5 or raw (default raw); see 'maps'."),
    ] = None,
    json_path: JsonOpt = None,
    casme2: Casme2Opt = None,
    samm: SammOpt = None,
    smic_hs: SmicOpt = None,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="megc2019: go on without the list's samples the copies lack (they are named).",
        ),
    ] = False,
) -> None:
    """Samples, subjects and labels of a copy; errata met; samples missing from it."""
    from edge_mer.calibration.datasets.labels import get_map
    from edge_mer.calibration.datasets.summary import summarize, summarize_composite

    if label_map is not None:
        get_map(label_map)  # an unknown name is refused before any reading
        if dataset == "megc2019":
            raise InputError(
                "--label-map does not apply to megc2019: the composite's labels are the "
                "official list's (negative, positive, surprise)"
            )
    loaded = _load(dataset, root, casme2, samm, smic_hs, allow_missing)
    if dataset == "megc2019":
        report = summarize_composite(loaded)
        _print_composite(report)
    else:
        report = summarize(loaded, label_map)
        _print_summary(report)
    if json_path is not None:
        _write_json(json_path, report)


@errors
def check(
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP)],
    root: RootArg = None,
    json_path: JsonOpt = None,
    casme2: Casme2Opt = None,
    samm: SammOpt = None,
    smic_hs: SmicOpt = None,
) -> None:
    """Verify a copy: every sample has its frames, numbering is contiguous, fps as documented.

    Exit 1 with a per-sample report when the copy is incomplete."""
    from edge_mer.calibration.datasets.summary import check_composite, check_copy

    loaded = _load(dataset, root, casme2, samm, smic_hs, allow_missing=True)
    report = check_composite(loaded) if dataset == "megc2019" else check_copy(loaded)
    for p in report.failures:
        console.print(f"{p.sample}  {p.kind}  {p.detail}", markup=False)
    for w in report.warnings:
        console.print(f"warning: {w}", markup=False)
    if json_path is not None:
        _write_json(json_path, {"dataset": dataset, **report.as_dict()})
    if not report.ok:
        console.print(
            f"{dataset}: {len(report.failures)} problem(s) in {report.checked} samples",
            markup=False,
        )
        raise typer.Exit(1)
    console.print(f"{dataset}: {report.checked} samples checked, all complete", markup=False)


@errors
def maps(
    names: Annotated[list[str] | None, typer.Argument(help="Maps to show (default: all).")] = None,
) -> None:
    """The named label maps, each with its definition (canonical emotion -> label)."""
    from edge_mer.calibration.datasets.labels import describe_maps

    console.print(describe_maps(names), markup=False)


app.command("summary")(summary)
app.command("check")(check)
app.command("maps")(maps)
