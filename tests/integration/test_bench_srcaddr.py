"""bench/srcaddr.c, the LD_PRELOAD shim that gives wrk many loopback source addresses:
compiled with the machine's C compiler, it binds each loopback connect() to the next
127.1.x.y address, and does nothing without BENCH_SOURCE_ADDRESSES."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import source_shim

CONNECT_THREE = (
    "import socket, sys\n"
    "for _ in range(3):\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
)


def peers(shim: Path, addresses: str | None) -> list[str]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(10)
        env = {**os.environ, "LD_PRELOAD": str(shim)}
        if addresses is not None:
            env["BENCH_SOURCE_ADDRESSES"] = addresses
        port = str(server.getsockname()[1])
        child = subprocess.Popen([sys.executable, "-c", CONNECT_THREE, port], env=env)
        try:
            found = []
            for _ in range(3):
                conn, (host, _port) = server.accept()
                conn.close()
                found.append(host)
            assert child.wait(timeout=10) == 0
            return found
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler (TAKO_SETUP_BENCH=1 scripts/setup installs gcc)")
    built = source_shim(tmp_path_factory.mktemp("shim"))
    assert built is not None
    return built


def test_connections_rotate_over_the_given_number_of_source_addresses(shim: Path) -> None:
    assert peers(shim, "2") == ["127.1.0.1", "127.1.0.2", "127.1.0.1"]


def test_without_the_variable_the_shim_leaves_connections_alone(shim: Path) -> None:
    assert peers(shim, None) == ["127.0.0.1"] * 3
