"""What every ``openbell`` command module shares: the consoles, one-line failures and the runner of a
command's coroutine. The root command (``services.cli``) and every service's ``cli`` module import it;
no module imports the root command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.text import Text

from eventstore import EventStoreError
from services.core import eventloop
from services.core.embedded import EmbeddedServerError
from services.core.logs import configure_logging
from services.core.servers import ServerUnreachable
from services.core.settings import SettingsError, load_settings
from services.model.text import printable

# Tables keep Rich's width on a terminal (or COLUMNS); piped into a file or another program, they are not
# cut to Rich's default of 80 columns, where the wider tables (jobs, history, orders) become unreadable.
PIPED_WIDTH = 160


class SafeConsole(Console):
    """A Rich console that drops terminal escape sequences and control characters from every string it
    renders (table cells included): names, reasons, feeds and errors come from the log and from clients,
    and an escape sequence in them must not reach the operator's terminal. Rich's own styling is added
    after this, so colours still work."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)


console = SafeConsole(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH)
err_console = SafeConsole(stderr=True, soft_wrap=True)

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
    configure_logging(settings_level)
    try:
        return eventloop.run(coro_factory())  # type: ignore[arg-type]
    except (SettingsError, ServerUnreachable, EmbeddedServerError) as exc:
        raise fail(str(exc), 2) from None
    except (CommandError, EventStoreError, ValueError) as exc:
        raise fail(str(exc)) from None
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError) as exc:
        # A server that went away in the middle of a command: one line, like one that was never there.
        raise fail(f"lost the connection to a server: {str(exc).splitlines()[0] if str(exc) else exc!r}", 2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
