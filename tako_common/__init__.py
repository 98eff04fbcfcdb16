"""Shared, pure layer of Tako: config model, routes, names, protocol and layout.

Rule: nothing here performs network or process I/O, and nothing here imports
``tako_server`` or ``tako_client`` (enforced by the import-linter contract in
pyproject.toml and by ``tests/unit/test_imports.py``).
"""

__version__ = "0.1.0"
