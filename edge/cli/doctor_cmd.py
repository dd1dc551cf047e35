"""``edge-mer doctor``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edge_mer.cli.common import console, errors


@errors
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """What this machine offers (TensorRT, CUDA, GStreamer in cv2, cameras, picamera2, board)
    and what is missing for which feature."""
    from dataclasses import asdict

    from rich.markup import escape

    from edge_mer.service.doctor import check

    findings = check()
    if as_json:
        typer.echo(json.dumps([asdict(f) for f in findings], indent=2))
        return
    marks = {True: "[green]ok[/green]  ", False: "[red]no[/red]  ", None: "[dim]--[/dim]  "}
    for f in findings:
        line = f"{marks[f.ok]}{escape(f.name):<30} {escape(f.detail)}"
        if f.ok is False and f.needed_for:
            line += f"\n      [dim]needed for {escape(f.needed_for)}; fix: {escape(f.fix)}[/dim]"
        console.print(line)
