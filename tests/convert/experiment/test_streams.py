"""``[train] streams = true``: each fold trains on its training subjects' streams, and only
theirs; the protocol's classes alone are scored; the spotter lands in the bundle."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_mer.cli import app
from edge_mer.convert.experiment import runner
from edge_mer.convert.experiment import streams as stream_cache
from edge_mer.convert.experiment.cache import CacheSpec
from edge_mer.convert.experiment.fold import run_fold
from edge_mer.convert.experiment.runner import RunOptions, plan, run_study
from edge_mer.convert.experiment.study import load_study
from tests.convert.experiment.conftest import study_text

LABELS = ["negative", "positive", "surprise"]  # megc3


@pytest.fixture(scope="module")
def with_streams(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic CASME II (4 subjects, 32x32) with an 8 s stream per subject."""
    from edge_mer.calibration.synth_io import synthesize

    out = tmp_path_factory.mktemp("streams-data")
    synthesize(
        out,
        layouts=("casme2",),
        subjects=4,
        clips_per_emotion=1,
        size=(32, 32),
        seed=0,
        subject_streams=8.0,
        subject_stream_fps=50.0,
    )
    synthesize(out, layouts=("smic-hs",), subjects=3, clips_per_emotion=1, size=(32, 32), seed=1)
    return out


def _study(data: Path, folder: Path, name: str = "study.toml", **kw: str) -> Path:
    kw.setdefault("extra", "streams = true")
    path = folder / name
    path.write_text(study_text(data, **kw))
    return path


@pytest.fixture(scope="module")
def loso(tmp_path_factory: pytest.TempPathFactory, with_streams: Path) -> Path:
    base = tmp_path_factory.mktemp("streams-loso")
    res = CliRunner().invoke(
        app, ["experiment", "run", str(_study(with_streams, base)), "--out", str(base / "out")]
    )
    assert res.exit_code == 0, res.output
    return base / "out"


def _jobs(out: Path) -> list[Path]:
    folders = sorted(p.parent for p in out.glob("*/seed=*/fold=*/DONE.json"))
    assert len(folders) == 4
    return folders


