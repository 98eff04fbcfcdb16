"""``tako servers add --install``: put tako-server on a bare host over a root or sudo login.

Rules:

- the login is ``root`` (default) or a user that may run ``sudo -n`` (no password prompt);
  every command that needs root is wrapped by :func:`privileged`, and a user without
  passwordless sudo is refused before anything is uploaded;
- the release tarball, its ``.sha256`` and ``install-server.sh`` go into a fresh
  ``mktemp -d`` directory, which is removed afterwards on every path; the installer runs
  with ``TAKO_SERVER_ARTIFACT`` and so verifies the checksum itself before changing anything;
- idempotence: the installer is skipped when ``/usr/local/bin/tako-server`` already is the
  tarball's executable (same SHA-256) *and* a tako-server process owns the control socket;
  otherwise it runs (install, upgrade with a zero-downtime reload, or start);
- the caller's public key is appended to ``~tako/.ssh/authorized_keys`` only when no line
  holds the same key type and body (dir 0700, file 0600, both ``tako:tako``);
- failures are one-line :class:`TakoError` messages naming the step; a failed installer is
  reported with its exit code and its last lines of output.
Command texts are built by pure functions; :func:`install_on_host` is the only I/O here.
"""

from __future__ import annotations

import asyncio
import shlex
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from tako_client import output
from tako_client.server_release import (
    BUILD_HINT,
    check_target,
    checkout_dist,
    detect_target,
    find_artifact,
    read_checksum,
    release_files,
    server_digest,
    upload_release,
)
from tako_client.ssh import AuthenticationError, Connection, SshClient, SshTarget
from tako_common.errors import TakoError, ValidationError

BINARY = "/usr/local/bin/tako-server"
SOCKET = "/var/run/tako/tako.sock"
INSTALLER = "install-server.sh"
INSTALL_TIMEOUT = 600.0
TAIL_LINES = 5
START_TIMEOUT = 60.0
POLL_INTERVAL = 0.5
LOG_TAIL = (
    "tail -n 5 /var/log/tako-server.log 2>/dev/null"
    " || journalctl -u tako-server -n 5 --no-pager 2>/dev/null || true"
)
SUDO_CHECK = (
    'command -v sudo >/dev/null 2>&1 || { echo "sudo is not installed" >&2; exit 127; }; '
    "sudo -n true"
)


@dataclass(frozen=True)
class InstalledState:
    """What the host has now: the installed executable's SHA-256 (None if absent) and
    whether a tako-server process owns the control socket."""

    digest: str | None
    running: bool


@dataclass(frozen=True)
class Installed:
    """What ``install_on_host`` did."""

    arch: str
    libc: str
    artifact: Path
    installed: bool  # False: the same build was already installed and running
    version: str  # e.g. "tako-server 0.1.0" from the installer ("" when skipped)
    key_added: bool


# --------------------------------------------------------------------------- pure parts


def privileged(script: str, user: str) -> str:
    """``script`` run by ``sh`` as root: directly for root, else through ``sudo -n``."""
    command = f"sh -c {shlex.quote(script)}"
    return command if user == "root" else f"sudo -n {command}"


def state_script() -> str:
    """Prints the installed executable's SHA-256 (``-`` if none), then ``running`` or
    ``stopped`` (the pid behind ``tako.sock -> tako-<pid>.sock`` is alive or not)."""
    return (
        f"if [ -f {BINARY} ]; then sha256sum {BINARY} | cut -d' ' -f1; else echo -; fi; "
        f"link=$(readlink {SOCKET} 2>/dev/null || true); pid=${{link##*tako-}}; "
        "pid=${pid%.sock}; "
        'case "$pid" in ""|*[!0-9]*) echo stopped ;; '
        '*) if kill -0 "$pid" 2>/dev/null; then echo running; else echo stopped; fi ;; esac'
    )


def parse_state(text: str) -> InstalledState:
    lines = text.split()
    if len(lines) != 2 or lines[1] not in ("running", "stopped"):
        raise TakoError(f"unexpected answer when checking the installed tako-server: {text!r}")
    return InstalledState(None if lines[0] == "-" else lines[0], lines[1] == "running")


