"""Studies run end to end on synthetic layouts, and their figures recompute from the files."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_mer.cli import app
from edge_mer.convert.experiment.runner import RunOptions, run_study
from tests.convert.experiment.conftest import TINY

USER_MODEL = '''
import torch
from torch import nn


class Ring(nn.Module):
    """A user's window model: a ring of the last 6 features, a Conv1d over it."""

    state_kind = "window"
    state_names = ["ring"]

    def __init__(self, cfg):
        super().__init__()
        self.labels = cfg["labels"]
        self.input_spec = {"height": 32, "width": 32, "channels": 1, "fps": 50.0, "window": 6}
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.conv = nn.Conv1d(8, 8, 6)
        self.head = nn.Linear(8, len(self.labels))

    def encode(self, frames):
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return self.cnn((x - 0.5) / 0.25)

    def init_state(self, batch):
        return (torch.zeros(batch, 6, 8),)

    def step(self, features, state):
        ring = torch.cat([state[0][:, 1:], features.unsqueeze(1)], dim=1)
        return self.head(torch.relu(self.conv(ring.transpose(1, 2))[:, :, 0])), (ring,)

    def forward(self, clip):
        n, t = clip.shape[:2]
        f = self.encode(clip.reshape(n * t, *clip.shape[2:])).reshape(n, t, -1)
        return self.head(torch.relu(self.conv(f[:, -6:].transpose(1, 2))[:, :, 0]))


def build(cfg):
    return Ring(cfg)