def test_each_fold_trains_on_its_training_subjects_streams_only(loso: Path) -> None:
    for folder in _jobs(loso):
        rec = json.loads((folder / "fold.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        fold = rec["fold"]
        used = metrics["streams"]["subjects"]
        # Every training subject has a stream here, so exactly the training subjects'.
        assert used == sorted(fold["train_subjects"]) == rec["stream_subjects"]
        assert not set(used) & set(fold["test_subjects"])
        assert not set(used) & set(fold["validation_subjects"]), "validation streams stay out"
        assert metrics["training"]["streams"] == len(used) == metrics["streams"]["streams"]
        assert metrics["streams"]["frames"] == 400 * len(used)  # 8 s at 50 fps each


def test_the_spotter_is_chosen_on_training_streams_and_lands_in_the_bundle(loso: Path) -> None:
    for folder in _jobs(loso):
        fold = json.loads((folder / "fold.json").read_text())["fold"]
        metrics = json.loads((folder / "metrics.json").read_text())
        manifest = json.loads((folder / "bundle" / "manifest.json").read_text())
        spotter = metrics["streams"]["spotter"]
        assert spotter is not None and spotter == manifest["spotter"]
        assert spotter["chosen_on"]["subjects"] == sorted(fold["train_subjects"])
        assert set(spotter["settings"]) >= {"threshold_on", "smoothing_frames"}


def test_only_the_protocols_classes_are_scored_and_no_sample_is_dropped(loso: Path) -> None:
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    recall = pytest.importorskip("sklearn.metrics").recall_score
    results = json.loads((loso / "results.json").read_text())
    assert results["labels"] == LABELS and results["jobs"]["done"] == 4
    extras = set()
    for folder in _jobs(loso):
        labels = json.loads((folder / "fold.json").read_text())["model_labels"]
        assert labels[:4] == [*LABELS, "none"] and set(labels[4:]) <= {"macro"}
        extras |= set(labels[3:])
    assert "macro" in extras, "the streams hold macro-expressions: a macro class is added"
    with open(loso / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for entry in results["results"]:
        if entry["test"] != "all":
            continue
        grp = [r for r in rows if r["model"] == entry["model"] and r["runtime"] == entry["runtime"]]
        assert len(grp) == 12  # every test sample once, whatever it was predicted as
        s = entry["seeds"]["0"]
        assert len(s["confusion"]) == 3 and all(len(r) == 3 for r in s["confusion"])
        inside = sum(map(sum, s["confusion"]))
        outside = sum(sum(v) for v in s["outside"].values())
        assert inside + outside == s["n"] == 12
        assert set(s["outside"]) <= extras
        truth, pred = [r["label"] for r in grp], [r["predicted"] for r in grp]
        assert outside == sum(p not in LABELS for p in pred)
        assert s["uf1"] == pytest.approx(f1_score(truth, pred, labels=LABELS, average="macro"))
        assert s["uar"] == pytest.approx(recall(truth, pred, labels=LABELS, average="macro"))
    res = CliRunner().invoke(app, ["experiment", "report", str(loso)])
    assert res.exit_code == 0 and "lstm" in res.output, res.output
    n_out = sum(r["predicted"] not in LABELS for r in rows if r["runtime"] == "pytorch")
    text = " ".join(res.output.split())
    assert f"counts as a miss of its true class (ORT FP32 {n_fp32(rows)} of 12" in text
    assert f"PyTorch {n_out} of 12)" in text


def test_a_test_subjects_stream_reaching_training_fails_the_job(
    with_streams: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted bug: the selection hands every stream to training, the test subject's
    included; the check on what reaches fit stops the job before it trains."""

    def every_stream(fold, reader, labels, label_map):
        return [reader.load(f, n, e, lambda _e: None) for f, n, e in reader.entries]

    def in_process(jobs, context, **_kw):
        return iter([run_fold(jobs[0], context)])  # spawned workers would not see the plant

    monkeypatch.setattr(stream_cache, "fold_streams", every_stream)
    monkeypatch.setattr(runner, "run_jobs", in_process)
    results = run_study(_study(with_streams, tmp_path), RunOptions(out=tmp_path / "out"))
    (failed,) = results["jobs"]["failed"]
    assert failed["job"] == "lstm/seed=0/fold=casme2_01"
    assert "reached training but are not its training subjects" in failed["reason"]
    assert "test subjects ['casme2/01']" in failed["reason"]
    folder = tmp_path / "out" / "lstm" / "seed=0" / "fold=casme2_01"
    assert sorted(p.name for p in folder.iterdir()) == ["FAILED.json"]


def n_fp32(rows: list[dict[str, str]]) -> int:
    return sum(r["predicted"] not in LABELS for r in rows if r["runtime"] == "onnxruntime-fp32")


def _one_line(study: Path) -> str:
    res = CliRunner().invoke(
        app, ["experiment", "run", str(study), "--out", str(study.parent / "o")]
    )
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert not (study.parent / "o").exists(), "refused before anything is written"
    return lines[0]


def test_a_dataset_without_streams_is_one_line(synthetic: Path, tmp_path: Path) -> None:
    line = _one_line(_study(synthetic, tmp_path))
    assert f"the casme2 root {str(synthetic / 'casme2')!r} has no streams/ folder" in line
    assert "streams = false" in line


def _copy_with_streams(src: Path, dst: Path, edit: tuple[str, str, str]) -> Path:
    shutil.copytree(src / "casme2", dst / "casme2")
    shutil.copytree(src / "smic-hs", dst / "smic-hs")
    name, old, new = edit
    path = dst / "casme2" / "streams" / name
    path.write_text(path.read_text().replace(old, new))
    return dst


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("streams.csv", ",0,", ",x,"), "streams.csv' row 2: 'x' is not an integer"),
        (("streams.csv", "csv,0", "csv,9"), "none of the 4 streams"),
        (("sub01.events.csv", "micro,disgust", "micro,disgustt"), "emotion 'disgustt' is not"),
    ],
)
def test_unusable_streams_are_one_line_before_any_job(
    with_streams: Path, tmp_path: Path, edit: tuple[str, str, str], expected: str
) -> None:
    data = _copy_with_streams(with_streams, tmp_path / "data", edit)
    assert expected in _one_line(_study(data, tmp_path))


def test_a_train_fn_without_streams_is_refused_before_any_job(
    with_streams: Path, tmp_path: Path
) -> None:
    (tmp_path / "mine.py").write_text(
        "def train(train, config, *, options, validation, factory):\n    raise SystemExit\n"
    )
    models = '[[model]]\nname = "m"\narch = "cnn_lstm"\ntrain_fn = "mine.py:train"\n'
    line = _one_line(_study(with_streams, tmp_path, models=models))
    assert "takes no 'streams' argument" in line and "mine.py:train" in line


def test_cross_reads_the_training_datasets_streams_only(with_streams: Path, tmp_path: Path):
    protocol = 'kind = "cross"\ntrain = "casme2"\ntest = ["smic-hs"]'
    p = plan(load_study(_study(with_streams, tmp_path, protocol=protocol)))
    assert p.streams == {"casme2": ["casme2/01", "casme2/02", "casme2/03", "casme2/04"]}


def test_stream_subjects_are_keyed_as_the_readers_key_clips() -> None:
    key = stream_cache.subject_key
    assert key("casme2", "1") == key("casme2", "sub01") == key("casme2", " 01 ") == "casme2/01"
    assert key("samm", "6") == "samm/006" and key("samm", "006") == "samm/006"
    assert key("smic-hs", "s3") == "smic-hs/s3" and key("casme3", " spNO.1") == "casme3/spNO.1"


def test_the_stream_cache_is_reused_and_rebuilds_a_changed_stream(
    with_streams: Path, tmp_path: Path
) -> None:
    data = _copy_with_streams(with_streams, tmp_path / "data", ("streams.csv", "", ""))
    root = data / "casme2"
    spec = CacheSpec(32, 32, 1, 25.0, "none")
    folder = stream_cache.build(tmp_path / "cache", "casme2", root, spec)
    index = json.loads((folder / "index.json").read_text())["streams"]
    assert sorted(index) == ["sub01", "sub02", "sub03", "sub04"]
    assert all(e["frames"] == 200 for e in index.values())  # 8 s resampled to 25 fps
    stamps = {n: (folder / e["file"]).stat().st_mtime_ns for n, e in index.items()}
    assert stream_cache.build(tmp_path / "cache", "casme2", root, spec) == folder
    events = root / "streams" / "sub02.events.csv"
    events.write_text(events.read_text().replace("micro,", "macro,"))
    stream_cache.build(tmp_path / "cache", "casme2", root, spec)
    again = json.loads((folder / "index.json").read_text())["streams"]
    changed = [n for n, e in again.items() if (folder / e["file"]).stat().st_mtime_ns != stamps[n]]
    assert changed == ["sub02"]
    reader = stream_cache.StreamReader([folder])
    f, n, e = next(x for x in reader.entries if x[1] == "sub02")
    s = reader.load(f, n, e, lambda emotion: emotion)
    assert s.subject == "casme2/02" and s.frames.shape == (200, 32, 32, 1)
    assert {ev.kind for ev in s.events} == {"macro", "blink"}  # the edited events


def _job_folder(folder: Path, predicted: list[str], model_labels: list[str] | None) -> Path:
    folder.mkdir(parents=True)
    truth = ["negative", "negative", "positive", "surprise", "surprise", "positive"]
    ids = [f"casme2/0{i % 2 + 1}/c{i}" for i in range(len(truth))]
    record = {
        "fold": {"id": "f"},
        "test_samples": [
            {"sample": s, "dataset": "casme2", "subject": s.rsplit("/", 1)[0], "label": t}
            for s, t in zip(ids, truth, strict=True)
        ],
    }
    if model_labels is not None:
        record["model_labels"] = model_labels
    (folder / "fold.json").write_text(json.dumps(record))
    pairs = zip(ids, predicted, strict=True)
    lines = ["sample,runtime,predicted"] + [f"{s},pytorch,{p}" for s, p in pairs]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_a_prediction_of_the_extra_classes_is_a_miss_never_dropped(tmp_path: Path) -> None:
    from edge_mer.convert.experiment.results import BrokenJob, job_rows, pooled

    predicted = ["negative", "none", "positive", "macro", "surprise", "none"]
    extra = [*LABELS, "none", "macro"]
    rows = job_rows(_job_folder(tmp_path / "a", predicted, extra), "m", 0, "loso", LABELS)
    s = pooled(rows, LABELS)
    # negative: 1 of 2 (a miss to none); positive 1 of 2 (none); surprise 1 of 2 (macro).
    assert s["n"] == 6 and s["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert s["outside"] == {"macro": [0, 0, 1], "none": [1, 1, 0]}
    assert s["uar"] == pytest.approx(0.5) and s["war"] == pytest.approx(0.5)
    assert s["uf1"] == pytest.approx(2 / 3)  # each class: 2 TP / (2 TP + 0 FP + 1 FN)
    # A job without model_labels (before streams) or a class the model has not: broken.
    with pytest.raises(BrokenJob, match="predicts 'none'"):
        job_rows(_job_folder(tmp_path / "b", predicted, None), "m", 0, "loso", LABELS)
    with pytest.raises(BrokenJob, match="predicts 'macro'"):
        job_rows(_job_folder(tmp_path / "c", predicted, [*LABELS, "none"]), "m", 0, "loso", LABELS)


def test_a_jobs_own_stream_cache_gives_the_shared_caches_streams(
    with_streams: Path, tmp_path: Path
) -> None:
    """Frame cache off (benchmarks): each job decodes its streams itself, to the same data."""
    import numpy as np

    from edge_mer.convert.experiment.backends import Context
    from edge_mer.convert.experiment.fold import _streams

    study = load_study(_study(with_streams, tmp_path))
    p = plan(study)
    job = p.jobs[0]
    private = {"specs": p.specs, "roots": {k: str(v) for k, v in study.data.items()}}
    own = Context("x:y", str(tmp_path), options={"private_cache": private})
    shared = Context(
        "x:y",
        str(tmp_path),
        options={"stream_caches": runner.build_stream_caches(p, tmp_path / "c", 1, print)},
    )
    labels = [*LABELS, "none"]
    (tmp_path / "w").mkdir()
    a, rec = _streams(job, own, study, labels, tmp_path / "w")
    b, _ = _streams(job, shared, study, labels, tmp_path)
    assert rec["subjects"] == sorted(job.fold.train_subjects) == [s.subject for s in b]
    for x, y in zip(a, b, strict=True):
        assert x.name == y.name and x.events == y.events and np.array_equal(x.frames, y.frames)
    assert {e.label for s in a for e in s.events if e.kind == "micro"} <= set(LABELS)