def needs_install(state: InstalledState, artifact_digest: str) -> bool:
    """Run the installer unless this very executable is installed and serving."""
    return not (state.digest == artifact_digest and state.running)


def install_script(workdir: str, tarball_name: str) -> str:
    """The installer run on a local artifact (it verifies ``<tarball>.sha256`` itself)."""
    artifact = shlex.quote(f"{workdir}/{tarball_name}")
    script = shlex.quote(f"{workdir}/{INSTALLER}")
    return f"TAKO_SERVER_ARTIFACT={artifact} sh {script} 2>&1"


def authorize_key_script(key_line: str) -> str:
    """Appends ``key_line`` to tako's authorized_keys unless its type+body is already
    there; prints ``added`` or ``present``. Owner ``tako:tako``, modes 0700/0600."""
    fields = key_line.split()
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValidationError(f"not an OpenSSH public key line: {key_line[:40]!r}")
    kind, body, line = (shlex.quote(v) for v in (fields[0], fields[1], key_line.strip()))
    return (
        "set -e; "
        'home=$(getent passwd tako | cut -d: -f6); [ -n "$home" ] || '
        '{ echo "user tako does not exist" >&2; exit 1; }; '
        'dir="$home/.ssh"; keys="$dir/authorized_keys"; '
        'mkdir -p "$dir"; chown tako:tako "$dir"; chmod 0700 "$dir"; touch "$keys"; '
        f"if awk -v k={kind} -v b={body} "
        '\'substr($1,1,1) != "#" { for (i = 1; i < NF; i++) if ($i == k && $(i+1) == b) f = 1 }'
        ' END { exit !f }\' "$keys"; then echo present; else '
        '[ ! -s "$keys" ] || [ -z "$(tail -c1 "$keys")" ] || echo >>"$keys"; '
        f'printf "%s\\n" {line} >>"$keys"; echo added; fi; '
        'chown tako:tako "$keys"; chmod 0600 "$keys"'
    )


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last non-empty ``lines`` of ``text`` joined into one line."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(no output)"


def installed_version(installer_output: str) -> str:
    """``tako-server X`` from the installer's last ``done: ...`` line ('' if absent)."""
    for line in reversed(installer_output.splitlines()):
        if "done: " in line:
            return line.split("done: ", 1)[1].strip()
    return ""


def find_installer(artifact: Path) -> Path:
    """``install-server.sh`` beside the artifact, else the checkout's ``scripts/`` copy."""
    dist = checkout_dist()
    candidates = [artifact.parent / INSTALLER]
    if dist is not None:
        candidates.append(dist.parent / "scripts" / INSTALLER)
    for path in candidates:
        if path.is_file():
            return path
    raise ValidationError(
        f"cannot find {INSTALLER}: looked at {', '.join(map(str, candidates))}",
        hint=f"put {INSTALLER} (from the Tako sources, scripts/) beside the artifact",
    )


# --------------------------------------------------------------------------- I/O


def precheck(artifact: Path | None) -> None:
    """Refuse a bad ``--artifact``, or an empty ``dist/``, before connecting anywhere."""
    if artifact is not None:
        read_checksum(artifact)
        return
    dist = checkout_dist()
    if dist is None or not release_files(dist):
        where = f"in {dist}" if dist is not None else "(tako does not run from a checkout)"
        raise ValidationError(f"no tako-server release artifact {where}", hint=BUILD_HINT)


async def install_on_host(ssh: SshClient, target: SshTarget, artifact: Path | None) -> Installed:
    """Install (or keep) tako-server on ``target`` and authorise the caller's key for tako."""
    key_line = await ssh.public_key_line()
    async with await _login(ssh, target) as conn:
        if target.user != "root":
            await _check_sudo(conn)
        arch, libc = await detect_target(conn)
        tarball = artifact if artifact is not None else find_artifact(checkout_dist(), arch, libc)
        check_target(tarball, arch, libc)
        installer = find_installer(tarball)
        state = parse_state(await _as_root(conn, state_script(), "checking tako-server"))
        version = ""
        if needs_install(state, server_digest(tarball)):
            version = await _run_installer(conn, tarball, installer)
            await _wait_running(conn)
        added = await _as_root(conn, authorize_key_script(key_line), "authorising your SSH key")
    return Installed(arch, libc, tarball, bool(version), version, added.strip() == "added")


