"""Registers each command module's functions on the app."""

from __future__ import annotations

import importlib

import typer

# (command name, module under edge_mer.cli, function). Command modules import only typer
# and the core at import time; their heavy imports live inside the function bodies.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "demo_cmd", "demo"),
    ("synth", "synth_cmd", "synth"),
    ("train", "convert_cmd", "train"),
    ("convert", "convert_cmd", "convert"),
    ("inspect", "convert_cmd", "inspect"),
    ("build-engine", "engine_cmd", "build_engine"),
    ("validate-config", "service_cmd", "validate_config"),
    ("install-service", "service_cmd", "install_service"),
    ("doctor", "doctor_cmd", "doctor"),
    ("run", "run_cmd", "run"),
    ("bench", "bench_cmd", "bench"),
    ("spot-eval", "spot_cmd", "spot_eval"),
]
# (group name, module under edge_mer.cli, its typer.Typer): commands with subcommands.
GROUPS: list[tuple[str, str, str]] = [
    ("datasets", "datasets_cmd", "app"),
    ("experiment", "experiment_cmd", "app"),
]


def register(app: typer.Typer) -> None:
    for name, module, func in COMMANDS:
        mod = importlib.import_module(f"edge_mer.cli.{module}")
        app.command(name)(getattr(mod, func))
    for name, module, attr in GROUPS:
        mod = importlib.import_module(f"edge_mer.cli.{module}")
        app.add_typer(getattr(mod, attr), name=name)
