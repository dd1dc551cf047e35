"""Streams to score spotting on (:mod:`edge_mer.bench.spotting`), with their ground truth.

Synthetic streams of *unseen* subjects: a synthetic subject is fully determined by
``(seed, index)`` (:func:`~edge_mer.calibration.faces.make_subject`), and a training set
written by ``edge-mer synth --seed S --subjects N`` holds the subjects ``(S, 0..N-1)``
(``edge-mer demo`` uses seeds 0, 1000 and 2000, the seed itself for ``synthetic://``).
:data:`EVAL_SEED` is far from all of them, so its subjects are people no model here was
trained, calibrated or tested on; pass another seed for another set of people.
"""

from __future__ import annotations

import math

from edge_mer.bench.spotting import SpotStream, TruthEvent
from edge_mer.calibration.labels import MEGC3_WITH_BACKGROUND
from edge_mer.calibration.synth import generate_stream
from edge_mer.errors import InputError

__all__ = ["EVAL_SEED", "synthetic_streams"]

EVAL_SEED = 50_000


def _uri(seconds: float, fps: float, size: int, seed: int, subject: int, rate: float) -> str:
    return (
        f"synthetic://?seconds={seconds:g}&fps={fps:g}&size={size}x{size}&seed={seed}"
        f"&subject={subject}&micro_rate={rate:g}"
    )


def _stream(
    name: str,
    seconds: float,
    fps: float,
    size: int,
    seed: int,
    subject: int,
    rate: float,
    micro: bool,
) -> SpotStream:
    _, events = generate_stream(
        seconds=seconds,
        fps=fps,
        size=(size, size),
        seed=seed,
        subject_index=subject,
        micro_rate_hz=rate,
        micro=micro,
        lazy=True,  # the ground truth only: no frame is rendered here
    )
    truth = tuple(
        TruthEvent(e.onset_s, e.offset_s, e.kind, MEGC3_WITH_BACKGROUND.get(e.emotion))
        for e in events
    )
    uri = _uri(seconds, fps, size, seed, subject, rate) + ("" if micro else "&micro=false")
    return SpotStream(name, uri, truth, seconds, face="none", distractors_only=not micro)


def synthetic_streams(
    *,
    subjects: int = 5,
    seconds: float = 60.0,
    seed: int = EVAL_SEED,
    fps: float = 200.0,
    size: int = 128,
    micro_rate: float = 0.5,
    distractor_seconds: float = 60.0,
) -> list[SpotStream]:
    """One stream of ``seconds`` per subject ``(seed, 0..subjects-1)`` with micro- and
    macro-expressions, blinks, head drift and noise; then, if ``distractor_seconds`` > 0,
    one distractor-only stream of that length per subject (the same kind of stream without
    micro-expressions). Truth labels are the MEGC 3-class names (positive, negative,
    surprise)."""
    if not 1 <= subjects <= 1000:
        raise InputError(f"subjects={subjects!r}: must be 1-1000")
    for key, value in (("seconds", seconds), ("distractor_seconds", distractor_seconds)):
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"{key}={value!r}: must be >= 0 seconds")
    if seconds <= 0 and distractor_seconds <= 0:
        raise InputError("seconds and distractor_seconds are both 0: nothing to score")
    if not (math.isfinite(micro_rate) and micro_rate > 0):
        raise InputError(f"micro_rate={micro_rate!r}: must be > 0 per second")
    streams = []
    if seconds > 0:
        for i in range(subjects):
            streams.append(
                _stream(f"subject {seed}/{i}", seconds, fps, size, seed, i, micro_rate, True)
            )
    if distractor_seconds > 0:
        for i in range(subjects):
            streams.append(
                _stream(
                    f"subject {seed}/{i} distractors",
                    distractor_seconds,
                    fps,
                    size,
                    seed,
                    i,
                    micro_rate,
                    False,
                )
            )
    return streams
