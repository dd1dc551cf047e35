"""Frame sources by URI, as jetson-utils names them.

``synthetic://``, ``file://clip.avi``, ``frames://dir``, ``v4l2:///dev/video0``,
``gst://<pipeline>``, ``csi://0`` and ``picam://0``, each with ``?key=value&...`` options
(except ``gst://``, whose whole rest is the pipeline). :func:`parse_uri` checks the URI;
:func:`make_source` builds an unopened :class:`Source`; :func:`open_source` also opens it.

A source is a context manager with one small interface: ``open()``, ``read(timeout)`` ->
:class:`Frame` or ``None`` on timeout, ``close()``. A finite source raises
:class:`SourceEnded` after its last frame; a live device that vanishes raises
:class:`SourceLost` (from ``open()`` too, when the device is not there yet), and the
capture thread (:mod:`edge_mer.pipeline.ring`) reopens it with backoff.

OpenCV, picamera2 and the calibration package are imported only when a source that needs
them is built, so ``import edge_mer.pipeline.sources`` stays cheap and torch-free.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl

import numpy as np

from edge_mer.errors import EdgeMerError, InputError

__all__ = [
    "BUILTIN_SCHEMES",
    "Frame",
    "Source",
    "SourceBase",
    "SourceEnded",
    "SourceLost",
    "SourceSpec",
    "make_source",
    "open_source",
    "parse_uri",
    "register_scheme",
    "registered_schemes",
]


BUILTIN_SCHEMES = ("synthetic", "file", "frames", "v4l2", "gst", "csi", "picam")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$", re.DOTALL)


class SourceEnded(EdgeMerError):
    """A finite source (file, folder, synthetic stream) has no more frames. Not a failure."""

    exit_code = 0


class SourceLost(EdgeMerError):
    """A live device is not there (yet) or vanished mid-stream: reopen it later, with backoff."""


@dataclass
class Frame:
    """One captured frame.

    ``seq`` counts frames read from this source since it was built (0-based; it keeps
    counting across reopenings, so a gap means frames were lost). ``ts`` is the capture time
    in seconds: the device's sensor timestamp where there is one (picamera2), media time for
    files, folders and synthetic streams (``seq / fps``), else ``time.monotonic()`` when
    the frame was read. ``image`` is uint8 ``[H, W]`` (gray) or ``[H, W, 3]`` (BGR).

    Ownership: ``image`` may be a buffer the source reuses; it is valid until the next
    ``read()`` on that source. Copy it (the ring does) to keep it.
    """

    seq: int
    ts: float
    image: np.ndarray


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source URI: ``scheme``, ``target`` (path, device, index or pipeline) and
    ``options`` (strings, as given). The typed getters check values and name the URI."""

    uri: str
    scheme: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    def check_options(self, allowed: tuple[str, ...]) -> None:
        """Refuse options that ``allowed`` does not list, naming the valid ones."""
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            valid = ", ".join(allowed) if allowed else "none"
            raise InputError(
                f"source {self.uri!r}: unknown option {unknown[0]!r} for {self.scheme}://; "
                f"valid options: {valid}"
            )

    def _bad(self, key: str, want: str) -> InputError:
        return InputError(f"source {self.uri!r}: option {key}={self.options[key]!r} must be {want}")

    def get_int(self, key: str, default: int | None, minimum: int = 0) -> int | None:
        """Integer option ``>= minimum``, or ``default`` when absent."""
        if key not in self.options:
            return default
        try:
            value = int(self.options[key])
        except ValueError:
            raise self._bad(key, f"an integer >= {minimum}") from None
        if value < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return value

    def get_float(self, key: str, default: float | None, minimum: float = 0.0) -> float | None:
        """Finite float option ``> minimum``, or ``default`` when absent."""
        if key not in self.options:
            return default
        try:
            value = float(self.options[key])
        except ValueError:
            raise self._bad(key, f"a number > {minimum:g}") from None
        if not (math.isfinite(value) and value > minimum):
            raise self._bad(key, f"a number > {minimum:g}")
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        """``true/false/1/0/yes/no/on/off`` option, or ``default`` when absent."""
        if key not in self.options:
            return default
        text = self.options[key].strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise self._bad(key, "true or false")

    def get_choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        """One of ``choices``, or ``default`` when absent."""
        value = self.options.get(key, default).strip().lower()
        if value not in choices:
            raise self._bad(key, "one of " + ", ".join(choices))
        return value

    def get_size(self, key: str, default: tuple[int, int] | None) -> tuple[int, int] | None:
        """``WxH`` (or ``N`` for square) -> ``(width, height)``, or ``default`` when absent."""
        if key not in self.options:
            return default
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", self.options[key])
        if not match:
            raise self._bad(key, "WIDTHxHEIGHT, e.g. 640x480")
        w = int(match.group(1))
        h = int(match.group(2)) if match.group(2) else w
        if w <= 0 or h <= 0:
            raise self._bad(key, "WIDTHxHEIGHT with positive numbers")
        return (w, h)


