"""What every command shares: error mapping, the console, progress display."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from edge_mer.errors import EdgeMerError, missing_dependency

DEBUG = False
#: Commands that run on the host, where `[convert]` brings every module they use.
HOST_COMMANDS = ("demo", "synth", "train", "convert")
# soft_wrap: no hard line breaks at 80 columns when the output is a pipe or a log file.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def errors(fn: F) -> F:
    """Map edge-mer errors to one line on stderr and their exit code (2 bad input, 1 failure).

    An optional module that is not installed (torch, onnxruntime, cv2, paho, matplotlib,
    TensorRT...) is bad input too: one line naming the extra to install, exit 2, wherever
    in the command the import happens. With ``--debug`` the traceback is shown instead.
    """
    command = fn.__name__.replace("_", "-")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeMerError as exc:
            if DEBUG:
                raise
            print(f"edge-mer: error: {exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except ModuleNotFoundError as exc:
            missing = missing_dependency(exc, f"edge-mer {command}", host=command in HOST_COMMANDS)
            if missing is None or DEBUG:
                raise
            print(f"edge-mer: error: {missing}", file=sys.stderr)
            raise typer.Exit(missing.exit_code) from None
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
