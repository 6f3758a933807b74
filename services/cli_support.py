"""What every ``openbell`` command module shares: the consoles, one-line failures and the runner of a
command's coroutine. The root command (``services.cli``) and every service's ``cli`` module import it;
no module imports the root command.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console

from eventstore import EventStoreError
from services.core import eventloop
from services.core.settings import SettingsError, load_settings

# Tables keep Rich's width on a terminal (or COLUMNS); piped into a file or another program, they are not
# cut to Rich's default of 80 columns, where the wider tables (jobs, history, orders) become unreadable.
PIPED_WIDTH = 160
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def run_async(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; turn expected failures into one-line errors instead of tracebacks."""
    try:
        settings_level = load_settings().log_level
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    logging.basicConfig(level=settings_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return eventloop.run(coro_factory())  # type: ignore[arg-type]
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    except (CommandError, EventStoreError, ValueError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
