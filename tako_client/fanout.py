"""Run one operation on many servers in parallel and collect every host's outcome.

Rules: one server's failure never cancels the others; every host gets a result (value or
error); the caller prints a summary and exits non-zero when any host failed. Pure apart
from awaiting the operation it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tako_common.errors import TakoError

T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True)
class HostResult(Generic[T]):
    server: str
    value: T | None = None
    error: TakoError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def fan_out(
    servers: Sequence[S],
    name_of: Callable[[S], str],
    operation: Callable[[S], Awaitable[T]],
) -> list[HostResult[T]]:
    """Run ``operation`` for every server concurrently; results keep the servers' order."""

    async def one(server: S) -> HostResult[T]:
        name = name_of(server)
        try:
            return HostResult(name, value=await operation(server))
        except TakoError as exc:
            return HostResult(name, error=exc)
        except (TimeoutError, OSError) as exc:
            return HostResult(name, error=TakoError(f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # a bug or a surprising answer must not cancel the others
            return HostResult(
                name,
                error=TakoError(
                    f"unexpected error: {type(exc).__name__}: {exc}",
                    hint="re-run with --verbose and report it",
                ),
            )

    return list(await asyncio.gather(*(one(s) for s in servers)))


def failed(results: Sequence[HostResult[T]]) -> list[HostResult[T]]:
    return [r for r in results if not r.ok]
