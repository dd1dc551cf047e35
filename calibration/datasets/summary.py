"""What ``edge-mer datasets summary`` and ``check`` report, as JSON-ready dicts.

:func:`summarize` (one copy) and :func:`summarize_composite` (MEGC 2019) return at least
``{"samples": N, "subjects": N, "labels": {label: count}, "missing": [sample ids],
"errata": [...]}``; the composite adds the same block per dataset under ``"datasets"``.
:func:`check_copy` / :func:`check_composite` list what makes a copy incomplete or differ
from the documentation: per sample (missing folder or frames, frame numbering with gaps,
onset/offset beyond the frames, names that contradict their folders) and per dataset (an fps
other than the documented one).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edge_mer.calibration.datasets.labels import LabelMap, apply_map, get_map
from edge_mer.calibration.datasets.megc2019 import EXPECTED, LABELS, Composite
from edge_mer.calibration.datasets.registry import DATASETS
from edge_mer.calibration.datasets.schema import MISSING_KINDS, DatasetCopy, Problem, is_synthetic

__all__ = ["CheckReport", "check_composite", "check_copy", "summarize", "summarize_composite"]


def _base(copy: DatasetCopy) -> dict[str, Any]:
    info = DATASETS[copy.dataset]
    notes = list(copy.notes)
    if is_synthetic(copy.root):
        notes.append("synthetic copy written by edge-mer synth (README.txt)")
    return {
        "dataset": copy.dataset,
        "title": info.title,
        "root": str(copy.root),
        "sheet": str(copy.sheet) if copy.sheet else None,
        "fps": copy.fps,
        "documented_fps": info.fps,
        "rows": copy.rows,
        "notes": notes,
    }


def summarize(copy: DatasetCopy, label_map: LabelMap | str | None = None) -> dict[str, Any]:
    """Counts of one copy. ``labels`` counts the samples per label under ``label_map``
    (default ``raw``: the normalised emotions); ``emotions`` counts the sheet's own words;
    ``dropped`` counts the samples the map leaves out."""
    m = get_map(label_map or "raw") if not isinstance(label_map, LabelMap) else label_map
    kept, dropped = apply_map(copy.samples, m)
    out = _base(copy)
    out.update(
        {
            "label_map": m.name,
            "samples": len(kept),
            "subjects": len({s.subject for s in kept}),
            "labels": {lab: n for lab in m.labels if (n := sum(s.label == lab for s in kept))},
            "dropped": len(dropped),
            "emotions": dict(Counter(s.emotion for s in copy.samples).most_common()),
            "subject_ids": sorted({s.subject for s in kept}),
            "missing": copy.missing,
            "problems": [p.as_dict() for p in copy.problems if p.kind not in MISSING_KINDS],
            "errata": [e.as_dict() for e in copy.errata],
        }
    )
    return out


def _ordered(counts: Counter[str]) -> dict[str, int]:
    return {lab: counts[lab] for lab in LABELS if counts[lab]}


def summarize_composite(comp: Composite) -> dict[str, Any]:
    """Counts of the composite, overall and per dataset, with the official counts beside."""
    datasets = {}
    for name, copy in comp.copies.items():
        mine = [s for s in comp.samples if s.dataset == name]
        ids = {s.id for s in mine}
        block = _base(copy)
        block.update(
            {
                "samples": len(mine),
                "subjects": len({s.subject for s in mine}),
                "labels": _ordered(Counter(s.label for s in mine)),
                "missing": [i for i in comp.missing if i.startswith(f"{name}/")],
                "errata": [e.as_dict() for e in copy.errata if e.sample in ids],
            }
        )
        datasets[name] = block
    part = {"casme2": "casme2", "samm": "samm", "smic-hs": "smic"}
    return {
        "protocol": "megc2019",
        "samples": len(comp.samples),
        "subjects": len(comp.subjects),
        "labels": _ordered(Counter(s.label for s in comp.samples)),
        "missing": comp.missing,
        "errata": [e for d in datasets.values() for e in d["errata"]],
        "label_disagreements": comp.disagreements,
        "official": {
            name: {"samples": n, "subjects": k, "labels": labels}
            for name, (n, k, labels) in ((d, EXPECTED[part[d]]) for d in datasets)
        },
        "datasets": datasets,
    }


@dataclass
class CheckReport:
    """``failures``: what makes the copy incomplete or undocumented (exit 1 when any);
    ``warnings``: what cannot be verified (no list to compare with)."""

    failures: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "failures": [p.as_dict() for p in self.failures],
            "warnings": self.warnings,
        }


def check_copy(copy: DatasetCopy, only: set[str] | None = None) -> CheckReport:
    """Every problem of the copy is a failure (only those of the sample ids in ``only``,
    when given), and so is an fps other than the documented one."""
    info = DATASETS[copy.dataset]
    report = CheckReport(checked=copy.rows)
    report.failures = [p for p in copy.problems if only is None or p.sample in only]
    if abs(copy.fps - info.fps) > 1e-6:
        report.failures.append(
            Problem(
                copy.dataset,
                "fps",
                f"{copy.root}: {copy.fps:g} fps (README.txt), but {info.title} is documented "
                f"at {info.fps:g} fps",
            )
        )
    if copy.sheet is None and copy.dataset != "smic-hs" and copy.rows != info.samples:
        report.warnings.append(
            f"{info.title} has no list of its clips to check against: found {copy.rows} "
            f"clip folders, {info.samples} are documented ({info.source})"
        )
    return report


def check_composite(comp: Composite) -> CheckReport:
    """The composite's samples only: each list entry the copies lack, and the problems of
    the samples the list names."""
    ids = {e.id for e in comp.entries}
    report = CheckReport(checked=len(comp.entries))
    for copy in comp.copies.values():
        sub = check_copy(copy, only=ids)
        report.failures += sub.failures
    have = {p.sample for p in report.failures}
    report.failures += [
        Problem(i, "missing-folder", "named by the MEGC 2019 list, not in the copy")
        for i in comp.missing
        if i not in have
    ]
    return report


def documented_table(maps: tuple[str, ...] = ("megc3", "cdmer3", "casme2-5", "samm-5")) -> str:
    """The README's table: samples per label map and dataset, computed with the maps from
    the sheets' documented emotion counts (:data:`~.registry.DATASETS`). A cell reads
    ``total (count per label, in the map's label order)``; ``n/a`` where the map does not
    know the dataset's emotions."""
    from edge_mer.calibration.datasets.labels import LabelMapError

    head = ["dataset (documented sheet)", "raw", *maps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for info in DATASETS.values():
        cells = [
            f"{info.title}: {info.samples} samples, {info.subjects} subjects",
            str(info.samples),
        ]
        for name in maps:
            m = get_map(name)
            if info.emotions is None:
                known = all(m.mapping.get(e) for e in ("negative", "positive", "surprise"))
                cells.append(f"{info.samples} (classes not documented)" if known else "n/a")
                continue
            try:
                counts = Counter()
                for emotion, n in info.emotions.items():
                    label = m.label(emotion)
                    if label is not None:
                        counts[label] += n
            except LabelMapError:
                cells.append("n/a")
                continue
            per = "/".join(str(counts[lab]) for lab in m.labels)
            cells.append(f"{sum(counts.values())} ({per})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
