"""``edge-mer experiment demo``: the embedded default study, on synthetic data only.

Synthetic CASME II (200 fps) and SMIC-HS (100 fps, another camera look) are written, then
two studies run with ``cnn_lstm`` and ``cnn_transformer`` (INT8 on): LOSO on CASME II, and
CASME II -> SMIC-HS. Each prints the report: PyTorch, ONNX Runtime FP32 and INT8 side by
side, pooled over folds. About three minutes on two cores.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from edge_mer.errors import InputError

MARKER = ".edge-mer-experiment-demo"
SUBJECTS = 8
MODEL_CONFIG = (
    "{ input = { height = 64, width = 64, window = 12, fps = 50.0 }, pool = 4, "
    "feature_dim = 32, hidden = 32 }"
)
STUDY = """\
[study]
name = "{name}"
description = "edge-mer experiment demo: synthetic data, written by the demo"
[data]
casme2 = "data/casme2"
smic-hs = "data/smic-hs"
[protocol]
{protocol}
label_map = "megc3"
face = "none"
[[model]]
name = "cnn-lstm"
arch = "cnn_lstm"
config = {config}
[[model]]
name = "cnn-transformer"
arch = "cnn_transformer"
config = {config}
[train]
cnn_epochs = 6
head_epochs = 30
seeds = [0]
selection = "inner-val"
[deploy]
int8 = true
"""
PROTOCOLS = {
    "loso-casme2": 'kind = "loso"\ndataset = "casme2"',
    "casme2-to-smic-hs": 'kind = "cross"\ntrain = "casme2"\ntest = ["smic-hs"]',
}


def prepare(out: Path, force: bool) -> None:
    if out.exists():
        ours = (out / MARKER).exists()
        if not out.is_dir() or (any(out.iterdir()) and not ours):
            raise InputError(
                f"demo folder {str(out)!r} exists and was not made by the experiment demo: "
                "pass another --out"
            )
        if ours and not force:
            raise InputError(f"{str(out)!r} holds an earlier demo: pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by edge-mer experiment demo; safe to delete\n")


def write_studies(out: Path) -> list[Path]:
    paths = []
    for name, protocol in PROTOCOLS.items():
        path = out / f"{name}.toml"
        path.write_text(STUDY.format(name=name, protocol=protocol, config=MODEL_CONFIG))
        paths.append(path)
    return paths


def run_demo(
    out: Path,
    *,
    jobs: int = 2,
    force: bool = False,
    subjects: int = SUBJECTS,
    say: Callable[[str], None] | None = None,
) -> str:
    """Write the data and the two study files, run both, return both reports (Markdown)."""
    from edge_mer.calibration.synth_io import synthesize
    from edge_mer.convert.experiment.runner import RunOptions, run_study
    from edge_mer.convert.experiment.summary import write_report

    say = say or (lambda _m: None)
    prepare(out, force)
    say(f"writing synthetic CASME II and SMIC-HS ({subjects} subjects each)")
    synthesize(
        out / "data",
        layouts=("casme2", "smic-hs"),
        subjects=subjects,
        clips_per_emotion=3,
        size=(96, 96),
        seed=0,
    )
    reports = []
    for study in write_studies(out):
        target = out / study.stem
        say(f"study {study.name} -> {target}")
        run_study(
            study,
            RunOptions(out=target, jobs=jobs, cache=out / "cache"),
            say=say,
            on_job=lambda s, i, n: say(
                f"job {i}/{n} {s['key']}: {s['status']}"
                + (f" ({s.get('reason')})" if s["status"] != "done" else "")
            ),
        )
        reports.append(write_report(target, markdown=target / "report.md"))
    return "\n".join(reports)
