"""``python -m tako_server.devedge --state-dir DIR [--https-port N] [--http-port N]``.

Started by ``tako dev`` (detached, in its own session); prints one start-up envelope on
stdout, logs to stderr, exits when no app is left (see :mod:`.service`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvloop

from .service import DevEdgeService, DevEdgeSettings


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0-65535")
    return value


def parse_args(argv: list[str]) -> DevEdgeSettings:
    parser = argparse.ArgumentParser(prog="python -m tako_server.devedge")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--https-port", type=_port, default=None)
    parser.add_argument("--http-port", type=_port, default=None)
    args = parser.parse_args(argv)
    return DevEdgeSettings(args.state_dir, args.https_port, args.http_port)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    return uvloop.run(DevEdgeService(settings).run())


if __name__ == "__main__":
    sys.exit(main())
