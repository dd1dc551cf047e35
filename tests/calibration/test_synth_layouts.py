"""Synthetic copies in every dataset's layout, read back through the dataset readers."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_mer.calibration import synth, synth_io
from edge_mer.calibration.datasets import apply_map, read_dataset
from edge_mer.calibration.datasets.summary import check_copy, summarize
from edge_mer.calibration.faces import make_subject
from edge_mer.calibration.synth_domains import LOOKS
from edge_mer.calibration.synth_layouts import LAYOUTS, layout_clips, write_layout
from edge_mer.cli import app

SIZE = (32, 32)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("layouts")
    summary = synth_io.synthesize(
        out, layouts=tuple(LAYOUTS), subjects=1, clips_per_emotion=1, size=SIZE, seed=3
    )
    return summary["layouts"]


@pytest.mark.parametrize(
    ("name", "fps", "labels"),
    [
        ("casme2", 200.0, {"happiness": 1, "disgust": 1, "surprise": 1, "others": 1}),
        ("samm", 200.0, {"Happiness": 1, "Anger": 1, "Surprise": 1, "Other": 1}),
        ("smic-hs", 100.0, {"negative": 1, "positive": 1, "surprise": 1}),
        ("smic-vis", 25.0, {"negative": 1, "positive": 1, "surprise": 1}),
        ("smic-nir", 25.0, {"negative": 1, "positive": 1, "surprise": 1}),
    ],
)
def test_layout_reads_back_with_the_expected_counts(written, name, fps, labels) -> None:
    info = written[name]
    assert info["fps"] == fps and info["labels"] == labels
    copy = read_dataset(name, Path(info["root"]))
    assert dict(copy.emotions()) == labels
    assert len(copy.subjects) == 1 and all(isinstance(s, str) for s in copy.subjects)
    assert copy.fps == fps and {s.fps for s in copy.samples} == {fps}
    assert copy.problems == [] and check_copy(copy).ok
    assert sum(len(s.frame_paths) for s in copy.samples) == info["frames"]
    kept, dropped = apply_map(copy.samples, "megc3")
    assert len(kept) == 3 and len(dropped) == len(copy.samples) - 3
    assert any("synthetic" in n for n in summarize(copy)["notes"])
    if name.startswith("smic"):
        assert all(s.apex is None for s in copy.samples)
    else:  # coded apexes lie inside the marks
        assert all(s.onset <= s.apex <= s.offset for s in copy.samples if s.apex is not None)


def test_casme2_layout_is_the_existing_generator() -> None:
    kw = {"subjects": 2, "clips_per_emotion": 1, "fps": 25.0, "size": SIZE, "seed": 3}
    old = synth.iter_clips(**kw)
    new = layout_clips(LAYOUTS["casme2"], **kw)
    for a, (_si, _k, b) in itertools.islice(zip(old, new, strict=True), 5):
        assert (a.name, a.subject, a.emotion) == (b.name, b.subject, b.emotion)
        assert np.array_equal(a.frames, b.frames)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_by_seed(tmp_path) -> None:
    kw = {"subjects": 1, "clips_per_emotion": 1, "size": SIZE, "fps": 25.0}
    a = write_layout("smic-hs", tmp_path / "a", seed=5, **kw)
    b = write_layout("smic-hs", tmp_path / "b", seed=5, **kw)
    c = write_layout("smic-hs", tmp_path / "c", seed=6, **kw)
    assert _digest(Path(a["root"])) == _digest(Path(b["root"])) != _digest(Path(c["root"]))


def test_each_dataset_has_its_own_look(written) -> None:
    def apex_frame(name: str) -> np.ndarray:
        s = read_dataset(name, Path(written[name]["root"])).samples[0]
        i = s.apex_index if s.apex is not None else len(s.frame_paths) // 2
        return cv2.imread(str(s.frame_paths[i]), cv2.IMREAD_UNCHANGED)

    assert apex_frame("samm").ndim == 2 and apex_frame("smic-nir").ndim == 2  # gray JPEGs
    assert apex_frame("casme2").ndim == 3 and apex_frame("smic-hs").ndim == 3
    assert apex_frame("smic-hs").mean() < apex_frame("casme2").mean()  # darker
    subject = make_subject(0, 0)
    assert LOOKS["smic-hs"].subject(subject).face_width < subject.face_width
    img = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    assert LOOKS["casme2"].apply(img, np.random.default_rng(0)) is img


def test_cli_layouts(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "o"
    args = [
        "synth",
        "--out",
        out,
        "--layout",
        "smic-nir",
        "--subjects",
        "1",
        "--clips-per-emotion",
        "1",
        "--size",
        "32",
    ]
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    assert "wrote smic-nir: 3 clips" in r.output and not (out / "casme2").exists()
    assert (out / "smic-nir" / "NIR" / "s1" / "micro" / "surprise" / "s1_sur_01").is_dir()
    r = runner.invoke(app, ["synth", "--out", str(tmp_path / "p"), "--layout", "smic"])
    assert r.exit_code == 2 and "'smic'" in r.output and "smic-hs" in r.output
