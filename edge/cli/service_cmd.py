"""``edge-mer validate-config FILE`` and ``edge-mer install-service [--dry-run]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_mer.cli import common
from edge_mer.cli.common import console, errors

Debug = Annotated[bool, typer.Option("--debug", help="Show Python tracebacks.")]


@errors
def validate_config(
    file: Annotated[Path, typer.Argument(help="Daemon config (TOML) to check.")],
    keys: Annotated[
        bool, typer.Option("--keys", help="Also list every key with its description.")
    ] = False,
    no_files: Annotated[
        bool,
        typer.Option(
            "--no-files",
            help="Check syntax, keys and values only; do not open the bundle or check that "
            "what the config turns on is installed here.",
        ),
    ] = False,
    debug: Debug = False,
) -> None:
    """Check a daemon config: unknown keys, types, ranges, and the bundle it names."""
    if debug:
        common.DEBUG = True
    from edge_mer.config import describe_fields, load_config
    from edge_mer.service.doctor import check_requirements

    cfg = load_config(file, check_files=not no_files)
    if not no_files:  # a config for this machine: what it turns on must be installed here
        check_requirements(cfg)
    console.print(f"OK {file}", markup=False)
    for line in cfg.summary():
        console.print(f"  {line}", markup=False)
    if keys:
        for key, tp, default, desc in describe_fields():
            console.print(f"  {key:<32} {tp:<34} {default:<18} {desc}", markup=False)


@errors
def install_service(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be written and run; change nothing.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Daemon config (TOML) to install.")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Bundle folder (instead of --config).")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Source URI, e.g. v4l2:///dev/video0.")
    ] = None,
    user: Annotated[
        str, typer.Option("--user", help="System user the service runs as.")
    ] = "edge-mer",
    prefix: Annotated[
        Path,
        typer.Option(
            "--prefix", help="Where etc files go: PREFIX/systemd/system, PREFIX/edge-mer."
        ),
    ] = Path("/etc"),
    debug: Debug = False,
) -> None:
    """Render the systemd unit and config for this machine, create the user, enable the service."""
    if debug:
        common.DEBUG = True
    from edge_mer.config import config_from_args, load_config
    from edge_mer.errors import InputError
    from edge_mer.service.install import apply_install, plan_install

    if config is not None:
        if bundle is not None or source is not None:
            raise InputError("pass either --config FILE or --bundle B --source URI, not both")
        cfg = load_config(config)
    elif bundle is not None and source is not None:
        cfg = config_from_args(bundle, source, stdout=False)
    else:
        raise InputError(
            "install-service needs --config FILE, or --bundle B and --source URI "
            "(e.g. --bundle /opt/edge-mer/bundle --source v4l2:///dev/video0)"
        )
    from edge_mer.service.doctor import check_requirements

    check_requirements(cfg)  # the service would fail at its first start
    plan = plan_install(cfg, user=user, prefix=prefix)
    if dry_run:
        console.print(f"# would write {plan.config_path}")
        console.print(plan.config_text, markup=False)
        console.print(f"# would write {plan.unit_path}")
        console.print(plan.unit_text, markup=False)
        for cmd in plan.commands:
            console.print(f"# would run: {' '.join(cmd)}", markup=False)
    else:
        apply_install(plan)
        console.print(f"wrote {plan.config_path} and {plan.unit_path}")
        console.print("enabled edge-mer.service: start it with `sudo systemctl start edge-mer`")
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
