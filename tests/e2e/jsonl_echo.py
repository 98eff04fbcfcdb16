"""A tiny JSON-lines server for SSH transport tests, run inside a test host as user ``tako``.

Usage: ``/usr/bin/python3 jsonl_echo.py SOCKET_PATH``. Standard library only (it runs on
Debian's Python, not the test venv). Per request line it answers in the management
protocol's envelope:

- ``{"command": "fail", ...}`` -> ``{"status": "error", "code": "test_failure", ...}``;
- ``{"command": "stream", "count": N}`` -> N ``ok`` lines with ``data.lines``, then the
  connection stays open (like ``logs --follow``) until the client closes it;
- invalid JSON -> an ``error`` line, and the connection stays usable;
- anything else -> ``{"status": "ok", "data": <the request>}``.
"""

import asyncio
import json
import os
import sys


def answer(line: bytes) -> list[dict]:
    try:
        request = json.loads(line)
    except ValueError as exc:
        return [
            {"status": "error", "code": "bad_json", "message": f"invalid JSON: {exc}", "hint": None}
        ]
    if not isinstance(request, dict):
        return [
            {"status": "error", "code": "bad_request", "message": "not an object", "hint": None}
        ]
    command = request.get("command")
    if command == "fail":
        return [
            {
                "status": "error",
                "code": "test_failure",
                "message": "asked to fail",
                "hint": "do not ask",
            }
        ]
    if command == "stream":
        return [
            {"status": "ok", "data": {"lines": [f"line {i}"]}}
            for i in range(int(request.get("count", 3)))
        ]
    return [{"status": "ok", "data": request}]


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            for response in answer(line.rstrip(b"\n")):
                writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
    server = await asyncio.start_unix_server(serve, path=path)
    print(f"listening on {path}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