def parse_uri(uri: str) -> SourceSpec:
    """Parse ``scheme://target?key=value&...``; a malformed URI raises :class:`InputError`
    naming it and the valid schemes. ``gst://`` takes everything after ``://`` as the
    pipeline (no options). Option values are kept as strings; each source checks its own."""
    schemes = registered_schemes()
    valid = ", ".join(f"{s}://" for s in schemes)
    if not isinstance(uri, str) or not uri.strip():
        raise InputError(f"source URI {uri!r} is empty: use one of {valid}")
    match = _SCHEME.match(uri.strip())
    if not match:
        raise InputError(
            f"source {uri!r} is not a URI: use one of {valid} (a video file is file://PATH)"
        )
    scheme, rest = match.group(1), match.group(2)
    if scheme not in schemes:
        raise InputError(f"source {uri!r}: unknown scheme {scheme!r}; valid schemes: {valid}")
    if scheme == "gst":
        if not rest.strip():
            raise InputError(f"source {uri!r}: gst:// needs a pipeline ending in appsink")
        return SourceSpec(uri, scheme, rest.strip(), {})
    target, _, query = rest.partition("?")
    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise InputError(
                f"source {uri!r}: options {query!r} are not key=value pairs joined by '&'"
            ) from None
        for key, value in pairs:
            if key in options:
                raise InputError(f"source {uri!r}: option {key!r} given twice")
            options[key] = value
    return SourceSpec(uri, scheme, target, options)


@runtime_checkable
class Source(Protocol):
    """What a capture thread needs from a frame source (see the module docstring)."""

    uri: str

    @property
    def fps(self) -> float | None:
        """Nominal frames per second (None until opened, or unknown)."""
        ...

    @property
    def live(self) -> bool:
        """True for cameras (drop frames when behind), False for finite media."""
        ...

    def open(self) -> None: ...
    def read(self, timeout: float) -> Frame | None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Source: ...
    def __exit__(self, *exc: object) -> None: ...


class SourceBase:
    """Context-manager plumbing and the sequence counter shared by the built-in sources."""

    live = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.uri = spec.uri
        self._fps: float | None = None
        self._seq = 0
        self._is_open = False
        self.errors = 0  # frames that could not be decoded and were skipped or ended a stream

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def is_open(self) -> bool:
        return self._is_open

    def open(self) -> None:
        """Open the file or device (a no-op if open). Raises :class:`InputError` for bad
        input and :class:`SourceLost` for a live device that is not there."""
        if not self._is_open:
            self._open()
            self._is_open = True

    def close(self) -> None:
        """Release the device or file; safe to call twice."""
        self._is_open = False
        self._close()

    def read(self, timeout: float) -> Frame | None:
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def __enter__(self) -> SourceBase:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


# --- registry ---------------------------------------------------------------------------

SourceFactory = Callable[[SourceSpec], Source]


def _lazy(module: str, name: str, constructor: str = "from_spec") -> SourceFactory:
    """A factory that imports ``module`` on first use (cameras pull cv2 or picamera2)."""

    def factory(spec: SourceSpec) -> Source:
        cls = getattr(importlib.import_module(module), name)
        return getattr(cls, constructor)(spec) if constructor else cls(spec)

    factory.__name__ = f"{name}.{constructor or '__init__'}"
    return factory


_REGISTRY: dict[str, SourceFactory] = {
    "file": _lazy("edge_mer.pipeline.files", "FileSource", ""),
    "frames": _lazy("edge_mer.pipeline.files", "FramesSource", ""),
    "v4l2": _lazy("edge_mer.pipeline.camera", "V4l2Source"),
    "gst": _lazy("edge_mer.pipeline.camera", "GstSource"),
    "csi": _lazy("edge_mer.pipeline.camera", "CsiSource"),
    "picam": _lazy("edge_mer.pipeline.camera", "PicamSource"),
}
# Schemes whose factory lives outside the core: imported on first use only.
_LAZY = {"synthetic": "edge_mer.calibration.stream_source"}


def register_scheme(name: str, factory: SourceFactory) -> None:
    """Make ``name://...`` URIs build sources with ``factory(spec)`` (replaces an existing one)."""
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", name):
        raise InputError(f"scheme name {name!r}: use lower-case letters, digits, '+', '.', '-'")
    _REGISTRY[name] = factory


def registered_schemes() -> tuple[str, ...]:
    """Every scheme a URI may use (built-in, lazily loaded and registered)."""
    return tuple(dict.fromkeys([*BUILTIN_SCHEMES, *_REGISTRY, *_LAZY]))


def _factory(spec: SourceSpec) -> SourceFactory:
    if spec.scheme not in _REGISTRY and spec.scheme in _LAZY:
        module = _LAZY[spec.scheme]
        try:
            importlib.import_module(module)  # registers the scheme on import
        except ImportError as exc:
            raise InputError(
                f"source {spec.uri!r}: {spec.scheme}:// needs {module}, which cannot be imported "
                f"({exc}); install edge-mer with its calibration package"
            ) from None
        if spec.scheme not in _REGISTRY:
            raise InputError(f"source {spec.uri!r}: {module} did not register {spec.scheme}://")
    return _REGISTRY[spec.scheme]


def make_source(uri: str | SourceSpec) -> Source:
    """Build the source for ``uri`` without opening it (a capture thread opens it, and
    reopens it after :class:`SourceLost`). Bad URIs and options raise :class:`InputError`."""
    spec = uri if isinstance(uri, SourceSpec) else parse_uri(uri)
    return _factory(spec)(spec)


def open_source(uri: str | SourceSpec) -> Source:
    """:func:`make_source`, then ``open()``. Use as ``with open_source(uri) as src:``."""
    source = make_source(uri)
    source.open()
    return source


def device_exists(path: str) -> bool:
    """True if a device node (or any file) is at ``path``; split out for tests."""
    return os.path.exists(path)