'''


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def _recompute(rows: list[dict[str, str]], labels: list[str]) -> dict:
    """UF1/UAR per (model, runtime, dataset, seed) with scikit-learn, from the CSV alone."""
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    recall = pytest.importorskip("sklearn.metrics").recall_score
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["runtime"], r["dataset"], r["seed"])].append(r)
    out = {}
    for key, grp in groups.items():
        truth = [r["label"] for r in grp]
        pred = [r["predicted"] for r in grp]
        present = [c for c in labels if c in truth]
        out[key] = (
            f1_score(truth, pred, labels=present, average="macro", zero_division=0),
            recall(truth, pred, labels=present, average="macro", zero_division=0),
        )
    return out


@pytest.fixture(scope="module")
def loso(tmp_path_factory: pytest.TempPathFactory, synthetic: Path) -> Path:
    """LOSO on synthetic CASME II: cnn_lstm, cnn_transformer and a user's factory model."""
    from tests.convert.experiment.conftest import study_text

    base = tmp_path_factory.mktemp("loso")
    (base / "ring.py").write_text(USER_MODEL)
    models = "".join(
        f'[[model]]\nname = "{n}"\narch = "{a}"\nconfig = {TINY}\n'
        for n, a in (("lstm", "cnn_lstm"), ("transformer", "cnn_transformer"))
    )
    models += '[[model]]\nname = "ring"\nfactory = "ring.py:build"\n'
    study = base / "study.toml"
    study.write_text(study_text(synthetic, models=models))
    res = CliRunner().invoke(app, ["experiment", "run", str(study), "--out", str(base / "out")])
    assert res.exit_code == 0, res.output
    return base / "out"


def test_every_job_finishes_and_every_runtime_scores_every_test_sample(loso: Path) -> None:
    results = json.loads((loso / "results.json").read_text())
    assert results["jobs"] == {
        "total": 12,
        "done": 12,
        "failed": [],
        "broken": [],
        "missing": [],
    }
    rows = _rows(loso)
    per = defaultdict(set)
    for r in rows:
        per[(r["model"], r["runtime"])].add(r["sample"])
    samples = per[("lstm", "pytorch")]
    assert len(samples) == 12  # 4 subjects x 3 megc3 classes x 1 clip
    assert set(per) == {
        (m, rt)
        for m in ("lstm", "transformer", "ring")
        for rt in ("pytorch", "onnxruntime-fp32", "onnxruntime-int8")
    }
    assert all(v == samples for v in per.values())


def test_reported_figures_equal_an_independent_recomputation(loso: Path) -> None:
    results = json.loads((loso / "results.json").read_text())
    again = _recompute(_rows(loso), results["labels"])
    checked = 0
    for entry in results["results"]:
        if entry["test"] == "all":
            continue
        for seed, s in entry["seeds"].items():
            uf1, uar = again[(entry["model"], entry["runtime"], entry["test"], seed)]
            assert s["uf1"] == pytest.approx(uf1) and s["uar"] == pytest.approx(uar)
            checked += 1
    assert checked == 9


def test_no_test_subject_trains_validates_or_calibrates(loso: Path) -> None:
    records = list(loso.glob("*/seed=*/fold=*/fold.json"))
    assert len(records) == 12
    for path in records:
        rec = json.loads(path.read_text())
        test = set(rec["fold"]["test_subjects"])
        assert test and {s["subject"] for s in rec["test_samples"]} == test
        assert not test & set(rec["fold"]["train_subjects"])
        assert not test & set(rec["fold"]["validation_subjects"])
        assert not test & set(rec["calibration_subjects"])
        assert rec["fold"]["validation_subjects"], "inner-val needs validation subjects"


def test_fp32_onnx_agrees_with_pytorch(loso: Path) -> None:
    rows = _rows(loso)
    pick = {(r["model"], r["sample"], r["runtime"]): r["predicted"] for r in rows}
    for (model, sample, runtime), pred in pick.items():
        if runtime == "onnxruntime-fp32":
            assert pred == pick[(model, sample, "pytorch")]


def test_the_report_has_the_papers_tables(loso: Path, tmp_path: Path) -> None:
    md, tex, table = tmp_path / "r.md", tmp_path / "r.tex", tmp_path / "r.csv"
    args = ["experiment", "report", str(loso), "--markdown", str(md)]
    res = CliRunner().invoke(app, [*args, "--latex", str(tex), "--csv", str(table)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "Model selection: the epoch with the best UF1 on each fold's validation" in text
    for heading in ("## PyTorch", "## ORT FP32", "## ORT INT8", "## Deployed accuracy"):
        assert heading in text
    assert "| transformer |" in text and "Jobs: 12 of 12 finished." in text
    assert r"\begin{tabular}" in tex.read_text()
    assert table.read_text().startswith("model,runtime,test")


def test_resume_skips_finished_jobs_and_a_removed_job_is_reported_then_redone(
    loso: Path, tmp_path: Path
) -> None:
    import shutil

    work = tmp_path / "out"
    shutil.copytree(loso, work)
    victim = next(work.glob("ring/seed=0/fold=*"))
    shutil.rmtree(victim)
    res = CliRunner().invoke(app, ["experiment", "report", str(work)])
    assert res.exit_code == 0 and f"missing: ring/seed=0/{victim.name}" in res.output
    before = {p: p.stat().st_mtime_ns for p in work.glob("*/seed=*/fold=*/DONE.json")}
    study = json.loads((work / "study.json").read_text())
    path = tmp_path / "study.toml"
    path.write_text((loso.parent / "study.toml").read_text())
    (tmp_path / "ring.py").write_text(USER_MODEL)
    assert study["digest"]
    res = CliRunner().invoke(app, ["experiment", "run", str(path), "--out", str(work), "--resume"])
    assert res.exit_code == 0, res.output
    after = {p: p.stat().st_mtime_ns for p in work.glob("*/seed=*/fold=*/DONE.json")}
    assert all(after[p] == t for p, t in before.items()), "finished jobs were recomputed"
    assert (victim / "DONE.json").exists()
    old = json.loads((loso / "results.json").read_text())
    new = json.loads((work / "results.json").read_text())
    assert new["results"] == old["results"] and new["folds"] == old["folds"]


def test_run_refuses_a_folder_of_another_study_and_a_rerun_without_resume(
    loso: Path, write_study, tmp_path: Path
) -> None:
    other = write_study(seeds="[3]")
    res = CliRunner().invoke(app, ["experiment", "run", str(other), "--out", str(loso)])
    assert res.exit_code == 2
    digest = json.loads((loso / "study.json").read_text())["digest"]
    assert f"digest {digest}" in res.output and "choose another --out" in res.output
    res = CliRunner().invoke(
        app, ["experiment", "run", str(loso.parent / "study.toml"), "--out", str(loso)]
    )
    assert res.exit_code == 2 and "pass --resume" in res.output


FAILING_TRAIN_FN = """
import torch
from edge_mer.convert.train import fit


def train(train, config, *, options=None, validation=None, factory=None, say=None):
    result = fit(train, config, options=options, validation=validation, factory=factory)
    if any(c.subject == "casme2/02" for c in train) and not any(
        c.subject == "casme2/01" for c in train
    ):
        with torch.no_grad():
            for p in result.model.parameters():
                p.fill_(float("nan"))
    return result
"""


def test_a_fold_that_fails_convert_is_recorded_and_the_others_go_on(
    synthetic: Path, tmp_path: Path
) -> None:
    from tests.convert.experiment.conftest import study_text

    (tmp_path / "nan.py").write_text(FAILING_TRAIN_FN)
    models = f'[[model]]\nname = "lstm"\narch = "cnn_lstm"\nconfig = {TINY}\n'
    models += 'train_fn = "nan.py:train"\n'
    study = tmp_path / "study.toml"
    study.write_text(study_text(synthetic, models=models, selection="fixed"))
    results = run_study(study, RunOptions(out=tmp_path / "out"))
    jobs = results["jobs"]
    assert jobs["done"] == 3 and [f["job"] for f in jobs["failed"]] == [
        "lstm/seed=0/fold=casme2_01"
    ]
    assert "NaN" in jobs["failed"][0]["reason"] or "finite" in jobs["failed"][0]["reason"]
    res = CliRunner().invoke(app, ["experiment", "report", str(tmp_path / "out")])
    assert "failed: lstm/seed=0/fold=casme2_01" in res.output


ARCHS = ("cnn_lstm", "cnn_gru", "cnn_attn_lstm", "cnn_transformer", "cnn_tcn")


def test_cross_dataset_with_every_registry_architecture(write_study, tmp_path: Path) -> None:
    models = "".join(f'[[model]]\nname = "{a}"\narch = "{a}"\nconfig = {TINY}\n' for a in ARCHS)
    study = write_study(
        protocol='kind = "cross"\ntrain = "casme2"\ntest = ["smic-hs"]\nfps = 25', models=models
    )
    results = run_study(study, RunOptions(out=tmp_path / "out", jobs=2))
    assert results["jobs"]["done"] == len(ARCHS), results["jobs"]
    rows = _rows(tmp_path / "out")
    assert {r["dataset"] for r in rows} == {"smic-hs"}
    assert {r["model"] for r in rows} == set(ARCHS)
    for rec_path in (tmp_path / "out").glob("*/*/*/fold.json"):
        rec = json.loads(rec_path.read_text())
        assert all(s.startswith("casme2/") for s in rec["fold"]["train_subjects"])
        assert all(s.startswith("smic-hs/") for s in rec["fold"]["test_subjects"])
    # protocol.fps = 25 resamples every dataset and every model to 25 fps.
    bundle = json.loads(next((tmp_path / "out").glob("*/*/*/bundle/manifest.json")).read_text())
    assert bundle["input"]["fps"] == 25.0
    assert {e["test"] for e in results["results"]} == {"smic-hs", "all"}


def test_megc2019_plans_68_folds_on_copies_of_the_official_layout(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    from edge_mer.convert.experiment.runner import plan
    from edge_mer.convert.experiment.study import load_study
    from tests.convert.experiment.conftest import study_text

    text = study_text(tmp_path, protocol='kind = "megc2019"')
    text = text.replace(
        "[data]\n", "[data]\n" + "".join(f'{k} = "{roots[k]}"\n' for k in ("samm",))
    )
    text = text.replace(f'casme2 = "{tmp_path / "casme2"}"', f'casme2 = "{roots["casme2"]}"')
    text = text.replace(f'smic-hs = "{tmp_path / "smic-hs"}"', f'smic-hs = "{roots["smic-hs"]}"')
    (tmp_path / "study.toml").write_text(text)
    p = plan(load_study(tmp_path / "study.toml"))
    assert len(p.folds) == 68 and len(p.samples) == 442 and not p.missing
    assert p.labels == ["negative", "positive", "surprise"]
    for f in p.folds:
        test = set(f.test_subjects)
        assert len(test) == 1 and not test & (set(f.train_subjects) | set(f.validation_subjects))


def test_a_dataset_root_the_readers_refuse_is_one_line(write_study, tmp_path: Path) -> None:
    path = write_study()
    empty = tmp_path / "empty"
    empty.mkdir()
    text = path.read_text()
    start = text.index('casme2 = "') + len('casme2 = "')
    end = text.index('"', start)
    path.write_text(text[:start] + str(empty) + text[end:])
    res = CliRunner().invoke(app, ["experiment", "run", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and str(empty) in res.output


def test_the_evaluation_window_ends_a_quarter_window_after_the_apex() -> None:
    from edge_mer.convert.experiment.fold import evaluation_window

    frames = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    w = evaluation_window(frames, {"onset": 5, "apex": 20, "offset": 30}, 8)
    assert w[:, 0, 0, 0].tolist() == list(range(15, 23))
    # No apex (SMIC): the onset/offset midpoint stands in for it.
    w = evaluation_window(frames, {"onset": 10, "apex": None, "offset": 30}, 8)
    assert w[-1, 0, 0, 0] == 22
    # A short clip is padded by repeating its last frame.
    w = evaluation_window(frames[:5], {"onset": 0, "apex": 2, "offset": 4}, 8)
    assert w[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
