"""Entry point of an edge worker process: ``python -m tako_server.edge --channel-fd N ...``."""

from .workers import main

main()
