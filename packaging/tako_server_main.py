"""Entry point of the self-contained ``tako-server`` executable (PyInstaller onefile).

Job: make a frozen build behave like ``python -m tako_server.cli``, then hand over to
``tako_server.cli.main``. Rules:

- ``tako-server -m tako_server.<module> ARGS`` runs that module as ``__main__``, exactly
  as ``python -m`` would: the daemon starts helper processes (edge workers) as
  ``[sys.executable, "-m", "tako_server.edge", ...]``, and in a frozen build
  ``sys.executable`` is this executable. Only modules of ``tako_server`` are accepted.
- Children of the daemon (app instances, runtime prep such as ``npm ci``) must not
  inherit the bundle's private loader path: the bootloader prepends its unpack
  directory to ``LD_LIBRARY_PATH``; it is restored here from ``LD_LIBRARY_PATH_ORIG``.
  Our own process is not affected (the dynamic loader read it when it started), and a
  re-executed ``tako-server`` sets it again for itself.
- ``multiprocessing.freeze_support()`` runs first, so worker processes started with the
  spawn or forkserver method work in the frozen build.
- Outside a frozen build (``python packaging/tako_server_main.py``) only the hand-over
  happens.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
from collections.abc import MutableMapping, Sequence

MODULE_PREFIX = "tako_server"


def clean_frozen_environment(environ: MutableMapping[str, str], frozen: bool) -> None:
    """Undo the bootloader's change of ``LD_LIBRARY_PATH`` that children must not see."""
    if not frozen:
        return
    original = environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original:
        environ["LD_LIBRARY_PATH"] = original
    else:
        environ.pop("LD_LIBRARY_PATH", None)


def module_to_run(argv: Sequence[str]) -> str | None:
    """The module of ``tako-server -m <module> ...``, or None for a normal command line."""
    if len(argv) < 3 or argv[1] != "-m":
        return None
    module = argv[2]
    if module != MODULE_PREFIX and not module.startswith(MODULE_PREFIX + "."):
        raise SystemExit(f"tako-server: -m runs only modules of {MODULE_PREFIX}, not {module!r}")
    return module


def run() -> int:
    """Start ``tako-server`` (or one of its helper modules) and return its exit status."""
    multiprocessing.freeze_support()
    clean_frozen_environment(os.environ, bool(getattr(sys, "frozen", False)))
    module = module_to_run(sys.argv)
    if module is not None:
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    from tako_server.cli import main

    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
