"""The systemd unit and ``edge-mer install-service``: render, plan, then apply.

:func:`render_unit` writes the hardened ``Type=notify`` unit (the shipped
``systemd/edge-mer.service`` is its output with the defaults; a test keeps them equal).
:func:`plan_install` looks at this machine (device nodes, groups, systemd version, the
edge-mer executable) and returns an :class:`InstallPlan`: the files it would write and the
commands it would run. :func:`apply_install` carries a plan out; ``--dry-run`` only
prints it. Only directives systemd 245-252 know are used (JetPack 5/6, Pi OS Bookworm).
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_mer.bundle import write_atomic
from edge_mer.config import Config
from edge_mer.errors import EdgeMerError, InputError

DEFAULT_EXEC = "/usr/local/bin/edge-mer"
DEFAULT_CONFIG = "/etc/edge-mer/edge-mer.toml"
EVENTS_PATH = "/var/log/edge-mer/events.jsonl"
# Jetson GPU nodes (L4T r32-r35 nvhost, r36 nvgpu/igpu0, and nvidia* where present).
JETSON_GLOBS = ("nvmap", "nvhost-*", "nvgpu/*/*", "nvidia*")
# Class names from /proc/devices: libcamera's media controller and DMA heaps (Pi).
# v4l-subdev nodes use the video4linux major, so char-video4linux already covers them.
CLASS_DEVICES = ("media", "dma_heap")
# Outgoing addresses allowed by default: local resolver and broker, the LAN (RFC 1918/4193).
IP_ALLOW = "localhost link-local 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7"
_HOMES = ("/home", "/root", "/run/user")


@dataclass(frozen=True)
class UnitOptions:
    """What varies between machines; the defaults render the shipped unit."""

    exec_path: str = DEFAULT_EXEC
    config_path: str = DEFAULT_CONFIG
    user: str = "edge-mer"
    groups: tuple[str, ...] = ("video",)
    devices: tuple[str, ...] = ()
    """Extra DeviceAllow= entries (paths or char-CLASS) besides char-video4linux."""
    systemd_version: int | None = None
    """None = assume >= 247 (ProtectProc= kept)."""
    ip_allow: str = IP_ALLOW
    protect_home: str = "yes"
    private_tmp: bool = True
    read_write_paths: tuple[str, ...] = ()


def render_unit(opts: UnitOptions | None = None) -> str:
    """The unit file text for ``opts`` (defaults: the shipped ``systemd/edge-mer.service``)."""
    o = opts or UnitOptions()
    new_enough = o.systemd_version is None or o.systemd_version >= 247
    dev = [f"DeviceAllow={d} rw" for d in o.devices]
    if not dev:
        dev = [
            "# Rendered by install-service for the nodes present; examples:",
            "#   Jetson:  DeviceAllow=/dev/nvmap rw, /dev/nvhost-ctrl-gpu, /dev/nvhost-gpu,",
            "#            /dev/nvhost-as-gpu, /dev/nvhost-ctrl, /dev/nvgpu/igpu0/* (L4T r36)",
            "#   Pi cam:  DeviceAllow=char-media rw, DeviceAllow=char-dma_heap rw",
        ]
    proc = (
        [
            "# systemd >= 247; install-service drops it on JetPack 5 (systemd 245).",
            "ProtectProc=invisible",
        ]
        if new_enough
        else ["# ProtectProc= needs systemd >= 247; this one is older."]
    )
    rw = [f"ReadWritePaths={p}" for p in o.read_write_paths]
    tmp = (
        ["PrivateTmp=yes"]
        if o.private_tmp
        else [
            "# csi:// source: nvargus-daemon may be reached through /tmp (verify).",
            "PrivateTmp=no",
        ]
    )
    lines = [
        "# edge-mer: live micro-expression recognition (rendered by `edge-mer install-service`).",
        "# Directives are those systemd 245-252 know (JetPack 5 = 245, JetPack 6 = 249,",
        "# Pi OS Bookworm = 252). Check: systemd-analyze verify / security --offline=true.",
        "[Unit]",
        "Description=edge-mer micro-expression recognition",
        "Documentation=https://github.com/edge-mer/edge-mer",
        "Wants=network-online.target",
        "After=network-online.target",
        "# 5 failed starts in 10 min, then stay failed (the default 5 in 10 s burns out fast).",
        "StartLimitIntervalSec=10min",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "# READY=1 after config + bundle checks and one warm-up inference (DESIGN §7).",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={o.exec_path} run --config {o.config_path}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "# WATCHDOG=1 only while frames/inferences advance; a stall is restarted.",
        "WatchdogSec=10s",
        "# Bundle hash check + engine load + warm-up on a slow board.",
        "TimeoutStartSec=120s",
        "TimeoutStopSec=15s",
        "# SIGTERM to the daemon only: it drains its own capture child.",
        "KillMode=mixed",
        "Restart=on-failure",
        "RestartSec=5s",
        "Environment=PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1",
        "",
        "# Identity: a system user; devices through groups, not root.",
        f"User={o.user}",
        f"Group={o.user}",
        f"SupplementaryGroups={' '.join(o.groups)}",
        "",
        "# Devices: PrivateDevices= would hide /dev/video* and the GPU, so allow-list instead.",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        *dev,
        "",
        "# Filesystem: models and config read-only; engines/state, cache, logs per directory.",
        "ProtectSystem=strict",
        f"ProtectHome={o.protect_home}",
        *tmp,
        *rw,
        "StateDirectory=edge-mer",
        "CacheDirectory=edge-mer",
        "LogsDirectory=edge-mer",
        "RuntimeDirectory=edge-mer",
        "ConfigurationDirectory=edge-mer",
        "UMask=0077",
        "",
        "# Privileges.",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "RemoveIPC=yes",
        "KeyringMode=private",
        "",
        "# Kernel and processes. Not ProcSubset=pid: it hides /proc/device-tree (Jetson",
        "# detection) and /proc/meminfo. Not PrivateUsers=: it breaks group device access.",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        *proc,
        "",
        "# System calls. MemoryDenyWriteExecute= is left off: it breaks cffi/ctypes",
        "# callbacks and JITs; enable it only after testing on the device.",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "SystemCallErrorNumber=EPERM",
        "",
        "# Network: UNIX for sd_notify, IP for MQTT and /metrics; local and LAN only.",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "IPAddressDeny=any",
        f"IPAddressAllow={o.ip_allow}",
        "",
        "# Resources: leak backstop; no core dumps (they would hold face frames).",
        "MemoryHigh=1536M",
        "MemoryMax=2G",
        "TasksMax=256",
        "LimitCORE=0",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- machine facts


def systemd_version(
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> int | None:
    """The major version from ``systemctl --version``, or None when it cannot be read."""
    try:
        out = run(["systemctl", "--version"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"systemd (\d+)", out or "")
    return int(m.group(1)) if m else None


def detect_devices(
    dev_root: str | Path = "/dev", proc_devices: str | Path = "/proc/devices"
) -> list[str]:
    """DeviceAllow= entries for the camera/GPU nodes present, besides char-video4linux.

    Jetson GPU nodes are listed by path (their majors are shared with other misc devices);
    libcamera's media controller and DMA heaps by class name when the kernel has them.
    """
    root = Path(dev_root)
    found = []
    for pattern in JETSON_GLOBS:
        found += sorted(str(p) for p in root.glob(pattern) if p.is_char_device())
    classes = _char_classes(Path(proc_devices))
    found += [f"char-{c}" for c in CLASS_DEVICES if c in classes]
    return found


def _char_classes(proc_devices: Path) -> set[str]:
    """Names in the "Character devices:" part of /proc/devices."""
    try:
        text = proc_devices.read_text()
    except OSError:
        return set()
    names, in_char = set(), False
    for line in text.splitlines():
        if line.endswith(":"):
            in_char = line.startswith("Character")
        elif in_char and len(line.split()) == 2:
            names.add(line.split()[1])
    return names


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def current_executable() -> str:
    """The edge-mer console script this Python runs (venv first), as an absolute path."""
    beside = Path(sys.executable).parent / "edge-mer"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    found = shutil.which("edge-mer")
    if found:
        return str(Path(found).absolute())
    raise EdgeMerError(
        "cannot find the edge-mer executable to put in ExecStart; install edge-mer "
        "(pip install edge-mer) so `edge-mer` is on PATH"
    )


# ---------------------------------------------------------------------------- plan + apply


@dataclass
class InstallPlan:
    """What install-service would do: files to write, commands to run, and why."""

    unit_path: Path
    unit_text: str
    config_path: Path
    config_text: str
    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _allowed_by_default(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    nets = [ipaddress.ip_network(n) for n in IP_ALLOW.split() if "/" in n]
    in_lan = any(addr in n for n in nets if n.version == addr.version)
    return addr.is_loopback or addr.is_link_local or in_lan


def _under(path: Path | str, roots: Sequence[str]) -> bool:
    p = str(path)
    return any(p == r or p.startswith(r + "/") for r in roots)


def plan_install(
    config: Config,
    *,
    user: str = "edge-mer",
    prefix: str | Path = "/etc",
    exec_path: str | None = None,
    version: int | None = -1,
    dev_root: str | Path = "/dev",
    proc_devices: str | Path = "/proc/devices",
) -> InstallPlan:
    """Render the unit and config for this machine without changing anything.

    Args:
        version: systemd major version; -1 = ask ``systemctl --version``.

    Raises:
        InputError: a path the sandboxed service could not reach (under /tmp).
    """
    prefix = Path(prefix)
    notes: list[str] = []
    exec_path = exec_path or current_executable()
    if version == -1:
        version = systemd_version()
    if version is not None and version < 247:
        notes.append(f"systemd {version} < 247: ProtectProc= left out")
    cfg = config
    if not (cfg.sinks.jsonl.path or cfg.sinks.stdout.enabled or cfg.sinks.mqtt.host):
        jsonl = cfg.sinks.jsonl.model_copy(update={"path": Path(EVENTS_PATH)})
        cfg = cfg.model_copy(update={"sinks": cfg.sinks.model_copy(update={"jsonl": jsonl})})
        notes.append(f"no sink configured: events go to {EVENTS_PATH}")
    read_only = [Path(exec_path), cfg.model.bundle]
    if cfg.model.engines_dir:
        read_only.append(cfg.model.engines_dir)
    for p in [*read_only, cfg.sinks.jsonl.path]:
        if p is not None and _under(p, ("/tmp", "/var/tmp")):
            raise InputError(
                f"{str(p)!r} is under /tmp, which the service does not share (PrivateTmp=yes): "
                "move it to /opt/edge-mer or /var/lib/edge-mer"
            )
    protect_home = "yes"
    if any(_under(p, _HOMES) for p in read_only):
        protect_home = "read-only"
        notes.append(
            "the executable or bundle is under a home folder: ProtectHome=read-only "
            "(move them to /opt/edge-mer for ProtectHome=yes)"
        )
    rw: list[str] = []
    events = cfg.sinks.jsonl.path
    if events is not None and not _under(events, ("/var/log/edge-mer", "/var/lib/edge-mer")):
        if _under(events, _HOMES):
            raise InputError(
                f"sinks.jsonl.path {str(events)!r} is in a home folder the service "
                "cannot write (ProtectHome=); use /var/log/edge-mer/events.jsonl"
            )
        rw.append(str(events.parent))
    groups = ["video"] + [g for g in ("render",) if _group_exists(g)]
    ip_allow = IP_ALLOW
    host = cfg.sinks.mqtt.host
    if host:
        try:
            addr = ipaddress.ip_address(host)
            if not _allowed_by_default(addr):
                ip_allow += f" {addr}"
        except ValueError:
            notes.append(
                f"MQTT host {host!r} is a name: if it resolves outside the LAN, add "
                "its address with `systemctl edit edge-mer` (IPAddressAllow=)"
            )
    devices = detect_devices(dev_root, proc_devices)
    opts = UnitOptions(
        exec_path=exec_path,
        config_path=str(prefix / "edge-mer" / "edge-mer.toml"),
        user=user,
        groups=tuple(groups),
        devices=tuple(devices),
        systemd_version=version,
        ip_allow=ip_allow,
        protect_home=protect_home,
        private_tmp=not cfg.source.uri.startswith("csi://"),
        read_write_paths=tuple(rw),
    )
    commands = []
    if not _user_exists(user):
        commands.append(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                "--groups",
                ",".join(groups),
                user,
            ]
        )
    commands += [["systemctl", "daemon-reload"], ["systemctl", "enable", "edge-mer.service"]]
    return InstallPlan(
        unit_path=prefix / "systemd" / "system" / "edge-mer.service",
        unit_text=render_unit(opts),
        config_path=Path(opts.config_path),
        config_text=cfg.to_toml(),
        commands=commands,
        notes=notes,
    )


def apply_install(
    plan: InstallPlan, *, run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
) -> None:
    """Write the files (atomically, mode 0644) and run the plan's commands. Needs root.

    Raises:
        InputError: not root.
        EdgeMerError: a command failed (its stderr is in the message).
    """
    if os.geteuid() != 0:
        raise InputError("install-service needs root: run it with sudo (or pass --dry-run)")
    for cmd in plan.commands[:1] if plan.commands and plan.commands[0][0] == "useradd" else []:
        _run(cmd, run)
    for path, text in ((plan.config_path, plan.config_text), (plan.unit_path, plan.unit_text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
        os.chmod(path, 0o644)
    for cmd in plan.commands:
        if cmd[0] != "useradd":
            _run(cmd, run)


def _run(cmd: list[str], run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    try:
        proc = run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EdgeMerError(f"`{' '.join(cmd)}` could not run: {exc}") from None
    if proc.returncode != 0:
        raise EdgeMerError(
            f"`{' '.join(cmd)}` failed ({proc.returncode}): {(proc.stderr or '').strip()}"
        )
