"""SSH transport of the CLI: asyncssh connections as user ``tako``, one per server per command.

Rules:

- the login user is ``tako``; only ``servers add --install`` logs in as another user (root
  or a sudoer, :attr:`SshTarget.user`) with the same keys and host-key checks;
- host keys are checked against ``~/.ssh/known_hosts`` and the files in ``TAKO_KNOWN_HOSTS``
  (``os.pathsep``-separated). An unknown key is shown with its SHA256 fingerprint and
  accepted only on an interactive "yes" (then appended to ``~/.ssh/known_hosts``); without a
  terminal it is an error with an ``ssh-keyscan`` hint. A *changed* key is always refused,
  naming the host and both fingerprints;
- client keys: ``TAKO_SSH_KEY`` (key text, for CI), then ``~/.ssh/id_ed25519``,
  ``id_ecdsa``, ``id_rsa``, then the ssh-agent (``SSH_AUTH_SOCK``). Encrypted keys use
  ``TAKO_SSH_KEY_PASSPHRASE`` or a masked prompt; ``~/.ssh/config`` is not read;
- connect timeout 15 s, keepalive every 15 s (3 misses = dead);
- the management socket is reached with ``direct-streamlocal`` (no netcat); uploads go over
  SFTP to ``<remote>.part`` and are renamed into place;
- every asyncssh/OS error is translated into a :class:`SshError` subclass with a hint.
Environment is read only in :meth:`SshSettings.from_env`; prompts only through the
``Prompter`` given to :class:`SshClient`.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import asyncssh

from tako_client import output
from tako_common.errors import ProtocolError, TakoError
from tako_common.protocol import FrameDecoder

SSH_USER = "tako"
DEFAULT_SOCKET = "/var/run/tako/tako.sock"
CONNECT_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 3
KEY_FILES = ("id_ed25519", "id_ecdsa", "id_rsa")


class SshError(TakoError):
    """SSH to a server failed (connect, auth, channel, transfer)."""

    code = "ssh"


class ConnectError(SshError):
    code = "ssh_connect"


class AuthenticationError(SshError):
    code = "ssh_auth"


class HostKeyUnknownError(SshError):
    code = "host_key_unknown"


class HostKeyChangedError(SshError):
    code = "host_key_changed"


class Prompter(Protocol):
    def confirm(self, question: str) -> bool: ...
    def secret(self, question: str) -> str: ...


class TerminalPrompter:
    """Asks on the terminal; callers only use it when the session is interactive."""

    def confirm(self, question: str) -> bool:
        import typer

        return bool(typer.confirm(question, default=False))

    def secret(self, question: str) -> str:
        return getpass.getpass(f"{question}: ")


@dataclass(frozen=True)
class SshSettings:
    """Everything the transport reads from the environment, read once."""

    home: Path
    extra_known_hosts: tuple[Path, ...] = ()
    key_text: str | None = None
    passphrase: str | None = None
    agent_path: str | None = None
    interactive: bool = False
    connect_timeout: float = CONNECT_TIMEOUT

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, interactive: bool | None = None
    ) -> SshSettings:
        env = os.environ if environ is None else environ
        home = Path(env.get("HOME") or Path.home())
        extra = tuple(
            Path(p).expanduser() for p in env.get("TAKO_KNOWN_HOSTS", "").split(os.pathsep) if p
        )
        return cls(
            home=home,
            extra_known_hosts=extra,
            key_text=env.get("TAKO_SSH_KEY") or None,
            passphrase=env.get("TAKO_SSH_KEY_PASSPHRASE") or None,
            agent_path=env.get("SSH_AUTH_SOCK") or None,
            interactive=output.is_interactive() if interactive is None else interactive,
        )

    @property
    def user_known_hosts(self) -> Path:
        return self.home / ".ssh" / "known_hosts"

    @property
    def known_hosts_files(self) -> list[Path]:
        return [p for p in (self.user_known_hosts, *self.extra_known_hosts) if p.is_file()]


@dataclass(frozen=True)
class SshTarget:
    """Where to connect; ``label`` (the server name) makes messages readable. ``user`` is
    ``tako`` except for ``servers add --install``, which logs in as root or a sudoer."""

    host: str
    port: int = 22
    label: str = ""
    user: str = SSH_USER

    @property
    def display(self) -> str:
        where = f"{self.host}:{self.port}"
        return f"{self.label} ({where})" if self.label and self.label != self.host else where

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts spells it: ``host`` on port 22, ``[host]:port`` otherwise."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


class RunResult(NamedTuple):
    exit: int
    stdout: str
    stderr: str


# --------------------------------------------------------------------------- host keys


@dataclass(frozen=True)
class HostKeyVerdict:
    kind: Literal["trusted", "unknown", "changed"]
    presented: str  # SHA256 fingerprint of the key the server showed
    known: tuple[str, ...] = ()  # fingerprints known_hosts holds for this host


def judge_host_key(known: list[asyncssh.SSHKey], presented: asyncssh.SSHKey) -> HostKeyVerdict:
    """Trusted if listed; changed if the host has other keys on record; unknown otherwise."""
    fingerprint = presented.get_fingerprint("sha256")
    known_prints = tuple(k.get_fingerprint("sha256") for k in known)
    if fingerprint in known_prints:
        return HostKeyVerdict("trusted", fingerprint, known_prints)
    return HostKeyVerdict("changed" if known else "unknown", fingerprint, known_prints)


class _HostKeyPolicy(asyncssh.SSHClient):
    """Feeds asyncssh the keys on record and records what the server presented."""

    def __init__(
        self,
        known_hosts: asyncssh.SSHKnownHosts | None,
        port_known_hosts: asyncssh.SSHKnownHosts | None = None,
    ) -> None:
        self._known_hosts = known_hosts
        # For ports other than 22 only ``[host]:port`` entries count, as in OpenSSH
        # (asyncssh would fall back to the plain-host entry of the port-22 server).
        self._port_known_hosts = port_known_hosts
        self.known: list[asyncssh.SSHKey] = []
        self.verdict: HostKeyVerdict | None = None
        self.presented: asyncssh.SSHKey | None = None

    def match(
        self, host: str, addr: str, port: int | None
    ) -> tuple[list[Any], list[Any], list[Any]]:
        table = self._known_hosts if port in (None, 22) else self._port_known_hosts
        if table is None:
            return [], [], []
        keys, ca_keys, revoked, *_ = asyncssh.match_known_hosts(table, host, addr, port)
        self.known = list(keys)
        return list(keys), list(ca_keys), list(revoked)

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.verdict = judge_host_key(self.known, key)
        self.presented = key
        return self.verdict.kind == "trusted"


def _port_known_hosts(files: list[Path]) -> asyncssh.SSHKnownHosts | None:
    """Only the entries that can name a port: ``[host]:port`` patterns and hashed ones."""
    lines = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0].startswith("@"):
                fields = fields[1:]
            if fields and (fields[0].startswith("|") or "]:" in fields[0]):
                lines.append(line)
    if not lines:
        return None
    try:
        return asyncssh.import_known_hosts("\n".join(lines) + "\n")
    except ValueError:
        return None


def _read_known_hosts(files: list[Path]) -> asyncssh.SSHKnownHosts | None:
    if not files:
        return None
    try:
        return asyncssh.read_known_hosts([str(f) for f in files])
    except (OSError, ValueError) as exc:
        raise SshError(
            f"cannot read known_hosts ({', '.join(map(str, files))}): {exc}",
            hint="fix or remove the broken line",
        ) from exc


def changed_key_error(
    target: SshTarget, verdict: HostKeyVerdict, files: list[Path]
) -> HostKeyChangedError:
    return HostKeyChangedError(
        f"HOST KEY CHANGED for {target.display}: server shows {verdict.presented}, "
        f"known_hosts has {', '.join(verdict.known)} - "
        "refusing to connect (possible man-in-the-middle)",
        hint=f"if the server was really reinstalled, remove its old line with "
        f"`ssh-keygen -R '{target.known_hosts_name}'` ({', '.join(map(str, files))}) "
        "and connect again",
    )


def unknown_key_error(target: SshTarget, verdict: HostKeyVerdict) -> HostKeyUnknownError:
    return HostKeyUnknownError(
        f"host key of {target.display} is not in known_hosts (fingerprint {verdict.presented})",
        hint="check the fingerprint on the server "
        "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then run "
        f"`ssh-keyscan -p {target.port} {target.host} >> ~/.ssh/known_hosts`, "
        "or connect once interactively",
    )


def append_known_host(path: Path, target: SshTarget, key: asyncssh.SSHKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = key.export_public_key("openssh").decode().split()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{target.known_hosts_name} {line[0]} {line[1]}\n")


# --------------------------------------------------------------------------- client keys


def load_client_keys(settings: SshSettings, prompter: Prompter) -> list[asyncssh.SSHKey]:
    """``TAKO_SSH_KEY`` first, then the default key files that exist (decrypted if needed)."""
    keys: list[asyncssh.SSHKey] = []
    if settings.key_text:
        keys.append(_import_key(settings.key_text, "TAKO_SSH_KEY", settings, prompter))
    for name in KEY_FILES:
        path = settings.home / ".ssh" / name
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                output.warn(f"skipping SSH key {path}: {exc.strerror}")
                continue
            key = _import_key(text, str(path), settings, prompter, optional=True)
            if key is not None:
                keys.append(key)
    return keys


def _import_key(
    text: str, origin: str, settings: SshSettings, prompter: Prompter, optional: bool = False
) -> Any:
    try:
        return asyncssh.import_private_key(text)
    except asyncssh.KeyImportError as exc:
        if "passphrase" not in str(exc).lower():
            raise AuthenticationError(f"cannot read SSH key {origin}: {exc}") from exc
    passphrase = settings.passphrase
    if passphrase is None and settings.interactive:
        with _PROMPT_LOCK:
            passphrase = prompter.secret(f"Passphrase for {origin}")
    if passphrase is None:
        if optional:
            output.detail(
                f"skipping encrypted SSH key {origin}: no passphrase (set TAKO_SSH_KEY_PASSPHRASE)"
            )
            return None
        raise AuthenticationError(
            f"SSH key {origin} is encrypted and no passphrase was given",
            hint="set TAKO_SSH_KEY_PASSPHRASE",
        )
    try:
        return asyncssh.import_private_key(text, passphrase)
    except asyncssh.KeyEncryptionError as exc:
        if "bcrypt" in str(exc):
            raise AuthenticationError(
                f"cannot decrypt SSH key {origin}: encrypted OpenSSH keys need the bcrypt package",
                hint="pip install bcrypt (or use an unencrypted key / ssh-agent)",
            ) from exc
        raise AuthenticationError(
            f"cannot decrypt SSH key {origin}: wrong passphrase?",
            hint="check TAKO_SSH_KEY_PASSPHRASE",
        ) from exc
    except asyncssh.KeyImportError as exc:
        raise AuthenticationError(
            f"cannot decrypt SSH key {origin}: wrong passphrase?",
            hint="check TAKO_SSH_KEY_PASSPHRASE",
        ) from exc


_PROMPT_LOCK = threading.Lock()  # one question on the terminal at a time (parallel connects)


# --------------------------------------------------------------------------- client


@dataclass
class SshClient:
    """Opens connections for one CLI command; client keys are loaded (and decrypted) once."""

    settings: SshSettings
    prompter: Prompter = field(default_factory=TerminalPrompter)
    _keys: list[asyncssh.SSHKey] | None = None
    _keys_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_env(cls) -> SshClient:
        return cls(SshSettings.from_env())

    def _client_keys(self) -> list[asyncssh.SSHKey]:
        with self._keys_lock:
            if self._keys is None:
                self._keys = load_client_keys(self.settings, self.prompter)
                if not self._keys and not self.settings.agent_path:
                    raise AuthenticationError(
                        "no SSH key found (looked at TAKO_SSH_KEY, "
                        f"~/.ssh/{', ~/.ssh/'.join(KEY_FILES)}, ssh-agent)",
                        hint="create one with `ssh-keygen -t ed25519` "
                        "and authorise it for user tako on the server",
                    )
            return self._keys

    async def public_key_line(self) -> str:
        """``<type> <base64> [comment]`` of the key tako logs in with: the first client key,
        else the first key of the ssh-agent (what ``servers add --install`` authorises)."""
        keys = await asyncio.to_thread(self._client_keys)
        if keys:
            return str(keys[0].export_public_key("openssh").decode().strip())
        try:
            async with asyncssh.connect_agent(self.settings.agent_path or "") as agent:
                pairs = await agent.get_keys()
        except (asyncssh.Error, OSError) as exc:
            raise AuthenticationError(f"cannot read the ssh-agent's keys: {exc}") from exc
        if not pairs:
            raise AuthenticationError(
                "no SSH key to authorise: the ssh-agent holds none",
                hint="create one with `ssh-keygen -t ed25519` or add one with `ssh-add`",
            )
        public = asyncssh.import_public_key(pairs[0].public_data)
        public.set_comment(pairs[0].get_comment_bytes())
        return str(public.export_public_key("openssh").decode().strip())

    async def connect(self, target: SshTarget) -> Connection:
        """Connect as ``target.user``; asks once about an unknown host key when interactive."""
        keys = await asyncio.to_thread(self._client_keys)
        for _ in range(2):
            files = self.settings.known_hosts_files
            policy = _HostKeyPolicy(_read_known_hosts(files), _port_known_hosts(files))
            try:
                conn = await self._open(target, keys, policy)
            except asyncssh.HostKeyNotVerifiable as exc:
                verdict = policy.verdict
                if verdict is None:
                    raise SshError(
                        f"host key of {target.display} was refused: {exc.reason}"
                    ) from exc
                if verdict.kind == "changed":
                    raise changed_key_error(target, verdict, files) from exc
                if not await asyncio.to_thread(self._ask_trust, target, verdict):
                    raise unknown_key_error(target, verdict) from exc
                assert policy.presented is not None
                append_known_host(self.settings.user_known_hosts, target, policy.presented)
                output.success(
                    f"added {target.known_hosts_name} to {self.settings.user_known_hosts}"
                )
                continue
            return Connection(conn, target)
        raise SshError(f"host key of {target.display} changed while connecting")

    async def _open(
        self, target: SshTarget, keys: list[asyncssh.SSHKey], policy: _HostKeyPolicy
    ) -> asyncssh.SSHClientConnection:
        where = target.display
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: policy,
                target.host,
                target.port,
                username=target.user,
                known_hosts=policy.match,
                client_keys=keys,
                agent_path=self.settings.agent_path or "",
                config=None,
                connect_timeout=self.settings.connect_timeout,
                keepalive_interval=KEEPALIVE_INTERVAL,
                keepalive_count_max=KEEPALIVE_COUNT_MAX,
            )
            return conn
        except asyncssh.HostKeyNotVerifiable:
            raise
        except asyncssh.PermissionDenied as exc:
            home = "/home/tako" if target.user == SSH_USER else f"~{target.user}"
            raise AuthenticationError(
                f"SSH login as {target.user}@{where} was refused: {exc.reason}",
                hint=f"authorise your public key in {home}/.ssh/authorized_keys on the server, "
                "or set TAKO_SSH_KEY",
            ) from exc
        except ConnectionRefusedError as exc:
            raise ConnectError(
                f"connection to {where} refused",
                hint="check that sshd runs there and the port is right (--port)",
            ) from exc
        except socket.gaierror as exc:
            raise ConnectError(
                f"cannot resolve host {target.host!r}: {exc.strerror}",
                hint="check the host name in `tako servers ls`",
            ) from exc
        except TimeoutError as exc:
            raise ConnectError(
                f"connection to {where} timed out after {self.settings.connect_timeout:.0f}s",
                hint="check the address, port and firewall",
            ) from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {where}: {exc.strerror or exc}") from exc
        except asyncssh.Error as exc:
            raise SshError(f"SSH to {where} failed: {exc.reason}") from exc

    def _ask_trust(self, target: SshTarget, verdict: HostKeyVerdict) -> bool:
        if not self.settings.interactive:
            return False
        with _PROMPT_LOCK:
            output.warn(f"the authenticity of {target.display} can't be established")
            output.line(f"  host key fingerprint: {verdict.presented}")
            return self.prompter.confirm(
                f"Trust this key and add it to {self.settings.user_known_hosts}?"
            )


# --------------------------------------------------------------------------- connection

ProgressCallback = Callable[[int, int], None]  # (bytes sent, total bytes)


class ControlChannel:
    """One stream to tako-server's Unix socket, framed as JSON lines (many requests per stream)."""

    def __init__(self, reader: Any, writer: Any, where: str) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder()
        self._frames: deque[bytes | ProtocolError] = deque()
        self.where = where
        self.closed = False

    def __repr__(self) -> str:
        return f"ControlChannel({self.where}, closed={self.closed}, queued={len(self._frames)})"

    async def send(self, frame: bytes) -> None:
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except (asyncssh.Error, OSError) as exc:
            raise SshError(
                f"lost the control channel to tako-server on {self.where}: {exc}"
            ) from exc

    async def receive(self, timeout: float | None = None) -> bytes:
        """The next frame; :class:`SshError` on timeout or when the server closes the stream."""
        while not self._frames:
            try:
                chunk = await asyncio.wait_for(self._reader.read(65536), timeout)
            except TimeoutError as exc:
                raise SshError(
                    f"tako-server on {self.where} did not answer within {timeout:.0f}s",
                    code="server_timeout",
                ) from exc
            except (asyncssh.Error, OSError) as exc:
                raise SshError(
                    f"lost the control channel to tako-server on {self.where}: {exc}"
                ) from exc
            if not chunk:
                raise SshError(
                    f"tako-server on {self.where} closed the control connection",
                    code="server_closed",
                )
            self._frames.extend(self._decoder.feed(chunk))
        frame = self._frames.popleft()
        if isinstance(frame, ProtocolError):
            raise frame
        return frame

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        with suppress(asyncssh.Error, OSError):
            await asyncio.wait_for(self._writer.wait_closed(), 5)


