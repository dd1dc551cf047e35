"""Backends: a study killed with SIGKILL resumes to the same results; Ray gives the same
predictions as the local pool; a Ray address that does not answer is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_mer.cli import app

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
EDGE_MER = [str(BIN / "edge-mer")]


def _same_results(a: Path, b: Path) -> None:
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    for key in ("results", "folds", "int8_minus_fp32", "labels"):
        assert ra[key] == rb[key], key
    assert ra["jobs"] == rb["jobs"]
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()


def _end_group(proc: subprocess.Popen) -> None:
    """End every process the test started (its own process group), by group id."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, synthetic: Path) -> tuple[Path, Path]:
    """(study, an uninterrupted local run of it with --jobs 2)."""
    from tests.convert.experiment.conftest import study_text

    base = tmp_path_factory.mktemp("reference")
    study = base / "study.toml"
    study.write_text(study_text(synthetic, seeds="[0, 1]"))
    out = base / "out"
    args = ["experiment", "run", str(study), "--out", str(out), "--jobs", "2", "-q"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return study, out


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_gives_the_same_results(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    study, full = reference
    out = tmp_path / "out"
    cmd = [*EDGE_MER, "experiment", "run", str(study), "--out", str(out), "--jobs", "2", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("*/seed=*/fold=*/DONE.json"))) < 2:
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and (PR_SET_PDEATHSIG) its workers
        proc.wait()
    done = {p: p.read_text() for p in out.glob("*/seed=*/fold=*/DONE.json")}
    assert 2 <= len(done) < 8, "kill it part-way"
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    for p, text in done.items():
        assert p.read_text() == text, f"{p} was recomputed"
    assert not list(out.glob("*/seed=*/.fold=*")), "scratch folders are swept"
    _same_results(out, full)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_ray_cluster_gives_the_local_pools_predictions(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    if not _unshare_works():
        pytest.skip("needs `unshare -n` (root) to keep Ray on a private 127.0.0.1")
    study, full = reference
    out = tmp_path / "out"
    logs = tmp_path / "logs"
    logs.mkdir()
    # RAY_ADDRESS is set by the script; --jobs 2 gives the same 1 torch thread per job.
    cmd = [*EDGE_MER, "experiment", "run", str(study), "--out", str(out)]
    cmd += ["--backend", "ray", "--jobs", "2", "-q"]
    proc = subprocess.Popen(
        ["unshare", "-n", "bash", str(HERE / "ray_cluster.sh"), str(BIN), str(logs), "6399", *cmd],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=600)
    finally:
        _end_group(proc)
    assert proc.returncode == 0, output + (logs / "head.log").read_text()[-2000:]
    _same_results(out, full)


def test_a_ray_address_where_nothing_answers_is_one_line(write_study, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    study = write_study()
    args = ["experiment", "run", str(study), "--out", str(tmp_path / "o"), "--backend", "ray"]
    res = CliRunner().invoke(app, [*args, "--address", f"127.0.0.1:{port}"])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and f"Ray cluster at 127.0.0.1:{port} does not answer" in lines[0]
