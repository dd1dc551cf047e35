"""How each dataset looks, for synthetic copies: lighting, contrast, colour, resolution,
sensor noise, gray or near-infrared, face size.

A model trained on one dataset meets another camera, lab and population on the next; the
field's cross-dataset results (CASME II -> SMIC) are low because of it. The synthetic
layouts reproduce that: each dataset renders its own subjects (a population per dataset)
through its own :class:`Look`, so a model trained on synthetic CASME II scores lower on
synthetic SMIC than on held-out synthetic CASME II subjects.

=========  =========================================================================
look       what differs from CASME II's (which is the neutral look)
=========  =========================================================================
samm       gray, brighter and flatter (washed-out lighting), much larger face, little noise
smic-hs    darker, flatter, cool white balance, blurred (lower resolution), noisier,
           smaller face
smic-vis   slightly darker and flatter, warm white balance, blurred, smaller face
smic-nir   near-infrared: gray from the red channel (skin bright), flat, blurred,
           noisy, smaller face
=========  =========================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from edge_mer.calibration.faces import Subject

__all__ = ["LOOKS", "Look"]


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur of half width ``radius`` (edges clamped), float32 [H, W, C]."""
    k = 2 * radius + 1
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float32)
        n = img.shape[axis]
        img = (np.take(c, range(k, k + n), axis=axis) - np.take(c, range(n), axis=axis)) / k
    return img.astype(np.float32)


@dataclass(frozen=True)
class Look:
    """A camera and lab. Applied to a rendered float BGR frame before sensor noise.

    ``gain`` scales brightness, ``contrast`` stretches around mid-gray, ``tint`` is a BGR
    white balance, ``blur`` a box-blur radius in pixels at a 128 px frame (resolution),
    ``noise`` extra sensor noise (gray levels, standard deviation), ``face_scale`` the face
    width relative to the subject's, ``gray`` a gray sensor, ``nir`` a near-infrared one."""

    name: str
    gain: float = 1.0
    contrast: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur: float = 0.0
    noise: float = 0.0
    face_scale: float = 1.0
    gray: bool = False
    nir: bool = False

    @property
    def neutral(self) -> bool:
        return self == Look(self.name)

    def subject(self, subject: Subject) -> Subject:
        """The subject as this camera frames it (face size)."""
        if self.face_scale == 1.0:
            return subject
        return dataclasses.replace(subject, face_width=subject.face_width * self.face_scale)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """float32 BGR [H, W, 3] -> float32 BGR [H, W, 3] (gray looks repeat one channel)."""
        if self.neutral:
            return img
        if self.nir:
            y = 0.15 * img[..., 0] + 0.25 * img[..., 1] + 0.6 * img[..., 2]
            img = np.repeat((255.0 * (np.clip(y, 0, 255) / 255.0) ** 0.75)[..., None], 3, axis=2)
        elif self.gray:
            y = 0.114 * img[..., 0] + 0.587 * img[..., 1] + 0.299 * img[..., 2]
            img = np.repeat(y[..., None], 3, axis=2)
        else:
            img = img * np.asarray(self.tint, np.float32)
        img = (img * np.float32(self.gain) - 128.0) * np.float32(self.contrast) + 128.0
        radius = round(self.blur * min(img.shape[:2]) / 128.0)
        if radius > 0:
            img = _box_blur(img.astype(np.float32), radius)
        if self.noise > 0:
            shape = img.shape[:2] + ((1,) if (self.gray or self.nir) else (3,))
            img = img + rng.standard_normal(shape, dtype=np.float32) * np.float32(self.noise)
        return img.astype(np.float32)


LOOKS = {
    look.name: look
    for look in (
        Look("casme2"),
        Look("samm", gain=1.25, contrast=0.8, noise=0.5, face_scale=1.35, gray=True),
        Look(
            "smic-hs",
            gain=0.7,
            contrast=0.75,
            tint=(1.15, 1.0, 0.85),
            blur=1.0,
            noise=3.0,
            face_scale=0.72,
        ),
        Look(
            "smic-vis",
            gain=0.85,
            contrast=0.8,
            tint=(0.85, 1.0, 1.15),
            blur=1.0,
            noise=2.5,
            face_scale=0.78,
        ),
        Look("smic-nir", gain=1.1, contrast=0.6, blur=1.0, noise=4.0, face_scale=0.78, nir=True),
    )
}