async def _login(ssh: SshClient, target: SshTarget) -> Connection:
    try:
        return await ssh.connect(target)
    except AuthenticationError as exc:
        raise AuthenticationError(
            exc.message,
            hint=f"authorise your public key for {target.user} on the host "
            f"(e.g. `ssh-copy-id {target.user}@{target.host}`), or pass --user NAME "
            "of a user with passwordless sudo",
        ) from exc


async def _check_sudo(conn: Connection) -> None:
    done = await conn.run(SUDO_CHECK)
    if done.exit != 0:
        user = conn.target.user
        raise TakoError(
            f"no passwordless sudo for {user} on {conn.target.display}:"
            f" {tail(done.stderr or done.stdout, 1)}",
            hint=f"allow passwordless sudo for {user} (NOPASSWD in /etc/sudoers.d/), "
            "or log in as root with --user root",
        )


async def _as_root(conn: Connection, script: str, what: str) -> str:
    """Run ``script`` as root; its stdout, or a :class:`TakoError` naming ``what`` failed."""
    done = await conn.run(privileged(script, conn.target.user))
    if done.exit != 0:
        raise TakoError(
            f"{what} on {conn.target.display} failed (exit {done.exit}):"
            f" {tail(done.stderr or done.stdout)}"
        )
    return done.stdout


async def _run_installer(conn: Connection, tarball: Path, installer: Path) -> str:
    """Upload tarball, checksum and installer to a temp dir, run it as root; its version."""
    made = await conn.run("mktemp -d /tmp/tako-install.XXXXXXXX")
    if made.exit != 0:
        raise TakoError(f"cannot make a temp dir on {conn.target.display}: {tail(made.stderr, 1)}")
    workdir = made.stdout.strip()
    try:
        await upload_release(conn, tarball, workdir)
        await conn.upload(installer, f"{workdir}/{INSTALLER}")
        command = privileged(install_script(workdir, tarball.name), conn.target.user)
        done = await conn.run(command, timeout=INSTALL_TIMEOUT)
    finally:
        with suppress(TakoError):
            await conn.run(f"rm -rf {shlex.quote(workdir)}")
    for line in (done.stdout + done.stderr).splitlines():
        output.detail(line)  # the installer's whole output with --verbose
    if done.exit != 0:
        raise TakoError(
            f"{INSTALLER} failed on {conn.target.display} (exit {done.exit}):"
            f" {tail(done.stdout + done.stderr)}",
            hint="`tako --verbose servers add ...` shows its whole output; fix the cause, re-run",
        )
    return installed_version(done.stdout) or "tako-server"


async def _wait_running(conn: Connection, timeout: float = START_TIMEOUT) -> None:
    """Wait until a tako-server owns the control socket (without systemd the installer
    starts it in the background and returns at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not parse_state(await _as_root(conn, state_script(), "checking tako-server")).running:
        if loop.time() > deadline:
            log = await conn.run(privileged(LOG_TAIL, conn.target.user))
            raise TakoError(
                f"tako-server did not start on {conn.target.display} within {timeout:.0f}s:"
                f" {tail(log.stdout)}",
                hint="see /var/log/tako-server.log or `journalctl -u tako-server` there",
            )
        await asyncio.sleep(POLL_INTERVAL)


def report(target: SshTarget, done: Installed) -> None:
    """One line per step of :func:`install_on_host`."""
    output.success(f"{target.user}@{target.display}: linux-{done.arch}-{done.libc}")
    if done.installed:
        output.success(f"installed {done.version} from {done.artifact}")
    else:
        output.success(f"tako-server from {done.artifact.name} is already installed and running")
    verb = "authorised" if done.key_added else "already authorised"
    output.success(f"your SSH key is {verb} for user tako")
