"""An app's entrypoint (``main``): a file path or a Python module specifier, and ``{main}``.

Rules (tako.toml 001: "main may be a file path or module specifier"; "an exact {main}
argument is replaced"):

- a *module specifier* is ``package.module:attribute`` (dotted Python identifiers, one
  ``:``, an attribute path), e.g. ``mysite.wsgi:application`` or ``main:app``; anything
  else is a file path relative to the app directory;
- the module of a specifier lives in ``package/module.py`` or
  ``package/module/__init__.py`` (both are candidates, in that order);
- :func:`expand_main` replaces every argument that is exactly ``{main}`` and nothing
  else: ``--entry={main}`` or ``{main}.js`` stay as written.

Pure: no I/O. Used by the client (main resolution, build checks, ``tako config``) and the
server (start commands), so both sides agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAIN_PLACEHOLDER = "{main}"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_SPEC = re.compile(rf"({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)")


def is_module_spec(main: str) -> bool:
    """True for ``package.module:attribute`` (a Python module specifier)."""
    return _MODULE_SPEC.fullmatch(main) is not None


def module_of(main: str) -> str:
    """``"mysite.wsgi:application"`` -> ``"mysite.wsgi"`` (a module specifier only)."""
    match = _MODULE_SPEC.fullmatch(main)
    if match is None:
        raise ValueError(f"{main!r} is not a module specifier (package.module:attribute)")
    return match.group(1)


def module_files(main: str) -> tuple[str, str]:
    """The two files that may hold the module of a specifier, relative to the app dir."""
    path = module_of(main).replace(".", "/")
    return f"{path}.py", f"{path}/__init__.py"


def expand_main(argv: Iterable[str], main: str) -> list[str]:
    """``argv`` with each argument that is exactly ``{main}`` replaced by ``main``."""
    return [main if arg == MAIN_PLACEHOLDER else arg for arg in argv]
