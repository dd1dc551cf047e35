"""Which frame-loop modules run compiled, and the guard that keeps stale ones out.

An editable install compiles them in place (setup.py); the guard in ``import edge_mer``
uses them only while their sources are the ones they were built from. The installed-wheel
smoke runs the frame loop's tests against a wheel's compiled modules.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import shutil
import subprocess
import sys
from pathlib import Path

from edge_mer import native
from edge_mer.bench.report import frame_loop_line
from edge_mer.native import NATIVE_MODULES, compiled_modules, describe, stale_reason
from edge_mer.service.doctor import frame_loop_finding
from edge_mer.service.machine import collect_facts


def test_every_listed_module_is_reported_and_describe_agrees() -> None:
    got = compiled_modules()
    assert tuple(got) == NATIVE_MODULES
    for name, compiled in got.items():
        path = importlib.import_module(name).__file__ or ""
        assert compiled == (not path.endswith(".py")), (name, path)
    assert len(set(got.values())) == 1, "all compiled or none: they call each other directly"
    n = sum(got.values())
    if n:
        assert describe() == f"compiled (mypyc), {n} of {len(got)} frame-loop modules"
    else:
        assert describe().startswith("pure Python")


def test_bench_and_doctor_say_it() -> None:
    how = describe()
    assert collect_facts()["frame_loop"] == how
    line = frame_loop_line({"machine": {"frame_loop": how}})
    finding = frame_loop_finding()
    assert line.startswith(f"frame loop: {how}")
    if how.startswith("pure Python"):
        assert finding.ok is None and "mypyc" in finding.fix
    else:
        assert finding.ok is True
    assert "C compiler" in frame_loop_line({"machine": {"frame_loop": "pure Python"}})
    assert frame_loop_line({"machine": {}}) == ""  # reports written before the fact existed


def _package(tmp_path: Path, runtime: bool = True) -> Path:
    """A copy of the frame loop's sources laid out as edge_mer/, with a stand-in runtime
    extension and the record setup.py writes."""
    pkg = tmp_path / "edge_mer"
    for name in NATIVE_MODULES:
        rel = Path(*name.split(".")[1:]).with_suffix(".py")
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(native.PACKAGE_DIR / rel, pkg / rel)
    if runtime:
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        (pkg / f"{native.RUNTIME}{suffix}").write_bytes(b"")
        (pkg / native.SOURCES_FILE).write_text(native.format_record(native.source_digests(pkg)))
    return pkg


def test_stale_reason(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    assert stale_reason(pkg, env={}) is None  # built from these very sources
    assert stale_reason(pkg, env={"EDGE_MER_PURE": "0"}) is None
    assert stale_reason(pkg, env={"EDGE_MER_PURE": "1"}) == "EDGE_MER_PURE is set"
    spotter = pkg / "pipeline" / "spotter.py"
    spotter.write_text(spotter.read_text() + "\n# an edit\n")
    why = stale_reason(pkg, env={})
    assert why is not None and why.startswith("spotter changed") and "make native" in why
    (pkg / native.SOURCES_FILE).unlink()
    assert "no record" in (stale_reason(pkg, env={}) or "")
    spotter.unlink()  # sources stripped (only the extensions deployed): keep the extensions
    (pkg / native.SOURCES_FILE).write_text("")
    assert stale_reason(pkg, env={}) is None
    assert stale_reason(_package(tmp_path / "pure", runtime=False), env={}) is None


def test_pure_env_loads_every_module_from_source() -> None:
    """EDGE_MER_PURE=1 at run time: the sources, whatever is compiled beside them."""
    code = (
        "import edge_mer.native as n; m = n.compiled_modules(); "
        "assert not any(m.values()), m; print(n.describe())"
    )
    env = {"EDGE_MER_PURE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    compiled_here = stale_reason(env={}) is None and any(compiled_modules().values())
    want = "pure Python (EDGE_MER_PURE is set)" if compiled_here else "pure Python"
    assert out.stdout.strip().startswith(want)
