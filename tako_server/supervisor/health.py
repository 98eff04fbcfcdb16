"""Health probe of one instance: ``GET /status`` with ``Host: tako.internal`` on loopback.

Rules: a raw asyncio connection (no client library, no pooling), ``Connection: close``,
only the status line is read; any HTTP status below 500 is healthy (plain apps without a
``/status`` route pass with their 404); a refused connection, a timeout (``probe_timeout``,
2 s) or a status of 500 and above is a failure. The result says why, for the app log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

STATUS_HOST = "tako.internal"
STATUS_PATH = "/status"
_REQUEST = (
    f"GET {STATUS_PATH} HTTP/1.1\r\nHost: {STATUS_HOST}\r\nUser-Agent: tako-health\r\n"
    "Accept: */*\r\nConnection: close\r\n\r\n"
).encode("ascii")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    status: int | None = None


def parse_status_line(line: bytes) -> int | None:
    """``HTTP/1.1 200 OK`` -> 200; anything else -> None."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    try:
        code = int(parts[1])
    except ValueError:
        return None
    return code if 100 <= code <= 999 else None


def judge(status: int | None) -> ProbeResult:
    """Map a parsed status code to a verdict."""
    if status is None:
        return ProbeResult(False, "no valid HTTP status line")
    if status >= 500:
        return ProbeResult(False, f"/status answered {status}", status)
    return ProbeResult(True, f"/status answered {status}", status)


async def probe(host: str, port: int, timeout: float = 2.0) -> ProbeResult:
    """Probe ``http://host:port/status`` once."""
    try:
        return await asyncio.wait_for(_probe(host, port), timeout)
    except TimeoutError:
        return ProbeResult(False, f"no answer within {timeout:g}s")
    except ConnectionRefusedError:
        return ProbeResult(False, "connection refused")
    except OSError as exc:
        return ProbeResult(False, f"connection failed: {exc.strerror or exc}")


async def _probe(host: str, port: int) -> ProbeResult:
    reader, writer = await asyncio.open_connection(host, port, limit=16 * 1024)
    try:
        writer.write(_REQUEST)
        await writer.drain()
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            return ProbeResult(False, "status line too long")
        if not line:
            return ProbeResult(False, "connection closed without an answer")
        return judge(parse_status_line(line))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
