"""Per-app isolation when tako-server runs as root: one system user per ``{app}/{env}``.

Rules (``docs/server.md``, "Security"):

- each app/env runs as its own system user (:func:`app_user_name`: ``tako-{app}-{env}``,
  or a hashed name when that is longer than 32 characters), in the shared group
  ``tako-apps``; the user is created on first deploy (``useradd --system``, no home, no
  shell) and removed when the app is deleted (``userdel``);
- the release directory is owned by that user and readable by it alone (``go-rwx``);
  its data and ``local`` storage directories are owned by it (0700); logs, records and
  output files stay root's (the daemon tails them; the app writes only through the file
  descriptors it was given);
- instances start with that uid/gid, no supplementary groups and ``no_new_privs``
  (:func:`tako_server.supervisor.process.child_setup`, in the child before ``exec``);
  secrets are in their environment only, and ``/proc/<pid>/environ`` of a process is
  readable by its own user and root only;
- where the server does not run as root (the reduced mode: ``app_users = "auto"`` and a
  non-root server, or ``"off"``), every app runs as the server's user and none of this
  applies.

Pure: :func:`app_user_name`, :func:`isolation_enabled`. I/O: users, ownership.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tako_common.errors import TakoError
from tako_server.cgroups import CgroupTree, Limits
from tako_server.launch import ReleaseRef
from tako_server.settings import ServerSettings
from tako_server.supervisor.spec import Isolation

APPS_GROUP = "tako-apps"
MAX_USER_NAME = 32
NOLOGIN = "/usr/sbin/nologin"
_LOCKED = 10  # useradd/userdel/groupadd: cannot lock the password file


@dataclass(frozen=True)
class AppIdentity:
    """The user an app's processes run as."""

    user: str
    uid: int
    gid: int


def app_user_name(app: str, env: str) -> str:
    """``tako-{app}-{env}``, or ``tako-{start}-{hash}`` when that passes 32 characters."""
    name = f"tako-{app}-{env}"
    if len(name) <= MAX_USER_NAME:
        return name
    digest = hashlib.sha256(f"{app}/{env}".encode()).hexdigest()[:8]
    return f"tako-{app[: MAX_USER_NAME - 14].rstrip('-')}-{digest}"


def isolation_enabled(mode: Literal["auto", "on", "off"], euid: int) -> bool:
    """``on``: always; ``off``: never; ``auto``: when the server runs as root."""
    return mode == "on" or (mode == "auto" and euid == 0)


def ensure_app_user(app: str, env: str) -> AppIdentity:
    """The app's user, created (with the shared group) on first use."""
    name = app_user_name(app, env)
    try:
        group = grp.getgrnam(APPS_GROUP)
    except KeyError:
        _run(["groupadd", "--system", APPS_GROUP])
        group = grp.getgrnam(APPS_GROUP)
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        _run(
            [
                "useradd",
                "--system",
                "--gid",
                APPS_GROUP,
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                NOLOGIN,
                "--comment",
                f"tako app {app}/{env}",
                name,
            ]
        )
        user = pwd.getpwnam(name)
    return AppIdentity(name, user.pw_uid, group.gr_gid)


def remove_app_user(app: str, env: str) -> bool:
    """Delete the app's user (True when there was one)."""
    name = app_user_name(app, env)
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    _run(["userdel", name])
    return True


def limits_for(settings: ServerSettings, app: str, env: str) -> Limits:
    """The app's limits: its ``[apps."{app}/{env}"]`` values over the defaults (pure)."""
    own = settings.app_limits.get(f"{app}/{env}")
    return Limits(
        memory_mb=(own.memory_mb if own else None) or settings.app_memory_mb,
        cpu_percent=(own.cpu_percent if own else None) or settings.app_cpu_percent,
        pids_max=(own.pids_max if own else None) or settings.app_pids_max,
    )


def isolation_for(
    settings: ServerSettings, release: ReleaseRef, cgroups: CgroupTree | None
) -> Isolation | None:
    """Make the app's user, give it its release and data, set up its cgroup: how its
    instances run (None: as the server's user, without limits: the reduced mode)."""
    if not isolation_enabled(settings.app_users, os.geteuid()):
        return None
    identity = ensure_app_user(release.app, release.env)
    secure_release(settings.data_dir, release, identity)
    limits = limits_for(settings, release.app, release.env)
    cgroup = cgroups.app_dir(release.app, release.env, limits) if cgroups else None
    memory_mb = (cgroup.memory_mb if cgroup else None) or limits.memory_mb
    return Isolation(identity.uid, identity.gid, cgroup, memory_mb)


def secure_release(data_dir: Path, release: ReleaseRef, identity: AppIdentity) -> None:
    """The release (``go-rwx``) and data directories belong to the app's user; the
    directories above them can be crossed, not listed (0711)."""
    for top in (release.release_dir, release.data_root):
        if top is None or not top.exists():
            continue
        for parent in top.parents:
            if parent == data_dir.parent or not parent.is_relative_to(data_dir):
                break
            parent.chmod(0o711)
        if not owned_by(top, identity):
            own_tree(top, identity)


def forget_app(
    settings: ServerSettings, cgroups: CgroupTree | None, app: str, env: str
) -> None:
    """``tako delete``: the app's user and cgroup go (after its files)."""
    if cgroups is not None:
        cgroups.remove_app(app, env)
    if isolation_enabled(settings.app_users, os.geteuid()):
        remove_app_user(app, env)


def own_tree(root: Path, identity: AppIdentity, *, private: bool = True) -> None:
    """Give ``root`` and everything under it to the app's user; ``private`` strips every
    group and other permission. Symbolic links are not followed."""
    if not root.exists():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [*dirnames, *filenames]:
            _own(Path(dirpath) / entry, identity, private)
    _own(root, identity, private)  # last: the top's owner says the whole tree is done


def owned_by(root: Path, identity: AppIdentity) -> bool:
    try:
        return root.stat().st_uid == identity.uid
    except FileNotFoundError:
        return False


def _own(path: Path, identity: AppIdentity, private: bool) -> None:
    os.chown(path, identity.uid, identity.gid, follow_symlinks=False)
    if private and not path.is_symlink():
        path.chmod(path.lstat().st_mode & 0o700)  # no group/other bits, no setuid/setgid


def _run(argv: list[str]) -> None:
    """Run a user/group tool; retried while another one holds the lock of /etc/passwd."""
    for attempt in range(20):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise TakoError(f"{argv[0]} failed: {exc}") from exc
        if done.returncode != _LOCKED:
            break
        time.sleep(0.05 * (attempt + 1))
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise TakoError(f"{' '.join(argv[:2])} ... failed ({done.returncode}): {detail}")

