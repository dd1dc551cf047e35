"""``edge-mer build-engine BUNDLE``: TensorRT engines, built on the device that runs them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edge_mer.cli import common
from edge_mer.cli.common import console, errors


class Precision(str, Enum):
    int8 = "int8"
    fp16 = "fp16"
    fp32 = "fp32"


@errors
def build_engine(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder written by `edge-mer convert`.")],
    engines_dir: Annotated[
        Path | None,
        typer.Option(
            "--engines-dir",
            help="Where engines go (default BUNDLE/engines); use a "
            "writable folder such as a systemd StateDirectory when the bundle is "
            "read-only.",
        ),
    ] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            "--precision",
            help="Encoder precision (default int8 when the bundle has "
            "an INT8 encoder, else fp16). The step (LSTM) is never INT8.",
        ),
    ] = None,
    workspace: Annotated[
        int,
        typer.Option(
            "--workspace", help="Builder workspace cap in MiB (0 = TensorRT decides).", min=0
        ),
    ] = 256,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch",
            help="Largest batch the engines accept: faces x step rows per track (the window "
            "T for a recurrent state, 1 for a window state; `edge-mer inspect` shows it).",
            min=1,
        ),
    ] = 8,
    clip: Annotated[
        bool, typer.Option("--clip", help="Also build the whole-clip engine (for evaluation).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when a valid engine exists.")
    ] = False,
    verbose_trt: Annotated[
        bool, typer.Option("--trt-verbose", help="Show TensorRT's INFO messages.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks.")] = False,
) -> None:
    """Build TensorRT engines for BUNDLE on this device (Jetson, TensorRT 8.5 to 11.x)."""
    if debug:
        common.DEBUG = True
    from edge_mer.runners.tensorrt import build as trt_build

    opened, plan, trt = trt_build.plan_engines(
        bundle,
        engines_dir=engines_dir,
        precision=precision.value if precision else None,
        workspace_mib=workspace,
        max_batch=max_batch,
        include_clip=clip,
    )
    f = plan.facts
    console.print(
        f"TensorRT {f.trt_version} on {f.gpu_name} (sm{f.sm})"
        + (f", L4T {f.l4t_release}" if f.l4t_release else "")
    )
    console.print(
        f"engines: {plan.engines_dir}   batch {plan.batch.min}/{plan.batch.opt}/"
        f"{plan.batch.max}   workspace "
        + (f"{plan.workspace_mib} MiB" if plan.workspace_mib else "TensorRT default")
    )
    for g in plan.graphs:
        flags = "+".join(g.builder_flags) or (
            "strongly typed" if f.trt_version.strongly_typed_only else "no precision flags"
        )
        console.print(
            f"  {g.graph:<8} {g.source:<13} {g.precision:<5} [{flags}] -> {g.engine_path.name}"
        )
    for note in plan.notes:
        console.print(f"  note: {note}")
    results = trt_build.build_engines(
        opened,
        plan,
        trt,
        force=force,
        logger_level="info" if verbose_trt else "warning",
        progress=lambda msg: console.print(f"  {msg}"),
    )
    for r in results:
        console.print(f"{r.status}: {r.build.engine_path}")
