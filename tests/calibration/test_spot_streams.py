"""Synthetic streams of unseen subjects for spotting evaluation."""

from __future__ import annotations

import pytest

from edge_mer.calibration.faces import make_subject
from edge_mer.calibration.spot_streams import EVAL_SEED, synthetic_streams
from edge_mer.calibration.synth import generate_stream
from edge_mer.errors import InputError
from edge_mer.pipeline.sources import make_source


def test_streams_truth_and_uris() -> None:
    streams = synthetic_streams(subjects=2, seconds=6.0, fps=50.0, size=48, distractor_seconds=4)
    assert [s.name for s in streams] == [
        f"subject {EVAL_SEED}/0",
        f"subject {EVAL_SEED}/1",
        f"subject {EVAL_SEED}/0 distractors",
        f"subject {EVAL_SEED}/1 distractors",
    ]
    assert [s.seconds for s in streams] == [6.0, 6.0, 4.0, 4.0]
    _, events = generate_stream(seconds=6.0, fps=50.0, size=(48, 48), seed=EVAL_SEED)
    first = streams[0]
    assert [(t.onset_s, t.offset_s, t.kind) for t in first.truth] == [
        (e.onset_s, e.offset_s, e.kind) for e in events
    ]
    assert {t.label for t in first.truth} <= {"positive", "negative", "surprise"}
    for s in streams:
        source = make_source(s.uri)  # the URI the pipeline opens gives the same ground truth
        assert [(e.onset_s, e.kind) for e in source.events] == [
            (t.onset_s, t.kind) for t in s.truth
        ]
        assert s.distractors_only == all(t.kind == "macro" for t in s.truth)
        assert s.face == "none"


def test_eval_subjects_are_not_training_subjects() -> None:
    # `edge-mer synth` trains on (seed, 0..N-1) for small seeds; the demo uses 0, 1000, 2000.
    trained = {make_subject(seed, i) for seed in (0, 1, 2, 1000, 2000) for i in range(16)}
    unseen = {make_subject(EVAL_SEED, i) for i in range(5)}
    strip = lambda s: {k: v for k, v in vars(s).items() if k not in ("id", "seed", "index")}  # noqa: E731
    assert not any(strip(u) == strip(t) for u in unseen for t in trained)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"subjects": 0}, "subjects=0"),
        ({"seconds": -1.0}, "seconds=-1.0"),
        ({"seconds": 0.0, "distractor_seconds": 0.0}, "nothing to score"),
        ({"micro_rate": 0.0}, "micro_rate=0.0"),
        ({"fps": 5.0}, "fps=5.0"),
    ],
)
def test_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        synthetic_streams(**kwargs)
