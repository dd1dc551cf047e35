"""The synthetic clip generator: real files written and read back with OpenCV and csv."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edge_mer.calibration import synth, synth_io
from edge_mer.calibration.face_render import render_face
from edge_mer.calibration.faces import FaceState, make_subject
from edge_mer.cli.synth_cmd import synth as synth_command
from edge_mer.errors import InputError

SIZE = (64, 64)
FPS = 100.0


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def casme_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "casme2"
    calls: list[tuple[int, int, str]] = []
    out = synth_io.write_casme2(
        root,
        subjects=2,
        clips_per_emotion=1,
        fps=FPS,
        size=SIZE,
        seed=7,
        progress=lambda d, t, w: calls.append((d, t, w)),
    )
    assert out == root
    assert [c[:2] for c in calls] == [(i, 8) for i in range(1, 9)]
    return root


def test_casme2_layout_and_sheet(casme_root: Path) -> None:
    header, rows = _read_csv(casme_root / "CASME2-coding.csv")
    assert header == [
        "Subject",
        "Filename",
        "OnsetFrame",
        "ApexFrame",
        "OffsetFrame",
        "Action Units",
        "Estimated Emotion",
    ]
    assert len(rows) == 8
    assert {r["Subject"] for r in rows} == {"01", "02"}
    assert sorted(r["Estimated Emotion"] for r in rows) == sorted(synth.EMOTIONS * 2)
    aus = {"happiness": "12", "disgust": "4+9", "surprise": "1+2+26", "others": ""}
    readme = (casme_root / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "fps: 100" in readme
    assert not list(casme_root.glob(".*tmp"))
    for r in rows:
        assert r["Filename"].startswith("EP") and len(r["Filename"]) == 7
        folder = casme_root / f"sub{r['Subject']}" / r["Filename"]
        numbers = sorted(int(p.stem[3:]) for p in folder.glob("img*.jpg"))
        n = len(numbers)
        assert numbers == list(range(1, n + 1))
        onset, apex, offset = (int(r[k]) for k in ("OnsetFrame", "ApexFrame", "OffsetFrame"))
        assert r["Action Units"] == aus[r["Estimated Emotion"]]
        if r["Estimated Emotion"] == "others":
            assert (onset, apex, offset) == (1, (n + 1) // 2, n)
        else:
            assert 1 < onset < apex < offset < n  # neutral lead-in and tail around the event
            assert (offset - onset) / FPS >= 0.04 and (offset - onset + 1) / FPS <= 0.5
        img = cv2.imread(str(folder / f"img{offset}.jpg"))
        assert img is not None and img.shape == (*SIZE, 3) and img.dtype == np.uint8


def test_jpeg_frames_match_the_clip(casme_root: Path) -> None:
    clip = next(synth.iter_clips(subjects=1, clips_per_emotion=1, fps=FPS, size=SIZE, seed=7))
    folder = casme_root / "sub01" / clip.name
    assert len(list(folder.glob("img*.jpg"))) == len(clip.frames)
    img = cv2.imread(str(folder / "img3.jpg")).astype(np.int16)
    assert np.abs(img - clip.frames[2]).mean() < 3.0  # JPEG quality 95


def test_same_seed_same_bytes_other_seed_differs() -> None:
    def clips(seed: int) -> list[synth.SynthClip]:
        return list(
            synth.iter_clips(
                subjects=1,
                clips_per_emotion=1,
                fps=FPS,
                size=SIZE,
                seed=seed,
                emotions=("happiness", "others"),
            )
        )

    a, b, c = clips(3), clips(3), clips(4)
    for x, y in zip(a, b, strict=True):
        assert x.frames.dtype == np.uint8 and x.frames.shape[1:] == (*SIZE, 3)
        assert np.array_equal(x.frames, y.frames) and x.event == y.event
    assert a[0].frames.shape != c[0].frames.shape or not np.array_equal(a[0].frames, c[0].frames)
    # A subset of emotions gives the same clips: each depends on (seed, subject, emotion, n).
    alone = list(
        synth.iter_clips(
            subjects=1, clips_per_emotion=1, fps=FPS, size=SIZE, seed=3, emotions=("others",)
        )
    )
    assert np.array_equal(alone[0].frames, a[1].frames)


def test_subjects_look_different() -> None:
    faces = [render_face(make_subject(0, i), SIZE) for i in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(faces[i] - faces[j]).mean() > 5.0
    s0, s1 = make_subject(0, 0), make_subject(0, 1)
    assert (s0.face_width, s0.skin, s0.center) != (s1.face_width, s1.skin, s1.center)
    assert make_subject(0, 1) == s1 and s1.id == "02"


def _region_change(emotion: str, subject_index: int) -> dict[str, float]:
    subject = make_subject(11, subject_index)
    clip = synth.render_clip(
        subject, emotion, fps=FPS, size=SIZE, rng=subject_index, distractors=False
    )
    e = clip.event
    assert e is not None
    d = np.abs(clip.frames[e.apex].astype(np.float32) - clip.frames[e.onset])
    return {
        k: float(d[y0:y1, x0:x1].mean()) for k, (y0, y1, x0, x1) in subject.regions(SIZE).items()
    }


@pytest.mark.parametrize("subject_index", [0, 1, 2])
def test_action_units_move_the_right_regions(subject_index: int) -> None:
    happy = _region_change("happiness", subject_index)
    disgust = _region_change("disgust", subject_index)
    surprise = _region_change("surprise", subject_index)
    # AU12 moves the mouth and leaves the brows alone.
    assert happy["mouth"] > 0.5 and happy["mouth"] > 5 * happy["brows"]
    # AU4+AU9 moves brows and nose more than AU12 does, and the nose more than the mouth.
    assert disgust["brows"] > happy["brows"] + 0.5
    assert disgust["nose"] > disgust["mouth"] and disgust["nose"] > happy["nose"]
    # AU1+2+26 moves brows and mouth, not the nose.
    assert surprise["brows"] > 0.5 and surprise["brows"] > 5 * surprise["nose"]
    assert surprise["mouth"] > 0.5 and surprise["mouth"] > 5 * surprise["nose"]


def test_clip_profile_is_onset_apex_offset() -> None:
    subject = make_subject(0, 0)
    clip = synth.render_clip(subject, "surprise", fps=200.0, size=SIZE, rng=5, distractors=False)
    e = clip.event
    diff = np.abs(clip.frames.astype(np.float32) - clip.frames[0]).mean(axis=(1, 2, 3))
    assert diff[: e.onset + 1].max() == 0.0 and diff[e.offset :].max() == 0.0  # neutral outside
    assert diff[e.apex] == diff.max() > 0.3
    # Rises, then falls: the smooth profile has no frame-to-frame jumps.
    assert np.all(np.diff(diff[e.onset : e.apex + 1]) >= -0.02)
    assert np.all(np.diff(diff[e.apex : e.offset + 1]) <= 0.02)
    assert np.abs(np.diff(diff)).max() < 0.35 * diff.max()


def test_subpixel_motion_is_smooth() -> None:
    subject = make_subject(1, 0)
    base = render_face(subject, SIZE)
    shifts = [0.25, 0.5, 0.75, 1.0]
    d = [
        np.abs(render_face(subject, SIZE, FaceState(shift=(s, 0.0))) - base).mean() for s in shifts
    ]
    assert all(a < b for a, b in itertools.pairwise(d))
    assert d[0] > 0.15 * d[-1]  # a quarter pixel already changes the image, not a step at 0.5


def test_distractors_blink_drift_noise() -> None:
    subject = make_subject(2, 1)
    clips = [synth.render_clip(subject, "others", fps=FPS, size=SIZE, rng=i) for i in range(6)]
    assert all(c.event is None and c.emotion == "others" for c in clips)
    eyes = subject.regions(SIZE)["eyes"]
    blinked = 0
    for c in clips:
        f = c.frames.astype(np.float32)
        frame_to_frame = np.abs(np.diff(f, axis=0)).mean()
        assert frame_to_frame > 0.5  # sensor noise in every frame
        y0, y1, x0, x1 = eyes
        eye_change = np.abs(f[:, y0:y1, x0:x1] - f[0, y0:y1, x0:x1]).mean(axis=(1, 2, 3))
        blinked += eye_change.max() > 8.0
    assert blinked >= 2
    clean = synth.render_clip(subject, "others", fps=FPS, size=SIZE, rng=0, distractors=False)
    assert np.ptp(clean.frames.astype(np.int16), axis=0).max() == 0


def test_macro_clip_is_long_and_large() -> None:
    subject = make_subject(0, 3)
    micro = synth.render_clip(subject, "happiness", fps=FPS, size=SIZE, rng=1)
    macro = synth.render_clip(subject, "happiness", fps=FPS, size=SIZE, rng=1, kind="macro")
    assert macro.event.kind == "macro" and macro.event.duration_s > 0.5
    assert micro.event.kind == "micro" and micro.event.duration_s <= 0.5
    assert macro.event.amplitude_px > micro.event.amplitude_px


def test_stream_events_and_lazy_frames() -> None:
    frames, events = synth.generate_stream(
        seconds=12.0, fps=50.0, size=SIZE, seed=1, micro_rate_hz=1.0, lazy=True
    )
    assert not isinstance(frames, np.ndarray)
    kinds = [e.kind for e in events]
    assert kinds.count("micro") >= 3 and "macro" in kinds
    for e in events:
        d = (e.offset - e.onset) / 50.0
        assert (0.04 <= d <= 0.5) if e.kind == "micro" else d > 0.5
        assert e.onset < e.apex < e.offset < 600 and e.aus == synth.EMOTION_AUS[e.emotion]
        assert e.onset_s == e.onset / 50.0
    for a, b in itertools.pairwise(events):
        assert b.onset_s - a.offset_s >= 0.5
    first = next(frames)
    eager, again = synth.generate_stream(
        seconds=12.0, fps=50.0, size=SIZE, seed=1, micro_rate_hz=1.0, lazy=False
    )
    assert eager.shape == (600, *SIZE, 3) and again == events
    assert np.array_equal(first, eager[0])


def test_stream_without_micro_is_the_same_stream_minus_its_micro_expressions() -> None:
    kw = {"seconds": 8.0, "fps": 25.0, "size": (32, 32), "seed": 5, "micro_rate_hz": 1.0}
    full, events = synth.generate_stream(**kw, lazy=False)
    only, distractors = synth.generate_stream(**kw, micro=False, lazy=False)
    micro = [e for e in events if e.kind == "micro"]
    assert micro and distractors == [e for e in events if e.kind == "macro"] and distractors
    inside = np.zeros(len(full), bool)
    for e in micro:
        inside[e.onset + 1 : e.offset] = True  # intensity is 0 at onset and offset
    diff = np.abs(full.astype(np.int16) - only).reshape(len(full), -1).max(1)
    # Outside the micro-expressions only the sensor noise draws can differ (none here:
    # the noise follows the frame order, which is the same); inside, the face moves.
    assert diff[~inside].max() == 0 and (diff[inside] > 0).mean() > 0.5


def test_videos_and_stream_files(tmp_path: Path) -> None:
    root = synth_io.write_videos(
        tmp_path / "videos",
        subjects=1,
        clips_per_emotion=1,
        fps=FPS,
        size=SIZE,
        seed=2,
        emotions=("surprise", "others"),
    )
    header, rows = _read_csv(root / "labels.csv")
    assert header == list(synth_io.LABEL_COLUMNS) and len(rows) == 2
    clips = list(
        synth.iter_clips(
            subjects=1,
            clips_per_emotion=1,
            fps=FPS,
            size=SIZE,
            seed=2,
            emotions=("surprise", "others"),
        )
    )
    for row, clip in zip(rows, clips, strict=True):
        cap = cv2.VideoCapture(str(root / row["file"]))
        assert cap.isOpened()
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (*SIZE, 3)
            n += 1
        cap.release()
        assert n == len(clip.frames) and float(row["fps"]) == FPS
        assert int(row["offset_frame"]) == (clip.event.offset if clip.event else n - 1)

    video, events_path = synth_io.write_stream(
        tmp_path / "s" / "live.avi", seconds=4.0, fps=50.0, size=SIZE, seed=4, micro_rate_hz=1.0
    )
    assert events_path == tmp_path / "s" / "live.events.csv"
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 200
    cap.release()
    header, rows = _read_csv(events_path)
    assert header == list(synth_io.EVENT_COLUMNS) and rows
    _, expected = synth.generate_stream(seconds=4.0, fps=50.0, size=SIZE, seed=4, micro_rate_hz=1.0)
    assert [int(r["apex_frame"]) for r in rows] == [e.apex for e in expected]
    assert [r["kind"] for r in rows] == [e.kind for e in expected]


def test_bad_arguments_are_input_errors() -> None:
    subject = make_subject(0, 0)
    with pytest.raises(InputError, match="anger"):
        synth.render_clip(subject, "anger")
    with pytest.raises(InputError, match="fps"):
        synth.render_clip(subject, "happiness", fps=5.0)
    with pytest.raises(InputError, match="size"):
        synth.render_clip(subject, "happiness", size=(16, 16))
    with pytest.raises(InputError, match="subjects"):
        list(synth.iter_clips(subjects=0))


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("synth")(synth_command)
    return app


def test_cli_writes_refuses_and_validates(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    args = [
        "--out",
        str(out),
        "--subjects",
        "1",
        "--clips-per-emotion",
        "1",
        "--fps",
        "50",
        "--size",
        "48",
        "--stream-seconds",
        "2",
    ]
    result = runner.invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert "4 clips" in result.output
    _, rows = _read_csv(out / "casme2" / "CASME2-coding.csv")
    assert len(rows) == 4 and (out / "stream.avi").is_file()
    assert (out / "stream.events.csv").is_file() and not (out / "videos").exists()

    result = runner.invoke(_cli(), args)
    assert result.exit_code == 2 and "--force" in result.output
    assert runner.invoke(_cli(), [*args, "--force"]).exit_code == 0

    for bad, option in (
        (["--fps", "0"], "--fps"),
        (["--subjects", "0"], "--subjects"),
        (["--size", "16"], "--size"),
    ):
        result = runner.invoke(_cli(), ["--out", str(tmp_path / "new"), *bad])
        assert result.exit_code == 2 and option in result.output, result.output
    assert not (tmp_path / "new").exists()
