"""Package discovery for the mapped folders (DESIGN §1), and the compiled frame loop.

pyproject.toml holds the metadata and the ``package-dir`` mapping; setuptools' own
``packages.find`` cannot rename folders, so every subpackage is discovered here instead of
being listed by hand: a folder with an ``__init__.py`` under ``edge/``, ``convert/`` or
``calibration/`` is in the wheel without anyone remembering to add it.

A wheel also gets the modules of the per-frame path (``edge_mer.native.NATIVE_MODULES``)
compiled to C extensions with mypyc: the same source, the same semantics, a fraction of the
interpreter's cost per frame (``benchmarks/README.md``, "Fourth pass"). The ``.py`` files
ship beside the extensions, and an extension is imported before its source. Pure Python
instead when:

- ``EDGE_MER_PURE=1`` is set;
- mypyc cannot be imported (a build without isolation, in an environment without mypy);
- compiling fails (no C compiler, no Python headers).

Each case but the first says so in a warning. An editable install (``pip install -e``, the
``make`` venv) compiles in place, into ``edge/``; ``edge_mer.native`` then uses the
extensions only while every compiled source is unchanged (the CRC-32 of each is recorded
beside them), so editing a module falls back to its source until ``make native`` rebuilds.
``edge-mer bench`` and ``edge-mer doctor`` report which one runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import sys
import warnings
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

ROOTS = {
    "edge_mer": "edge",
    "edge_mer.convert": "convert",
    "edge_mer.calibration": "calibration",
    "edge_mer.systemd": "systemd",
}
HERE = Path(__file__).resolve().parent


def _load_native():
    """edge/native.py, loaded from its file (standard library only; the package is not
    installed while it is being built): the list of modules to compile, the record of
    their sources and the names the runtime looks for, in one place."""
    spec = importlib.util.spec_from_file_location("_edge_mer_native", HERE / "edge" / "native.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


native = _load_native()

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]


def _say(message: str) -> None:
    warnings.warn(f"edge-mer: {message}", stacklevel=1)
    print(f"edge-mer: {message}", file=sys.stderr)


def native_extensions() -> list:
    """mypyc's extensions for ``native.NATIVE_MODULES``, or [] for a pure-Python build."""
    if os.environ.get(native.PURE_ENV, "") not in ("", "0"):
        return []
    if not {"bdist_wheel", "build_ext", "build", "editable_wheel", "develop"} & set(sys.argv[1:]):
        return []  # sdist, egg_info, dist_info: no compiled code
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed: building a pure-Python wheel (slower frame loop)")
        return []
    # mypy names a module by its folder: stage edge/ as edge_mer/ so that the extensions are
    # edge_mer.pipeline.*, as the package-dir mapping installs the sources.
    stage = HERE / "build" / "native-src"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(
        HERE / "edge", stage / "edge_mer", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    paths = [
        str(native.source_path(stage / "edge_mer", name).relative_to(HERE))
        for name in native.NATIVE_MODULES
    ]
    flags = [
        "--ignore-missing-imports",  # numpy, cv2, pydantic: untyped (Any) to mypyc
        "--no-site-packages",  # the same types whatever the build environment holds
        "--follow-imports=silent",  # the modules these import are read, not compiled
    ]
    said = io.StringIO()  # mypy prints its errors, then exits: keep them for the warning
    try:
        with contextlib.redirect_stdout(said):
            exts = mypycify([*flags, *paths], opt_level="3", group_name=native.GROUP)
    except BaseException as exc:  # mypy exits through SystemExit on a type error
        errors = " | ".join(said.getvalue().strip().splitlines()[-5:])
        _say(f"mypyc failed ({exc!r}: {errors}): building a pure-Python wheel (slower frame loop)")
        return []
    for ext in exts:
        # No fused multiply-add: the same doubles as the interpreter on every CPU (GCC
        # contracts a*b+c by default on aarch64, the Jetson's and the Pi's).
        ext.extra_compile_args = [*ext.extra_compile_args, "-ffp-contract=off"]
    return exts


class OptionalBuildExt(build_ext):
    """Builds the compiled frame loop, or nothing: a module whose extension failed while
    another's was built would import a shim without its runtime, so on any failure every
    extension already built is removed and the wheel is pure Python. On success the CRC-32
    of each compiled source goes beside the runtime extension (edge_mer.native.SOURCES_FILE):
    ``import edge_mer`` uses the extensions only while the sources still match."""

    def run(self) -> None:
        outs = [Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions]
        record = Path(self.get_ext_fullpath(native.GROUP)).parent / native.SOURCES_FILE
        try:
            super().run()
        except Exception as exc:
            for out in [*outs, record]:
                if out.exists():
                    out.unlink()
            why = str(exc) if len(str(exc)) < 160 else str(exc)[:157] + "..."
            _say(f"compiling the frame loop failed ({why}): the wheel is pure Python")
            return
        record.write_text(native.format_record(native.source_digests(HERE / "edge")))


ext_modules = native_extensions()
setup(
    packages=packages,
    package_dir=ROOTS,
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt} if ext_modules else {},
)
