"""edge-mer: micro-expression recognition models, from the lab to the edge device.

The core package (this one) is what runs on the device. It never imports torch; the
host-side converter lives in :mod:`edge_mer.convert` and the clip readers and synthetic
clips in :mod:`edge_mer.calibration`.
"""

__version__ = "0.1.0"

from edge_mer import native as _native
from edge_mer.errors import EdgeMerError

_native.guard()  # before any frame-loop module: compiled only if built from these sources

__all__ = ["EdgeMerError", "__version__"]
