"""The package registries for test hosts: an HTTPS tunnel proxy that reaches only them.

Test hosts have no route out, but a server's runtime prep installs packages (pip from PyPI,
npm/pnpm from the npm registry). :class:`RegistryProxy` runs this file as a process on the
host's gateway address (the test machine's end of its veth pair): an HTTP ``CONNECT``
proxy that tunnels only to :data:`ALLOWED` hosts on port 443 and refuses everything else
with 403. The host is pointed at it the way a server behind an egress proxy is: the
``tako`` user's own ``~/.npmrc`` (npm, pnpm) and ``~/.config/pip/pip.conf`` in the host's
private ``/home/tako`` — tako-server is told nothing.

Rules: one line per tunnel on stdout (``CONNECT host:443``) so a test can prove a host
fetched from a registry; connect timeout 30 s; the process is ended by its PID when the
fixture ends.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.e2e.hosts import TestHost

ALLOWED = frozenset({"registry.npmjs.org", "pypi.org", "files.pythonhosted.org"})
CONNECT_TIMEOUT = 30.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or port != "443" or host not in ALLOWED:
            print(f"REFUSED {method} {target}", flush=True)
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(host, 443), CONNECT_TIMEOUT
        )
    except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
        writer.close()
        return
    print(f"CONNECT {target}", flush=True)
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _serve(address: str) -> None:
    server = await asyncio.start_server(_handle, address, 0)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    async with server:
        await server.serve_forever()


class RegistryProxy:
    """The proxy process for one host (its output in ``log``), and the host's
    package-manager configuration."""

    def __init__(self, host: TestHost, log: Path) -> None:
        self.host = host
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __repr__(self) -> str:
        return f"RegistryProxy({self.host.name}, {self.url or 'stopped'})"

    def start(self, timeout: float = 10.0) -> None:
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, __file__, self.host.gateway], stdout=out, stderr=out
            )
        deadline = time.monotonic() + timeout
        while not self._lines() and time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        first = (self._lines() or [""])[0].split()
        if first[:1] != ["LISTENING"]:
            self.stop()
            raise RuntimeError(f"registry proxy did not start: {self.log.read_text()[-2000:]}")
        self.url = f"http://{self.host.gateway}:{first[1]}"
        self._configure_host()

    def _configure_host(self) -> None:
        from tests.e2e.hosts import tako_ids

        home = self.host.paths.home
        uid, gid = tako_ids()
        files = {
            home / ".npmrc": f"proxy={self.url}/\nhttps-proxy={self.url}/\nfund=false\n"
            "audit=false\nupdate-notifier=false\n",
            home / ".config" / "pip" / "pip.conf": f"[global]\nproxy = {self.url}\n"
            "disable-pip-version-check = true\n",
        }
        for directory in (home / ".config", home / ".config" / "pip"):
            directory.mkdir(exist_ok=True)
            os.chown(directory, uid, gid)
        for path, text in files.items():
            path.write_text(text)
            os.chown(path, uid, gid)

    def tunnels(self) -> list[str]:
        """Hosts tunnelled to so far (``host:443``)."""
        return [line.split()[1] for line in self._lines() if line.startswith("CONNECT ")]

    def _lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
