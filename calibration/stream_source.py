"""``synthetic://`` frames: the generator's continuous stream, with its ground truth.

``synthetic://?seconds=10&fps=200&size=128x128&seed=0&subject=0&micro_rate=0.5&macro=true&micro=true&realtime=false&format=bgr``
(all optional; ``micro=false``: the same stream without its micro-expressions, distractors
only). Frames are uint8 BGR [H, W, 3], or with ``format=gray`` their OpenCV BGR->gray
conversion [H, W] (what ``picam://`` and ``csi://`` give a gray model); ``ts = seq / fps``;
``events`` lists the :class:`~edge_mer.calibration.synth.SynthEvent` ground truth (times in
the same seconds).
Finite (``live`` is False); ``realtime=true`` paces reads at ``fps`` like a camera.

Importing this module registers the scheme; :func:`edge_mer.pipeline.sources.make_source` imports
it lazily the first time a ``synthetic://`` URI is used (the core never imports calibration).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from edge_mer.calibration.synth import SynthEvent
from edge_mer.calibration.synth_stream import generate_stream
from edge_mer.errors import InputError
from edge_mer.pipeline.files import Pacer
from edge_mer.pipeline.sources import (
    Frame,
    SourceBase,
    SourceEnded,
    SourceSpec,
    register_scheme,
)

__all__ = ["SyntheticSource"]


class SyntheticSource(SourceBase):
    """A :func:`~edge_mer.calibration.synth.generate_stream` stream as a source."""

    OPTIONS = (
        "seconds",
        "fps",
        "size",
        "seed",
        "subject",
        "micro_rate",
        "macro",
        "micro",
        "realtime",
        "format",
    )

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        spec.check_options(self.OPTIONS)
        if spec.target not in ("", "/"):
            raise InputError(
                f"source {spec.uri!r}: synthetic:// takes only options, "
                "e.g. synthetic://?seconds=10&fps=200"
            )
        self.seconds = spec.get_float("seconds", 10.0)
        self._fps = spec.get_float("fps", 200.0)
        w, h = spec.get_size("size", (128, 128))  # type: ignore[misc]
        self.size = (h, w)  # generate_stream wants (height, width)
        self.seed = spec.get_int("seed", 0)
        self.subject = spec.get_int("subject", 0)
        try:
            self.micro_rate = float(spec.options.get("micro_rate", "0.5"))
        except ValueError:
            self.micro_rate = -1.0
        if not 0.0 <= self.micro_rate < 100.0:
            raise InputError(
                f"source {spec.uri!r}: option micro_rate={spec.options['micro_rate']!r} "
                "must be micro-expressions per second, >= 0"
            )
        self.macro = spec.get_bool("macro", True)
        self.micro = spec.get_bool("micro", True)
        self._pacer = Pacer() if spec.get_bool("realtime", False) else None
        self.format = spec.get_choice("format", "bgr", ("bgr", "gray"))
        self._cv2: Any = None
        if self.format == "gray":
            from edge_mer.pipeline.preprocess import import_cv2

            self._cv2 = import_cv2("synthetic://?format=gray")
        self._frames: Iterator[np.ndarray] | None = None
        self._index = 0
        # Built eagerly so a bad option fails here, and events are known before open().
        self._build()

    def _build(self) -> None:
        frames, events = generate_stream(
            seconds=self.seconds,  # type: ignore[arg-type]
            fps=self._fps,  # type: ignore[arg-type]
            size=self.size,
            seed=self.seed,  # type: ignore[arg-type]
            subject_index=self.subject,  # type: ignore[arg-type]
            micro_rate_hz=self.micro_rate,
            include_macro=self.macro,
            micro=self.micro,
            lazy=True,
        )
        self._frames, self._index = iter(frames), 0
        self.events: list[SynthEvent] = events
        self.frame_count = round(self.seconds * self._fps)  # type: ignore[operator]

    def _open(self) -> None:
        if self._frames is None:
            self._build()
        if self._pacer:
            self._pacer.reset()

    def read(self, timeout: float) -> Frame | None:
        if self._frames is None:
            raise SourceEnded(f"{self} is closed")
        ts = self._index / self._fps  # type: ignore[operator]
        if self._pacer and not self._pacer.wait(ts, timeout):
            return None
        image = next(self._frames, None)
        if image is None:
            raise SourceEnded(f"{self}: end of the synthetic stream ({self._index} frames)")
        self._index += 1
        if self._cv2 is not None:
            image = self._cv2.cvtColor(image, self._cv2.COLOR_BGR2GRAY)
        return Frame(self._next_seq(), ts, image)

    def _close(self) -> None:
        self._frames = None


register_scheme("synthetic", SyntheticSource)
