"""Whether the frame loop runs compiled: which of its modules were imported from C
extensions (mypyc, built into wheels by ``setup.py``) and which from their Python source.

An editable install, ``EDGE_MER_PURE=1`` or a machine that could not compile them gives the
pure-Python modules: the same results, more interpreter time per frame. ``edge-mer bench``
reports this beside its figures, since it moves pipeline fps / model-only fps.
"""

from __future__ import annotations

import importlib
import importlib.machinery

__all__ = ["NATIVE_MODULES", "compiled_modules", "describe"]

#: The modules setup.py compiles (its NATIVE list, as module names; a test compares them).
NATIVE_MODULES = (
    "edge_mer.pipeline.clock",
    "edge_mer.pipeline.face",
    "edge_mer.pipeline.floats",
    "edge_mer.pipeline.inline",
    "edge_mer.pipeline.live",
    "edge_mer.pipeline.preprocess",
    "edge_mer.pipeline.resample",
    "edge_mer.pipeline.spotter",
)


def compiled_modules() -> dict[str, bool]:
    """Module name -> whether it was loaded from a C extension (imports each of them)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    out = {}
    for name in NATIVE_MODULES:
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        out[name] = path.endswith(suffixes)
    return out


def describe() -> str:
    """One phrase: ``compiled (mypyc), 8 of 8 frame-loop modules`` or ``pure Python``."""
    done = compiled_modules()
    n = sum(done.values())
    if n == 0:
        return "pure Python"
    return f"compiled (mypyc), {n} of {len(done)} frame-loop modules"
