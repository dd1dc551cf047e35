"""The ``edge-mer`` command line: thin commands over the library (DESIGN §5).

Each command lives in its own module and is registered here. Commands parse their
options, call one library function, print, and let :func:`edge_mer.cli.common.errors`
map :class:`~edge_mer.errors.EdgeMerError` to exit codes (0 ok, 1 failure, 2 bad input).
Heavy imports (torch, onnx, cv2) happen inside the command that needs them.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from edge_mer import __version__
from edge_mer.cli import common
from edge_mer.cli.commands import register

app = typer.Typer(
    name="edge-mer",
    help="Micro-expression recognition models from the lab to a Jetson or a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edge-mer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show Python tracebacks for errors.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log INFO messages.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    common.DEBUG = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


register(app)


def main() -> None:
    """Console-script entry point."""
    app()
