"""Drawing a synthetic face: a subject's geometry, its static layers, and the moving parts
(brows, eyes, nose, mouth) for one :class:`~edge_mer.calibration.faces.FaceState`.

Everything is numpy; :func:`render_face` returns a float32 BGR image.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from edge_mer.calibration.faces import NEUTRAL, FaceState, Subject

_Box = tuple[slice, slice, np.ndarray, np.ndarray]  # rows, cols, ys [h,1], xs [1,w]


@dataclass(frozen=True)
class _Geometry:
    """A subject's neutral geometry in pixels for one frame size."""

    cx: float
    cy: float
    ax: float
    ay: float
    eye_y: float
    eye_dx: float
    erx: float
    ery: float
    brow_y: float
    brow_r: float
    brow_arch: float
    tip_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip: float
    mouth_curve: float
    hairline_y: float
    line_r: float  # half thickness of fine lines (lids, wrinkles)


@functools.lru_cache(maxsize=64)
def _geometry(subject: Subject, h: int, w: int) -> _Geometry:
    s = float(min(h, w))
    ax = subject.face_width * s
    ay = ax * subject.face_aspect
    cx, cy = subject.center[0] * w, subject.center[1] * h
    eye_y = cy - subject.eye_height * ay
    erx = subject.eye_width * ax
    ery = erx * subject.eye_aspect
    tip_y = eye_y + subject.nose_length * ay
    return _Geometry(
        cx=cx,
        cy=cy,
        ax=ax,
        ay=ay,
        eye_y=eye_y,
        eye_dx=subject.eye_spacing * ax,
        erx=erx,
        ery=ery,
        brow_y=eye_y - ery - subject.brow_height * ay,
        brow_r=max(subject.brow_thickness * s, 0.6),
        brow_arch=subject.brow_arch * ay,
        tip_y=tip_y,
        nose_w=subject.nose_width * ax,
        mouth_y=tip_y + subject.mouth_position * (cy + ay - tip_y),
        mouth_w=subject.mouth_width * ax,
        lip=subject.lip_thickness * s,
        mouth_curve=subject.mouth_curve * s,
        hairline_y=cy - subject.hairline * ay,
        line_r=max(0.0045 * s, 0.35),
    )


@functools.lru_cache(maxsize=64)
def _regions(subject: Subject, h: int, w: int) -> dict[str, tuple[int, int, int, int]]:
    g = _geometry(subject, h, w)
    s = min(h, w)
    m = 0.04 * s
    eye_x0, eye_x1 = g.cx - g.eye_dx - 1.3 * g.erx, g.cx + g.eye_dx + 1.3 * g.erx
    boxes = {
        "brows": (g.brow_y - 0.07 * s, g.brow_y + m, eye_x0, eye_x1),
        "eyes": (g.eye_y - g.ery - m, g.eye_y + g.ery + m, eye_x0, eye_x1),
        "nose": (g.eye_y + g.ery + m, g.tip_y + m, g.cx - 1.6 * g.nose_w, g.cx + 1.6 * g.nose_w),
        "mouth": (
            g.mouth_y - 0.06 * s,
            g.mouth_y + 0.08 * s,
            g.cx - g.mouth_w - m,
            g.cx + g.mouth_w + m,
        ),
    }
    return {
        k: (
            int(np.clip(np.floor(y0), 0, h)),
            int(np.clip(np.ceil(y1), 0, h)),
            int(np.clip(np.floor(x0), 0, w)),
            int(np.clip(np.ceil(x1), 0, w)),
        )
        for k, (y0, y1, x0, x1) in boxes.items()
    }


