"""The systemd unit (verify + security score), install-service planning, and the CLI."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edge_mer.cli.service_cmd import install_service, validate_config
from edge_mer.config import config_from_args
from edge_mer.errors import InputError
from edge_mer.service.install import UnitOptions, detect_devices, plan_install, render_unit
from tests import REPO
from tests.edge.service.test_config import MINIMAL, make_bundle

SHIPPED = REPO / "systemd" / "edge-mer.service"
MAX_EXPOSURE = 2.5
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _real_exec() -> str:
    # verify wants ExecStart's binary to exist; any real executable will do.
    return shutil.which("true") or "/bin/true"


def _write_unit(tmp_path: Path, opts: UnitOptions) -> Path:
    unit = tmp_path / "edge-mer.service"
    unit.write_text(render_unit(opts))
    return unit


def test_shipped_unit_is_the_default_rendering() -> None:
    assert SHIPPED.read_text() == render_unit(), "regenerate systemd/edge-mer.service"
    text = SHIPPED.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=10s",
        "Restart=on-failure",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "ProtectProc=invisible",
        "ExecStart=/usr/local/bin/edge-mer run --config /etc/edge-mer/edge-mer.toml",
    ):
        assert line in text.splitlines()
    unit_part = text.split("[Service]")[0]
    assert "StartLimitIntervalSec=10min" in unit_part and "StartLimitBurst=5" in unit_part
    for banned in ("PrivateDevices=", "PrivateUsers=", "ProcSubset=", "Type=notify-reload"):
        assert f"\n{banned}" not in text


def test_old_systemd_drops_protect_proc() -> None:
    text = render_unit(UnitOptions(systemd_version=245))
    assert "\nProtectProc=" not in text
    assert "ProtectProc=invisible" in render_unit(UnitOptions(systemd_version=249))


@needs_analyze
@pytest.mark.parametrize(
    "opts",
    [
        UnitOptions(),
        UnitOptions(
            systemd_version=245,
            devices=("/dev/nvmap", "char-media"),
            protect_home="read-only",
            private_tmp=False,
            read_write_paths=("/srv/events",),
        ),
    ],
    ids=["default", "jetson5-like"],
)
def test_unit_verifies_and_scores(tmp_path: Path, opts: UnitOptions) -> None:
    unit = _write_unit(tmp_path, dataclasses.replace(opts, exec_path=_real_exec()))
    verify = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [ln for ln in verify.stderr.splitlines() if "edge-mer.service" in ln and ":" in ln]
    assert verify.returncode == 0 and not problems, verify.stderr
    sec = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in sec.stderr and sec.returncode != 0:
        pytest.skip("this systemd-analyze has no --offline (needs systemd >= 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", sec.stdout)
    assert m, sec.stdout + sec.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, sec.stdout


def test_detect_devices_reads_proc_devices(tmp_path: Path) -> None:
    proc = tmp_path / "devices"
    proc.write_text(
        "Character devices:\n  1 mem\n 81 video4linux\n239 media\n240 dma_heap\n\n"
        "Block devices:\n  8 sd\n259 media_blk\n"
    )
    assert detect_devices(tmp_path / "dev", proc) == ["char-media", "char-dma_heap"]
    assert detect_devices(tmp_path / "dev", tmp_path / "missing") == []


def test_plan_refuses_tmp_and_renders_for_this_machine(tmp_path: Path) -> None:
    cfg = config_from_args(tmp_path / "b", "v4l2:///dev/video0", check_files=False)
    with pytest.raises(InputError, match="PrivateTmp"):  # the service has its own /tmp
        plan_install(cfg, exec_path="/usr/bin/true", prefix=tmp_path / "etc", version=252)
    cfg = config_from_args(
        "/opt/edge-mer/bundle",
        "csi://0",
        stdout=False,
        check_files=False,
        tables={"sinks": {"mqtt": {"host": "203.0.113.7"}}},
    )
    plan = plan_install(cfg, exec_path="/usr/bin/edge-mer", prefix=tmp_path / "etc", version=245)
    conf = tmp_path / "etc/edge-mer/edge-mer.toml"
    assert plan.unit_path == tmp_path / "etc/systemd/system/edge-mer.service"
    assert f"ExecStart=/usr/bin/edge-mer run --config {conf}" in plan.unit_text
    assert "\nProtectProc=" not in plan.unit_text and "PrivateTmp=no" in plan.unit_text
    assert "203.0.113.7" in plan.unit_text.split("IPAddressAllow=")[1].splitlines()[0]
    assert ["systemctl", "enable", "edge-mer.service"] in plan.commands
    assert 'host = "203.0.113.7"' in plan.config_text
    # No sink configured: the service still records events, in its LogsDirectory.
    quiet = config_from_args("/opt/b", "v4l2:///dev/video0", stdout=False, check_files=False)
    plan = plan_install(quiet, exec_path="/usr/bin/edge-mer", prefix=tmp_path / "etc", version=252)
    assert 'path = "/var/log/edge-mer/events.jsonl"' in plan.config_text
    assert "ProtectProc=invisible" in plan.unit_text


@pytest.fixture
def home_bundle() -> Iterator[Path]:
    """A bundle outside /tmp (the service cannot see /tmp), under the home folder."""
    root = Path(tempfile.mkdtemp(prefix="edge-mer-test-", dir=Path.home()))
    try:
        yield make_bundle(root / "bundle")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("validate-config")(validate_config)
    app.command("install-service")(install_service)
    return app


def test_validate_config_cli(tmp_path: Path) -> None:
    make_bundle(tmp_path / "bundle")
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    res = CliRunner().invoke(_app(), ["validate-config", str(good)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"OK {good}") and "synthetic://" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "\n[sinks.mqtt]\nhots = 'x'\n")
    res = CliRunner().invoke(_app(), ["validate-config", str(bad)])
    assert res.exit_code == 2
    assert "sinks.mqtt.hots: unknown key; did you mean 'host'?" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_install_service_dry_run_writes_nothing(
    tmp_path: Path, home_bundle: Path, monkeypatch
) -> None:
    import edge_mer.service.install

    # Where this checkout lives (CI may clone under /tmp) must not decide the test: the
    # executable is taken as installed system-wide, as on a device.
    monkeypatch.setattr(
        edge_mer.service.install, "current_executable", lambda: "/usr/local/bin/edge-mer"
    )
    prefix = tmp_path / "etc"
    args = ["install-service", "--dry-run", "--prefix", str(prefix)]
    missing = ["--bundle", str(tmp_path / "nope"), "--source", "v4l2:///dev/video0"]
    res = CliRunner().invoke(_app(), args + missing)
    assert res.exit_code == 2 and "model.bundle" in res.output
    before = sorted(home_bundle.parent.rglob("*"))
    res = CliRunner().invoke(
        _app(), [*args, "--bundle", str(home_bundle), "--source", "v4l2:///dev/video0"]
    )
    assert res.exit_code == 0, res.output
    assert f"# would write {prefix}/systemd/system/edge-mer.service" in res.output
    assert "Type=notify" in res.output and f'bundle = "{home_bundle}"' in res.output
    assert "ProtectHome=read-only" in res.output  # bundle under a home folder
    assert "# would run: systemctl enable edge-mer.service" in res.output
    assert not prefix.exists()
    assert sorted(home_bundle.parent.rglob("*")) == before
    res = CliRunner().invoke(_app(), [*args, "--bundle", str(home_bundle)])
    assert res.exit_code == 2 and "--source" in res.output
    monkeypatch.setattr(
        edge_mer.service.install, "current_executable", lambda: "/tmp/venv/bin/edge-mer"
    )
    res = CliRunner().invoke(
        _app(), [*args, "--bundle", str(home_bundle), "--source", "v4l2:///dev/video0"]
    )
    assert res.exit_code == 2 and "under /tmp" in res.output


def test_example_config_is_valid() -> None:
    from edge_mer.config import load_config

    cfg = load_config(REPO / "systemd" / "edge-mer.toml", check_files=False)
    assert cfg.source.uri == "v4l2:///dev/video0"
    assert str(cfg.sinks.jsonl.path).startswith("/var/log/edge-mer/")
