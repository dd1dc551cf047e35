"""Whether the frame loop runs compiled: which of its modules were imported from C
extensions (mypyc, built by ``setup.py`` into wheels and into editable checkouts) and which
from their Python source.

The compiled modules are used only while they are what their sources say: ``setup.py``
records the CRC-32 of each source it compiled (:data:`SOURCES_FILE`, beside the extension
that holds mypyc's runtime), and :func:`guard` (run by ``import edge_mer``) compares. A
source edited since (a checkout being worked on), or ``EDGE_MER_PURE=1``, makes every one of
them load from its ``.py`` file instead: all or none, since the compiled modules call each
other directly. The results are the same either way; the interpreter spends more per frame.
``edge-mer bench`` and ``edge-mer doctor`` report which one ran, and why.

Standard library modules that are cheap to import only: this runs on every ``import
edge_mer`` (hashlib would load OpenSSL, json and importlib.abc cost milliseconds too).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import zlib
from pathlib import Path
from typing import Any

__all__ = [
    "NATIVE_MODULES",
    "PURE_ENV",
    "SOURCES_FILE",
    "compiled_modules",
    "describe",
    "format_record",
    "guard",
    "source_digests",
    "source_path",
    "stale_reason",
]

#: The modules setup.py compiles (it loads this file to read them and the names below).
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
#: Lines ``module crc32`` of the sources they were compiled from; written by setup.py.
SOURCES_FILE = "_native_sources.txt"
#: mypyc's group: the extension holding its runtime and the compiled code (the modules are
#: shims) is RUNTIME, in the edge_mer folder.
GROUP = "edge_mer._native"
RUNTIME = GROUP.rsplit(".", 1)[1] + "__mypyc"
#: Set (to anything but "" or "0") at build time: no compiled modules; at run time: not used.
PURE_ENV = "EDGE_MER_PURE"
PACKAGE_DIR = Path(__file__).resolve().parent

_reason: str | None = None  # why the compiled modules are not used (None: they are, or none)


def source_path(package_dir: Path, name: str) -> Path:
    """The ``.py`` file of module ``name`` under ``package_dir`` (the folder of ``edge_mer``:
    ``edge/`` in a checkout)."""
    return package_dir.joinpath(*name.split(".")[1:]).with_suffix(".py")


def source_digests(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Module name -> CRC-32 (8 hex digits) of its ``.py`` file under ``package_dir`` (the
    folder of ``edge_mer``): enough to tell an edited source, which is all it is for."""
    return {
        name: f"{zlib.crc32(source_path(package_dir, name).read_bytes()):08x}"
        for name in NATIVE_MODULES
    }


def format_record(digests: dict[str, str]) -> str:
    """The :data:`SOURCES_FILE` text for ``digests`` (setup.py writes it)."""
    return "".join(f"{name} {digest}\n" for name, digest in sorted(digests.items()))


def _runtime_built(package_dir: Path) -> bool:
    return any(
        (package_dir / f"{RUNTIME}{suffix}").is_file()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def stale_reason(package_dir: Path = PACKAGE_DIR, env: Any = None) -> str | None:
    """Why the compiled modules under ``package_dir`` must not be used; None if they may
    (or there are none: nothing to keep out). ``env``: the environment (default os.environ)."""
    env = os.environ if env is None else env
    if not _runtime_built(package_dir):
        return None
    if env.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    try:
        text = (package_dir / SOURCES_FILE).read_text()
    except OSError:
        return f"no record of the sources they were built from ({SOURCES_FILE})"
    built = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    try:
        now = source_digests(package_dir)
    except OSError:  # sources stripped from a deployment: nothing to compare, nothing to load
        return None
    changed = sorted(n.rsplit(".", 1)[-1] for n in NATIVE_MODULES if built.get(n) != now[n])
    if changed:
        return (
            f"{', '.join(changed)} changed since they were compiled: "
            "rebuild them (make native, or reinstall)"
        )
    return None


class _FromSource:
    """A meta path finder: the frame loop's modules as their ``.py`` files, ahead of the
    extensions beside them."""

    def __init__(self, package_dir: Path) -> None:
        self.package_dir = package_dir

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in NATIVE_MODULES:
            return None
        import importlib.util  # only here: the rare case pays for it

        return importlib.util.spec_from_file_location(name, source_path(self.package_dir, name))


def guard(package_dir: Path = PACKAGE_DIR) -> None:
    """Load the frame loop from source when its compiled modules are stale or refused
    (:func:`stale_reason`); called once by ``import edge_mer``, before any of them."""
    global _reason
    _reason = stale_reason(package_dir)
    if _reason is not None and not any(isinstance(f, _FromSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _FromSource(package_dir))


def compiled_modules() -> dict[str, bool]:
    """Module name -> whether it was loaded from a C extension (imports each of them)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    out = {}
    for name in NATIVE_MODULES:
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        out[name] = path.endswith(suffixes)
    return out


def describe() -> str:
    """One phrase: ``compiled (mypyc), 8 of 8 frame-loop modules``, or ``pure Python``
    followed by why when compiled modules are there but not used."""
    done = compiled_modules()
    n = sum(done.values())
    if n:
        return f"compiled (mypyc), {n} of {len(done)} frame-loop modules"
    return "pure Python" + (f" ({_reason})" if _reason else "")