@functools.lru_cache(maxsize=64)
def _static(subject: Subject, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Background image [H,W,3] and the camera-fixed light gradient [H,W] (read-only)."""
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    s = float(min(h, w))
    bg_gain = 1.0 + subject.background_gradient * (ys / max(h - 1, 1) - 0.5)
    background = np.asarray(subject.background, np.float32) * bg_gain[..., None]
    background = np.broadcast_to(background, (h, w, 3)).copy()
    a = subject.light_angle
    light = 1.0 + subject.light_strength * (
        (xs - w / 2) * np.float32(np.cos(a)) + (ys - h / 2) * np.float32(np.sin(a))
    ) / np.float32(s)
    background.flags.writeable = False
    light = light.astype(np.float32)
    light.flags.writeable = False
    return background, light


def _box(h: int, w: int, x0: float, x1: float, y0: float, y1: float) -> _Box | None:
    c0, c1 = max(int(np.floor(x0)) - 1, 0), min(int(np.ceil(x1)) + 2, w)
    r0, r1 = max(int(np.floor(y0)) - 1, 0), min(int(np.ceil(y1)) + 2, h)
    if c0 >= c1 or r0 >= r1:
        return None
    ys = np.arange(r0, r1, dtype=np.float32)[:, None]
    xs = np.arange(c0, c1, dtype=np.float32)[None, :]
    return slice(r0, r1), slice(c0, c1), ys, xs


def _paint(img: np.ndarray, box: _Box, alpha: np.ndarray, color: np.ndarray) -> None:
    region = img[box[0], box[1]]
    region += alpha[..., None] * (color - region)


def _ellipse(ys, xs, cx, cy, rx, ry) -> np.ndarray:
    """Coverage of an axis-aligned ellipse; thin ellipses fade instead of staying 1 px lines."""
    rx, ry = max(rx, 1e-3), max(ry, 1e-3)
    u = (xs - np.float32(cx)) / np.float32(rx)
    v = (ys - np.float32(cy)) / np.float32(ry)
    f = np.sqrt(u * u + v * v)
    grad = np.sqrt((u / rx) ** 2 + (v / ry) ** 2) / np.maximum(f, 1e-6)
    sd = (f - 1.0) / np.maximum(grad, 1e-6)
    return np.clip(0.5 - sd, 0.0, 1.0) * np.float32(min(1.0, 2.0 * min(rx, ry)))


def _band(ys, top, bottom) -> np.ndarray:
    """Exact vertical coverage of each pixel (height 1) by the interval [top, bottom]."""
    return np.clip(np.minimum(ys + 0.5, bottom) - np.maximum(ys - 0.5, top), 0.0, 1.0)


def _stroke(ys, xs, points, radius: float) -> np.ndarray:
    """Coverage of a round-capped polyline of half thickness ``radius``."""
    d2 = None
    for (px, py), (qx, qy) in itertools.pairwise(points):
        ex, ey = qx - px, qy - py
        length2 = max(ex * ex + ey * ey, 1e-9)
        t = np.clip(((xs - px) * ex + (ys - py) * ey) / np.float32(length2), 0.0, 1.0)
        dx, dy = xs - px - t * ex, ys - py - t * ey
        seg = dx * dx + dy * dy
        d2 = seg if d2 is None else np.minimum(d2, seg)
    return np.clip(radius + 0.5 - np.sqrt(d2), 0.0, 1.0) * np.float32(min(1.0, 2.0 * radius))


def _draw_stroke(img, points, radius, color, opacity=1.0) -> None:
    if opacity <= 0.0:
        return
    h, w = img.shape[:2]
    px = [p[0] for p in points]
    py = [p[1] for p in points]
    pad = radius + 1.0
    box = _box(h, w, min(px) - pad, max(px) + pad, min(py) - pad, max(py) + pad)
    if box is not None:
        _paint(img, box, _stroke(box[2], box[3], points, radius) * np.float32(opacity), color)


def _draw_ellipse(img, cx, cy, rx, ry, color, opacity=1.0) -> None:
    h, w = img.shape[:2]
    box = _box(h, w, cx - rx - 1, cx + rx + 1, cy - ry - 1, cy + ry + 1)
    if box is not None:
        _paint(img, box, _ellipse(box[2], box[3], cx, cy, rx, ry) * np.float32(opacity), color)


def render_face(subject: Subject, size: tuple[int, int], state: FaceState = NEUTRAL) -> np.ndarray:
    """The subject in ``state`` as a new float32 BGR image [H, W, 3], values about 0-255.

    No noise and no rounding: the caller adds sensor noise and converts to uint8.
    """
    h, w = size
    g = _geometry(subject, h, w)
    background, light = _static(subject, h, w)
    img = background.copy()
    au = {k: float(state.aus.get(k, 0.0)) for k in ("1", "2", "4", "9", "12", "26")}
    a = float(state.amplitude)
    dx, dy = state.shift
    cx, cy = g.cx + dx, g.cy + dy
    skin = np.asarray(subject.skin, np.float32)
    hair = np.asarray(subject.hair, np.float32)
    crease = skin * np.float32(0.55)

    # Jaw drop (AU26) lowers the chin: the face outline grows downwards, its top stays.
    jaw = 0.25 * a * au["26"]
    ax, ay, fcy = g.ax, g.ay + jaw, cy + jaw
    _draw_ellipse(img, cx, cy - 0.22 * g.ay, 1.13 * g.ax, 0.98 * g.ay, hair)  # hair, behind
    neck = _box(h, w, cx - 0.5 * ax, cx + 0.5 * ax, fcy + 0.5 * ay, h)
    if neck is not None:
        ys, xs = neck[2], neck[3]
        cover = np.clip(0.5 * ax + 0.5 - np.abs(xs - np.float32(cx)), 0.0, 1.0)
        _paint(img, neck, cover * _band(ys, fcy + 0.5 * ay, h + 1.0), skin * np.float32(0.8))
    face_box = _box(h, w, cx - ax - 1, cx + ax + 1, fcy - ay - 1, fcy + ay + 1)
    if face_box is not None:
        ys, xs = face_box[2], face_box[3]
        face = _ellipse(ys, xs, cx, fcy, ax, ay)
        _paint(img, face_box, face, skin)
        # Fringe: hair over the top of the forehead, inside the hair outline.
        fringe = _band(ys, -1e6, g.hairline_y + dy) * _ellipse(
            ys, xs, cx, cy - 0.22 * g.ay, 1.13 * g.ax, 0.98 * g.ay
        )
        _paint(img, face_box, fringe, hair)
        u = (xs - np.float32(cx)) / np.float32(ax)
        v = (ys - np.float32(fcy)) / np.float32(ay)
        r2 = np.minimum(u * u + v * v, 1.0)
        shade = 1.0 - np.float32(subject.face_shading) * r2 * face
        img[face_box[0], face_box[1]] *= shade[..., None]

    _draw_brows(img, g, subject, au, a, cx, cy)
    _draw_eyes(img, g, subject, state.eye_open, cx, cy)
    _draw_nose(img, g, skin, crease, au, a, cx, cy)
    _draw_mouth(img, g, subject, crease, au, a, cx, cy)
    img *= light[..., None]
    return img


def _draw_brows(img, g: _Geometry, subject: Subject, au, a, cx, cy) -> None:
    brow = np.asarray(subject.hair, np.float32) * np.float32(0.8)
    up_inner = a * (au["1"] - au["4"])  # AU1 raises the inner brow, AU4 lowers it
    up_mid = a * (0.5 * au["1"] + 0.6 * au["2"] - 0.45 * au["4"])
    up_outer = a * 0.9 * au["2"]
    together = 0.6 * a * au["4"]
    by = g.brow_y + (cy - g.cy)
    for side in (-1.0, 1.0):
        ex = cx + side * g.eye_dx
        inner = (ex - side * (1.0 * g.erx - together), by - up_inner)
        mid = (ex + side * 0.15 * g.erx, by - g.brow_arch - up_mid)
        outer = (ex + side * 1.2 * g.erx, by + 0.3 * g.brow_arch - up_outer)
        _draw_stroke(img, [inner, mid, outer], g.brow_r, brow, 0.9)
    if au["4"] > 0.0:  # vertical glabella lines between the lowered brows
        gap = g.eye_dx - g.erx
        for side in (-1.0, 1.0):
            x = cx + side * 0.35 * gap
            pts = [(x, by - 0.5 * g.ery), (x + side * 0.1 * gap, by + 1.4 * g.ery)]
            _draw_stroke(img, pts, g.line_r, np.asarray(subject.skin) * 0.5, 0.55 * au["4"])


def _draw_eyes(img, g: _Geometry, subject: Subject, eye_open, cx, cy) -> None:
    h, w = img.shape[:2]
    sclera = np.array([222, 228, 236], np.float32)
    iris = np.asarray(subject.iris, np.float32)
    lash = np.asarray(subject.hair, np.float32) * np.float32(0.5)
    ey = g.eye_y + (cy - g.cy)
    ry = g.ery * float(np.clip(eye_open, 0.0, 1.0))
    for side in (-1.0, 1.0):
        ex = cx + side * g.eye_dx
        box = _box(h, w, ex - g.erx - 1, ex + g.erx + 1, ey - g.ery - 2, ey + g.ery + 2)
        if box is None:
            continue
        ys, xs = box[2], box[3]
        white = _ellipse(ys, xs, ex, ey, g.erx, ry)
        _paint(img, box, white, sclera)
        _paint(img, box, white * _ellipse(ys, xs, ex, ey, 0.95 * g.ery, 0.95 * g.ery), iris)
        _paint(img, box, white * _ellipse(ys, xs, ex, ey, 0.4 * g.ery, 0.4 * g.ery), lash * 0.3)
        # Upper lid line: follows the top of the open eye, a single line when closed.
        u = np.clip((xs - np.float32(ex)) / np.float32(g.erx), -1.0, 1.0)
        lid = np.float32(ey) - np.float32(ry) * np.sqrt(1.0 - u * u)
        across = np.clip(g.erx + 0.5 - np.abs(xs - np.float32(ex)), 0.0, 1.0)
        _paint(img, box, _band(ys, lid - 1.3 * g.line_r, lid + g.line_r) * across, lash)


def _draw_nose(img, g: _Geometry, skin, crease, au, a, cx, cy) -> None:
    oy = cy - g.cy
    lift = 0.6 * a * au["9"]  # AU9 pulls the nostrils and the tip up
    tip = g.tip_y + oy - 0.7 * lift
    nw = g.nose_w
    bridge = [(cx - 0.35 * nw, g.eye_y + oy + 0.5 * g.ery), (cx - 0.55 * nw, tip - 0.3 * nw)]
    _draw_stroke(img, bridge, g.line_r * 1.5, crease, 0.18)
    _draw_ellipse(img, cx, tip - 0.15 * nw, 0.45 * nw, 0.35 * nw, skin * np.float32(1.08), 0.5)
    for side in (-1.0, 1.0):
        _draw_ellipse(
            img,
            cx + side * 0.5 * nw,
            tip + 0.12 * nw - lift * 0.3,
            0.26 * nw,
            0.14 * nw,
            crease * 0.6,
            0.85,
        )
    arc = [
        (cx - 1.05 * nw, tip - 0.25 * nw - 0.3 * lift),
        (cx, tip + 0.3 * nw),
        (cx + 1.05 * nw, tip - 0.25 * nw - 0.3 * lift),
    ]
    _draw_stroke(img, arc, g.line_r, crease, 0.35)
    if au["9"] > 0.0:  # horizontal wrinkles across the nasal bridge
        top = g.eye_y + oy + 0.2 * g.ery - 0.3 * lift
        for k in range(3):
            y = top + k * 0.09 * (g.tip_y - g.eye_y)
            half = (0.55 + 0.12 * k) * nw
            pts = [(cx - half, y + 0.3 * g.line_r), (cx, y - 0.4 * g.line_r), (cx + half, y)]
            _draw_stroke(img, pts, g.line_r, crease, 0.6 * au["9"])


def _draw_mouth(img, g: _Geometry, subject: Subject, crease, au, a, cx, cy) -> None:
    h, w = img.shape[:2]
    oy = cy - g.cy
    up12, out12 = 0.8 * a * au["12"], 0.6 * a * au["12"]
    xl, xr = cx - g.mouth_w - out12, cx + g.mouth_w + out12
    y_corner = g.mouth_y + oy - up12
    seam_mid = g.mouth_y + oy + g.mouth_curve - 0.12 * up12 - 0.5 * a * au["9"]
    low_mid = g.mouth_y + oy + g.mouth_curve - 0.12 * up12 + 1.3 * a * au["26"]
    lip = g.lip

    # Nasolabial folds run from beside the nose to just outside the mouth corners; AU12 and
    # AU9 deepen them.
    fold = 0.06 + 0.3 * au["9"] + 0.25 * au["12"]
    for side, x_corner in ((-1.0, xl), (1.0, xr)):
        top = (cx + side * 1.15 * g.nose_w, g.tip_y + oy - 0.2 * g.nose_w - 0.4 * a * au["9"])
        bottom = (x_corner + side * 0.12 * g.mouth_w, y_corner + 0.35 * lip)
        _draw_stroke(img, [top, bottom], g.line_r * 1.4, crease, fold)

    box = _box(
        h,
        w,
        xl - 1,
        xr + 1,
        min(y_corner, seam_mid) - 1.6 * lip - 1,
        max(y_corner, low_mid) + 1.6 * lip + 1,
    )
    if box is None:
        return
    ys, xs = box[2], box[3]
    t = np.clip((xs - np.float32(xl)) / np.float32(xr - xl), 0.0, 1.0)
    bow = 4.0 * t * (1.0 - t)
    taper = np.sqrt(bow)
    seam = np.float32(y_corner) + np.float32(seam_mid - y_corner) * bow
    lower = np.float32(y_corner) + np.float32(low_mid - y_corner) * bow
    across = np.clip(np.minimum(xs + 0.5, xr) - np.maximum(xs - 0.5, xl), 0.0, 1.0)
    lips = np.asarray(subject.lips, np.float32)
    inside = np.array([38, 28, 48], np.float32)
    _paint(img, box, _band(ys, seam, lower) * across, inside)
    _paint(img, box, _band(ys, seam - 0.8 * lip * taper, seam) * across, lips * np.float32(0.92))
    _paint(img, box, _band(ys, lower, lower + 1.0 * lip * taper) * across, lips)
    seam_line = _band(ys, seam - 0.6 * g.line_r, seam + 0.6 * g.line_r) * across
    _paint(img, box, seam_line * np.float32(0.6), inside)
