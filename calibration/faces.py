"""Procedural faces for synthetic micro-expression clips.

A :class:`Subject` is one synthetic person: face geometry, skin tone, hair, background and
lighting, all drawn from a per-subject RNG by :func:`make_subject`.
:func:`~edge_mer.calibration.face_render.render_face`
draws that subject in one :class:`FaceState` (action-unit intensities, eye openness, head
shift) as a float32 BGR image.

Coordinates are pixels of the output frame: x right, y down, pixel centres at integers.
Every shape is a soft mask whose edge covers a pixel in proportion to the area inside it,
so moving a feature by 0.3 px changes the pixels by a fraction of a level-step: the 1-5 px
action-unit motions come out smooth instead of jumping from pixel to pixel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FaceState", "Subject", "make_subject"]

_SUBJECT_SALT = 0x5EED_FACE


@dataclass(frozen=True)
class Subject:
    """One synthetic person. Geometry is relative to the frame, so any size renders.

    Lengths are fractions of ``s = min(H, W)`` or of the face's semi-axes; colours are
    BGR in 0-255. Frozen and hashable: renderers cache per (subject, size).
    """

    id: str  # two digits, "01" for index 0, as CASME II writes subjects
    seed: int
    index: int
    center: tuple[float, float]  # face centre as fractions of (W, H)
    face_width: float  # horizontal semi-axis / s
    face_aspect: float  # vertical / horizontal semi-axis
    eye_height: float  # eye line above the face centre, / vertical semi-axis
    eye_spacing: float  # eye centre from the midline, / horizontal semi-axis
    eye_width: float  # eye horizontal semi-axis, / horizontal semi-axis
    eye_aspect: float  # eye vertical / horizontal semi-axis
    brow_height: float  # brow above the eye's top, / vertical semi-axis
    brow_thickness: float  # / s
    brow_arch: float  # / vertical semi-axis
    nose_length: float  # eye line to nose tip, / vertical semi-axis
    nose_width: float  # half width, / horizontal semi-axis
    mouth_position: float  # fraction of the way from nose tip to chin
    mouth_width: float  # half width, / horizontal semi-axis
    lip_thickness: float  # / s
    mouth_curve: float  # centre of the lip seam below the corners, / s (negative: smiling)
    hairline: float  # fringe edge above the face centre, / vertical semi-axis
    skin: tuple[float, float, float]
    lips: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    background: tuple[float, float, float]
    background_gradient: float  # top-to-bottom brightness change of the background
    light_angle: float  # radians, direction the light comes from
    light_strength: float  # brightness change across the frame
    face_shading: float  # darkening towards the face outline
    noise_sigma: float  # sensor noise, grey levels (standard deviation)

    def regions(self, size: tuple[int, int]) -> dict[str, tuple[int, int, int, int]]:
        """Boxes ``(y0, y1, x0, x1)`` (half-open) of ``brows``, ``eyes``, ``nose``, ``mouth``
        in the neutral, unshifted pose at frame ``size`` (H, W); clipped to the frame."""
        from edge_mer.calibration.face_render import _regions

        return dict(_regions(self, int(size[0]), int(size[1])))


@dataclass(frozen=True)
class FaceState:
    """What changes from frame to frame.

    ``aus`` maps action-unit numbers ("1", "2", "4", "9", "12", "26") to intensities in
    [0, 1]; ``amplitude`` is the displacement in pixels at intensity 1. ``eye_open`` is 1
    for open eyes and 0 for closed (a blink). ``shift`` is the head's (dx, dy) in pixels.
    """

    aus: Mapping[str, float] = field(default_factory=dict)
    amplitude: float = 0.0
    eye_open: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)


NEUTRAL = FaceState()


def make_subject(seed: int, index: int) -> Subject:
    """The ``index``-th synthetic subject of ``seed`` (both non-negative); deterministic."""
    rng = np.random.default_rng([seed, index, _SUBJECT_SALT])
    u = rng.uniform
    tones = np.array([[196, 212, 242], [122, 152, 204], [62, 84, 122]], np.float64)
    t = u(0.0, 2.0)
    i = min(int(t), 1)
    skin = tones[i] + (t - i) * (tones[i + 1] - tones[i]) + rng.normal(0.0, 5.0, 3)
    lips = skin * np.array([0.72, 0.66, 0.92])
    hair_choices = np.array(
        [[22, 24, 28], [30, 45, 70], [40, 72, 112], [95, 150, 190], [150, 150, 156]], np.float64
    )
    hair = hair_choices[rng.integers(len(hair_choices))] * u(0.85, 1.15)
    iris_choices = np.array([[30, 45, 70], [20, 30, 45], [120, 100, 60], [70, 110, 80]], np.float64)
    iris = iris_choices[rng.integers(len(iris_choices))]
    background = rng.uniform(40.0, 200.0, 3)

    def color(c: np.ndarray) -> tuple[float, float, float]:
        c = np.clip(c, 0.0, 255.0)
        return (float(c[0]), float(c[1]), float(c[2]))

    return Subject(
        id=f"{index + 1:02d}",
        seed=seed,
        index=index,
        center=(u(0.44, 0.56), u(0.47, 0.55)),
        face_width=u(0.27, 0.32),
        face_aspect=u(1.18, 1.36),
        eye_height=u(0.12, 0.22),
        eye_spacing=u(0.38, 0.48),
        eye_width=u(0.16, 0.21),
        eye_aspect=u(0.42, 0.58),
        brow_height=u(0.09, 0.15),
        brow_thickness=u(0.010, 0.017),
        brow_arch=u(0.0, 0.05),
        nose_length=u(0.30, 0.40),
        nose_width=u(0.20, 0.28),
        mouth_position=u(0.30, 0.42),
        mouth_width=u(0.34, 0.46),
        lip_thickness=u(0.018, 0.028),
        mouth_curve=u(-0.008, 0.008),
        hairline=u(0.58, 0.75),
        skin=color(skin),
        lips=color(lips),
        hair=color(hair),
        iris=color(iris),
        background=color(background),
        background_gradient=u(-0.25, 0.25),
        light_angle=u(0.0, 2.0 * np.pi),
        light_strength=u(0.08, 0.30),
        face_shading=u(0.08, 0.22),
        noise_sigma=u(0.8, 2.5),
    )
