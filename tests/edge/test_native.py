"""Which frame-loop modules run compiled, as the bench and doctor report it.

The suite runs on an editable install (pure Python); the installed-wheel smoke asserts the
compiled case and runs the frame loop's tests against it (scripts/installed-smoke.sh).
"""

from __future__ import annotations

import importlib

from edge_mer.bench.report import frame_loop_line
from edge_mer.native import NATIVE_MODULES, compiled_modules, describe
from edge_mer.service.doctor import frame_loop_finding
from edge_mer.service.machine import collect_facts


def test_every_listed_module_is_reported_and_describe_agrees() -> None:
    got = compiled_modules()
    assert tuple(got) == NATIVE_MODULES
    for name, compiled in got.items():
        path = importlib.import_module(name).__file__ or ""
        assert compiled == (not path.endswith(".py")), (name, path)
    n = sum(got.values())
    want = "pure Python" if n == 0 else f"compiled (mypyc), {n} of {len(got)} frame-loop modules"
    assert describe() == want


def test_bench_and_doctor_say_it() -> None:
    how = describe()
    assert collect_facts()["frame_loop"] == how
    line = frame_loop_line({"machine": {"frame_loop": how}})
    finding = frame_loop_finding()
    if how == "pure Python":
        assert "pure Python" in line and "mypyc" in line
        assert finding.ok is None and "mypyc" in finding.fix
    else:
        assert line == f"frame loop: {how}" and finding.ok is True
    assert frame_loop_line({"machine": {}}) == ""  # reports written before the fact existed
