"""The Typer application, shared output helpers and the one place that maps errors to exit codes."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

app = typer.Typer(
    name="hwnas",
    help=(
        "Hardware-aware latency profiling and neural-architecture search.\n\n"
        "Example: hwnas demo   (the whole pipeline on this CPU; then open demo-output/report/report.html)\n\n"
        "Next: hwnas devices, hwnas profile local --space compact, hwnas COMMAND --help (each names an example)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

stderr = Console(stderr=True)

# C0/C1 control characters (tab and newline kept), DEL, and the bidirectional overrides that reorder what a
# terminal shows: what a device, a profile or a file says must never move the cursor, retitle or recolour.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain(text: Any) -> str:
    """``text`` as a string without control characters, for a terminal."""
    return _CONTROL.sub("", str(text))


def shown(text: Any) -> str:
    """``text`` for a Rich markup string or table cell: control characters stripped, markup (``[/bold]``) escaped."""
    return escape(plain(text))


class _PlainFormatter(logging.Formatter):
    """Log lines on stderr carry device output: strip its control characters (newlines kept)."""

    def format(self, record: logging.LogRecord) -> str:
        return plain(super().format(record))


@app.callback()
def _root() -> None:
    """Hardware-aware latency profiling and neural-architecture search.

    Global flag: --debug (anywhere) prints tracebacks and debug logs.
    """

_state: dict[str, Any] = {"debug": False, "json": False, "json_stream": None}


def _reserve_stdout_for_json() -> int | None:
    """With --json, stdout carries exactly one JSON object: whatever else writes to file descriptor 1
    (converters and runtimes print from C++) is sent to stderr instead. Returns the saved descriptor
    (None when stdout is not file descriptor 1, e.g. captured in-process)."""
    try:
        if sys.stdout.fileno() != 1:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    _state["json_stream"] = os.fdopen(os.dup(saved), "w", encoding="utf-8")
    return saved


def _restore_stdout(saved: int | None) -> None:
    stream = _state.get("json_stream")
    if stream is not None:
        stream.flush()
        stream.close()
        _state["json_stream"] = None
    if saved is not None:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)

JsonOption = typer.Option(False, "--json", help="Print exactly one JSON object on stdout.")


class UsageError(ValueError):
    """Bad command-line usage detected by a command itself (exit 2)."""

    exit_code = 2


class WorkFailed(RuntimeError):
    """The work ran but failed on its own terms (exit 1)."""

    exit_code = 1


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Print a command's result: one JSON object with ``--json``, else a human view on stdout."""
    if as_json:
        stream = _state.get("json_stream") or sys.stdout
        stream.write(json.dumps(_jsonable(result), sort_keys=False) + "\n")
        stream.flush()
        return
    if human is not None:
        human(result)
        return
    out = Console()
    for key, value in result.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(_jsonable(value))
            if len(value) > 200:
                value = value[:197] + "..."
        out.print(f"[bold]{shown(key)}[/bold]: {shown(value)}", highlight=False)


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``advance(done=None, total=None, what=None)``.

    Library code takes a plain ``on_progress(done, total, what)`` callback; this adapts it.
    """
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[what]}"),
        console=stderr,
        transient=False,
        disable=not stderr.is_terminal and False,
    )
    with bar:
        task = bar.add_task(description, total=total, what="")

        def update(done: int | None = None, total_: int | None = None, what: str | None = None) -> None:
            kwargs: dict[str, Any] = {}
            if done is not None:
                kwargs["completed"] = done
            if total_ is not None:
                kwargs["total"] = total_
            if what is not None:
                kwargs["what"] = what[:60]
            bar.update(task, **kwargs)

        yield update


def exit_code_for(exc: BaseException) -> int:
    code = getattr(type(exc), "exit_code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return 2
    return 1


def _one_line(exc: BaseException) -> str:
    text = plain(str(exc).strip().replace("\n", " | ")) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    known = getattr(type(exc), "exit_code", None) is not None or isinstance(exc, OSError)
    if not known:
        text = f"internal error ({type(exc).__name__}): {text} (rerun with --debug for the traceback)"
    return text


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``hwnas`` and ``python -m hwnas``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        _state["debug"] = True
        args = [a for a in args if a != "--debug"]
    saved = _reserve_stdout_for_json() if "--json" in args else None
    try:
        _main(args)
    finally:
        _restore_stdout(saved)


def _main(args: list[str]) -> None:
    logging.basicConfig(
        level=logging.DEBUG if _state["debug"] else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_PlainFormatter(handler.formatter._fmt if handler.formatter else None))  # noqa: SLF001
    from hwnas.cli import _commands  # noqa: F401  (registers the commands)

    try:
        rv = app(args=args, prog_name="hwnas", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        stderr.print("aborted", style="red", highlight=False)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show(file=sys.stderr)
        sys.exit(2 if exc.exit_code not in (0, 1) else exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:  # the one place that maps errors to exit codes
        if _state["debug"]:
            traceback.print_exc()
        sys.stderr.write(f"hwnas: error: {_one_line(exc)}\n")
        sys.exit(exit_code_for(exc))
    sys.exit(rv if isinstance(rv, int) else 0)
