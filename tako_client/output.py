"""The only module of the CLI that prints: status lines, warnings, errors, tables.

Interactive = stdin and stdout are terminals: spinners and colours only then; plain lines
otherwise (CI logs). Errors go to stderr as one red line plus an optional hint. Output of a
remote command (``tako exec``, a release command) is written as it came: raw bytes for one
server, ``server | line`` lines when several servers speak.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, TaskID

_out = Console(highlight=False, soft_wrap=True, emoji=False)
_err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
_verbose = False


def set_verbose(value: bool) -> None:
    global _verbose
    _verbose = value


def is_verbose() -> bool:
    return _verbose


def is_interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def line(text: str = "") -> None:
    _out.print(text, markup=False)


def section(title: str) -> None:
    _out.print()
    _out.print(f"[bold]{title}[/bold]")


def success(text: str) -> None:
    _out.print(f"[green]✓[/green] {_escape(text)}")


def bullet(text: str) -> None:
    _out.print(f"  • {_escape(text)}")


def detail(text: str) -> None:
    if _verbose:
        _out.print(f"[dim]  {_escape(text)}[/dim]")


def warn(text: str) -> None:
    _err.print(f"[yellow]![/yellow] {_escape(text)}")


def error(text: str, hint: str | None = None) -> None:
    _err.print(f"[red]✗ {_escape(text)}[/red]")
    if hint:
        _err.print(f"  [dim]hint: {_escape(hint)}[/dim]")


def remote_line(server: str, text: str, *, err: bool = False) -> None:
    """One line of a remote command's output, prefixed with its server (written verbatim)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(f"{server} | {text}\n")
    stream.flush()


def remote_bytes(data: bytes, *, err: bool = False) -> None:
    """A remote command's output exactly as it came (its own terminal's escapes included)."""
    stream = sys.stderr if err else sys.stdout
    stream.flush()
    stream.buffer.write(data)
    stream.buffer.flush()


@contextmanager
def spinner(text: str) -> Iterator[None]:
    """A spinner on a terminal; a plain line otherwise."""
    if is_interactive():
        with _out.status(_escape(text)):
            yield
    else:
        line(text)
        yield


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


class TransferProgress:
    """Upload progress bars, one per server, on a terminal; silent otherwise."""

    def __init__(self) -> None:
        self._progress: Progress | None = Progress(console=_out) if is_interactive() else None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> TransferProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def callback(self, name: str) -> Callable[[int, int], None] | None:
        progress = self._progress
        if progress is None:
            return None

        def update(done: int, total: int) -> None:
            if name not in self._tasks:
                self._tasks[name] = progress.add_task(f"upload {name}", total=total)
            progress.update(self._tasks[name], completed=done, total=total)

        return update


def transfer_progress() -> TransferProgress:
    return TransferProgress()
