"""Hold N idle TLS keep-alive connections to a proxy (run by bench/run.py as a subprocess).

Usage: ``python bench/idle.py PORT COUNT ADDRESSES`` (connects to 127.0.0.1:PORT).

Opens COUNT TLS connections from ADDRESSES loopback source addresses (127.1.x.y, as
bench/srcaddr.c numbers them), sends one ``GET /`` on each and reads its response, so
every connection has been through a full request as a browser's has. Then it prints
``HELD <ok> FAILED <n>`` and waits for a line on stdin (the benchmark reads the proxy's
memory meanwhile). On that line it sends a second request on each held connection and
prints ``ALIVE <n>`` (connections the proxy kept open and still served), then closes them
all and exits. Every step is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from bench.measure import raise_nofile, source_address  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: tako-bench-idle\r\n\r\n"
OPEN_AT_ONCE = 200
STEP_TIMEOUT = 30.0

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """One request/response on a keep-alive connection; True when a 200 came back whole."""
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        await reader.readuntil(b"0\r\n\r\n")
    else:
        await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def open_one(port: int, index: int, addresses: int, ctx: ssl.SSLContext) -> Conn | None:
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=ctx,
                local_addr=(source_address(index % addresses), 0),
                server_hostname="127.0.0.1",
            )
            if await exchange(reader, writer):
                return reader, writer
            writer.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        pass
    return None


async def still_alive(conn: Conn) -> bool:
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            return await exchange(*conn)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        return False


async def main(port: int, count: int, addresses: int) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def gated(index: int) -> Conn | None:
        async with gate:
            return await open_one(port, index, addresses, ctx)

    opened = await asyncio.gather(*(gated(i) for i in range(count)))
    held = [conn for conn in opened if conn is not None]
    print(f"HELD {len(held)} FAILED {count - len(held)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    alive = await asyncio.gather(*(still_alive(conn) for conn in held))
    print(f"ALIVE {sum(alive)}", flush=True)
    for _, writer in held:
        writer.transport.abort()


if __name__ == "__main__":
    raise_nofile(max(4 * int(sys.argv[2]), 4096))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > int(sys.argv[2])
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