class Connection:
    """One SSH connection to one server: commands, the control socket, SFTP uploads."""

    def __init__(self, conn: asyncssh.SSHClientConnection, target: SshTarget) -> None:
        self._conn = conn
        self.target = target

    def __repr__(self) -> str:
        return f"Connection({self.target.display})"

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(
        self, command: str, *, input: str | None = None, timeout: float | None = 120
    ) -> RunResult:
        """Run a shell command as ``tako``; (exit, stdout, stderr), no raise on exit != 0."""
        try:
            result = await self._conn.run(
                command,
                input=input,
                check=False,
                timeout=timeout,
                encoding="utf-8",
                errors="replace",
            )
        except asyncssh.TimeoutError as exc:
            raise SshError(
                f"`{command}` on {self.target.display} did not finish within {timeout:.0f}s"
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise SshError(f"running `{command}` on {self.target.display} failed: {exc}") from exc
        exit_status = result.exit_status if result.exit_status is not None else -1
        return RunResult(exit_status, str(result.stdout or ""), str(result.stderr or ""))

    async def open_control(self, socket_path: str = DEFAULT_SOCKET) -> ControlChannel:
        """A stream to tako-server's socket via ``direct-streamlocal``."""
        try:
            reader, writer = await self._conn.open_unix_connection(socket_path)
        except asyncssh.ChannelOpenError as exc:
            raise SshError(
                f"cannot reach tako-server's socket {socket_path} "
                f"on {self.target.display}: {exc.reason}",
                code="server_unreachable",
                hint="is tako-server running? check `systemctl status tako-server` on the server",
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise SshError(f"lost the connection to {self.target.display}: {exc}") from exc
        return ControlChannel(reader, writer, self.target.display)

    async def upload(
        self, local: Path, remote: str, progress_cb: ProgressCallback | None = None
    ) -> None:
        """SFTP ``local`` to ``remote.part``, then rename it to ``remote`` (never a half file)."""
        part = f"{remote}.part"

        def handler(_src: bytes, _dst: bytes, done: int, total: int) -> None:
            if progress_cb is not None:
                progress_cb(done, total)

        try:
            async with self._conn.start_sftp_client() as sftp:
                try:
                    await sftp.put(str(local), part, progress_handler=handler)
                    await _replace(sftp, part, remote)
                except BaseException:
                    with suppress(asyncssh.Error, OSError):
                        await sftp.remove(part)
                    raise
        except asyncssh.SFTPError as exc:
            raise SshError(
                f"upload of {local.name} to {self.target.display}:{remote} failed: {exc.reason}",
                hint="check the free disk space and permissions of the incoming directory",
            ) from exc
        except FileNotFoundError as exc:
            raise TakoError(f"cannot upload {local}: file not found") from exc
        except (asyncssh.Error, OSError) as exc:
            raise SshError(
                f"upload of {local.name} to {self.target.display} failed: {exc}"
            ) from exc

    async def download(self, remote: str, local: Path) -> None:
        """SFTP ``remote`` to ``local.part``, then rename it to ``local`` (never a half file)."""
        part = local.with_name(f"{local.name}.part")
        try:
            async with self._conn.start_sftp_client() as sftp:
                await sftp.get(remote, str(part))
            os.replace(part, local)
        except (asyncssh.Error, OSError) as exc:
            with suppress(OSError):
                part.unlink()
            reason = exc.reason if isinstance(exc, asyncssh.SFTPError) else exc
            raise SshError(
                f"download of {self.target.display}:{remote} to {local} failed: {reason}"
            ) from exc

    async def close(self) -> None:
        self._conn.close()
        with suppress(asyncssh.Error, OSError):
            await asyncio.wait_for(self._conn.wait_closed(), 5)


async def _replace(sftp: Any, source: str, dest: str) -> None:
    try:
        await sftp.posix_rename(source, dest)
    except asyncssh.SFTPOpUnsupported:
        with suppress(asyncssh.SFTPNoSuchFile):
            await sftp.remove(dest)
        await sftp.rename(source, dest)
