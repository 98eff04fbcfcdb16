"""The global server inventory: ``$TAKO_HOME/config.toml`` with ``[[servers]]`` entries.

Rules:

- ``TAKO_HOME`` (default ``~/.tako``) is read only through :func:`tako_home`;
- a missing file is created empty with a comment header; TOML syntax errors are reported
  with the file and tomllib's line/column message;
- entries: ``name`` (``[a-z][a-z0-9-]{0,62}``), ``host``, ``port`` (default 22),
  optional ``description``, and ``arch``/``libc`` both or neither (x86_64|aarch64,
  glibc|musl); names are unique and so are host+port pairs;
- edits keep the rest of the document (comments, other keys) via tomlkit and are saved
  atomically (temp file + rename).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import tomlkit
from tomlkit.items import AoT, Table

from tako_common.errors import ConfigError, TakoError, ValidationError
from tako_common.names import NAME_RULE, is_valid_name

ARCHES = ("x86_64", "aarch64")
LIBCS = ("glibc", "musl")
_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
_KEYS = ("name", "host", "port", "description", "arch", "libc")
HEADER = (
    "# Tako global config: the servers you deploy to.\n"
    "# Managed by `tako servers add/rm`; edits by hand are kept.\n\n"
)


def tako_home() -> Path:
    """``$TAKO_HOME`` or ``~/.tako``."""
    return Path(os.environ.get("TAKO_HOME") or "~/.tako").expanduser()


def normalize_arch(arch: str) -> str:
    """``amd64`` -> ``x86_64``, ``arm64`` -> ``aarch64``; other values unchanged."""
    return _ARCH_ALIASES.get(arch, arch)


@dataclass(frozen=True)
class ServerEntry:
    """One ``[[servers]]`` entry; construction validates every field."""

    name: str
    host: str
    port: int = 22
    description: str | None = None
    arch: str | None = None
    libc: str | None = None

    def __post_init__(self) -> None:
        for issue in server_issues(self):
            raise ValidationError(issue)

    @property
    def target_label(self) -> str | None:
        """``linux-{arch}-{libc}``, or None when the target was never detected."""
        return f"linux-{self.arch}-{self.libc}" if self.arch and self.libc else None

    def as_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in _KEYS}
        return {k: v for k, v in data.items() if v is not None}


def server_issues(entry: ServerEntry) -> list[str]:
    """Every rule an entry breaks, as one-line messages."""
    issues = []
    if not isinstance(entry.name, str) or not is_valid_name(entry.name):
        issues.append(f"invalid server name {entry.name!r}: {NAME_RULE}")
    if not isinstance(entry.host, str) or not entry.host or any(c.isspace() for c in entry.host):
        issues.append(
            f"invalid host {entry.host!r} for server {entry.name!r}: non-empty, no spaces"
        )
    port_ok = isinstance(entry.port, int) and not isinstance(entry.port, bool)
    if not port_ok or not 1 <= entry.port <= 65535:
        issues.append(f"invalid port {entry.port!r} for server {entry.name!r}: use 1-65535")
    if (entry.arch is None) != (entry.libc is None):
        issues.append(f"server {entry.name!r}: set arch and libc both or neither")
    if entry.arch is not None and entry.arch not in ARCHES:
        issues.append(
            f"server {entry.name!r}: arch {entry.arch!r} must be one of {', '.join(ARCHES)}"
        )
    if entry.libc is not None and entry.libc not in LIBCS:
        issues.append(
            f"server {entry.name!r}: libc {entry.libc!r} must be one of {', '.join(LIBCS)}"
        )
    return issues


class GlobalConfig:
    """The parsed inventory plus its tomlkit document (so saving keeps comments)."""

    def __init__(self, path: Path, doc: tomlkit.TOMLDocument, servers: list[ServerEntry]) -> None:
        self.path = path
        self._doc = doc
        self._servers = servers

    def __repr__(self) -> str:
        return f"GlobalConfig(path={str(self.path)!r}, servers={[s.name for s in self._servers]})"

    @classmethod
    def load(cls, home: Path | None = None) -> GlobalConfig:
        """Read ``{home}/config.toml``, creating it when missing."""
        path = (home if home is not None else tako_home()) / "config.toml"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _atomic_write(path, HEADER)
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: {exc}"], hint="fix the TOML syntax") from exc
        servers = _parse_servers(path, data)
        return cls(path, tomlkit.parse(text), servers)

    @property
    def servers(self) -> list[ServerEntry]:
        return list(self._servers)

    def get(self, name: str) -> ServerEntry | None:
        return next((s for s in self._servers if s.name == name), None)

    def require(self, name: str) -> ServerEntry:
        entry = self.get(name)
        if entry is None:
            raise TakoError(
                f"server {name!r} is not in {self.path}",
                hint=f"add it with `tako servers add <host> --name {name}`",
            )
        return entry

    def add(self, entry: ServerEntry) -> Literal["added", "updated", "unchanged"]:
        """Add ``entry``; same name+host+port is idempotent (metadata refreshed if given)."""
        same = self.get(entry.name)
        clash = next(
            (s for s in self._servers if (s.host, s.port) == (entry.host, entry.port)), None
        )
        if same is not None and (same.host, same.port) != (entry.host, entry.port):
            raise ValidationError(
                f"server {entry.name!r} already exists with host {same.host}:{same.port}",
                hint=f"remove it first with `tako servers rm {entry.name}`",
            )
        if same is None and clash is not None:
            raise ValidationError(
                f"{entry.host}:{entry.port} is already server {clash.name!r}: hosts are unique",
                hint="use the existing name or remove that entry first",
            )
        if same is None:
            self._servers.append(entry)
            self._servers_aot().append(_table(entry))
            return "added"
        merged = replace(
            same,
            description=entry.description if entry.description is not None else same.description,
            arch=entry.arch if entry.arch is not None else same.arch,
            libc=entry.libc if entry.libc is not None else same.libc,
        )
        if merged == same:
            return "unchanged"
        index = self._servers.index(same)
        self._servers[index] = merged
        table = self._servers_aot()[index]
        for key, value in merged.as_dict().items():
            table[key] = value
        return "updated"

    def remove(self, name: str) -> ServerEntry:
        entry = self.require(name)
        index = self._servers.index(entry)
        del self._servers[index]
        aot = self._servers_aot()
        del aot[index]
        if not self._servers:
            del self._doc["servers"]
        return entry

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _atomic_write(self.path, tomlkit.dumps(self._doc))

    def _servers_aot(self) -> AoT:
        if "servers" not in self._doc:
            self._doc.append("servers", tomlkit.aot())
        aot = self._doc["servers"]
        assert isinstance(aot, AoT)
        return aot


def _parse_servers(path: Path, data: dict[str, Any]) -> list[ServerEntry]:
    raw = data.get("servers", [])
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError([f"{path}: servers must be an array of tables ([[servers]])"])
    issues: list[str] = []
    servers: list[ServerEntry] = []
    for index, item in enumerate(raw):
        where = f"{path}: servers[{index}]"
        unknown = sorted(set(item) - set(_KEYS))
        if unknown:
            issues.append(f"{where}: unknown key(s) {', '.join(unknown)}")
        if "name" not in item or "host" not in item:
            issues.append(f"{where}: name and host are required")
            continue
        fields = {k: item[k] for k in _KEYS if k in item}
        if isinstance(fields.get("arch"), str):
            fields["arch"] = normalize_arch(fields["arch"])
        try:
            servers.append(ServerEntry(**fields))
        except ValidationError as exc:
            issues.append(f"{where}: {exc.message}")
    issues += _uniqueness_issues(path, servers)
    if issues:
        raise ConfigError(issues, hint="fix the entries or re-add them with `tako servers add`")
    return servers


def _uniqueness_issues(path: Path, servers: list[ServerEntry]) -> list[str]:
    issues = []
    names: set[str] = set()
    hosts: set[tuple[str, int]] = set()
    for entry in servers:
        if entry.name in names:
            issues.append(f"{path}: server name {entry.name!r} appears twice: names must be unique")
        if (entry.host, entry.port) in hosts:
            issues.append(
                f"{path}: host {entry.host}:{entry.port} appears twice: hosts must be unique"
            )
        names.add(entry.name)
        hosts.add((entry.host, entry.port))
    return issues


def _table(entry: ServerEntry) -> Table:
    table = tomlkit.table()
    for key, value in entry.as_dict().items():
        table[key] = value
    return table


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
