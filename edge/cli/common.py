"""What every command shares: error mapping, the console, progress display."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from edge_mer.errors import EdgeMerError

DEBUG = False
# soft_wrap: no hard line breaks at 80 columns when the output is a pipe or a log file.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def errors(fn: F) -> F:
    """Map edge-mer errors to one line on stderr and their exit code (2 bad input, 1 failure).

    With ``--debug`` the traceback is shown instead.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeMerError as exc:
            if DEBUG:
                raise
            print(f"edge-mer: error: {exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print("edge-mer: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class StageLog:
    """Prints one line per long-running stage to stderr, with the elapsed time.

    Call it with a message; pass it as the ``say`` callback of library functions.
    """

    def __init__(self, quiet: bool = False) -> None:
        import time

        self._clock = time.perf_counter
        self._start = self._clock()
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            err_console.print(f"[dim]{self._clock() - self._start:7.1f}s[/dim]  {message}")
