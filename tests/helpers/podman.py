"""Podman for the container tests: a private API service and a base image made locally.

Rules: no registry is ever contacted (the base image is a root file system holding Debian's
``busybox-static``, imported with ``podman import``); the API service is started on a
socket in a temp directory and stopped by its own PID; images the tests build are tagged
under ``localhost/tako-test/`` and removed by the fixture that made them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
BASE_IMAGE = "localhost/tako-test/busybox:2"
APPLETS = (
    "sh",
    "httpd",
    "echo",
    "cat",
    "env",
    "sleep",
    "ls",
    "mkdir",
    "true",
    "id",
    "touch",
    "wget",
    "cp",
    "rm",
)


def skip_reason() -> str | None:
    """Why container tests cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "container tests need root (a rootful Podman service)"
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup installs it)"
    if not BUSYBOX.is_file():
        return "busybox-static is not installed (scripts/setup installs it)"
    return None


def podman(*args: str, timeout: float = 120.0, stdin: bytes | None = None) -> str:
    """Run ``podman args...``; raises with its stderr on failure."""
    proc = subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode(errors="replace")


def busybox_rootfs_tar(dest: Path) -> Path:
    """A tar of a root file system with busybox and its applets in ``/bin``."""
    with tarfile.open(dest, "w") as tar:
        for name in ("bin", "tmp", "www"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return dest


def ensure_base_image(workdir: Path) -> str:
    """Import the busybox base image once per machine (kept between runs: 2 MB)."""
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE], check=False).returncode == 0:
        return BASE_IMAGE
    tar = busybox_rootfs_tar(workdir / "busybox-rootfs.tar")
    podman("import", "--change", "ENV PATH=/bin", str(tar), BASE_IMAGE)
    return BASE_IMAGE


BOOKWORM_IMAGE = "localhost/tako-test/bookworm:2"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BOOKWORM_CACHE = Path("/var/cache/tako-tests/debootstrap/bookworm-1.tar")
BOOKWORM_PACKAGES = "ca-certificates,python3,python3-venv,python3-pip,libpython3.11,binutils"


def ensure_bookworm_image(workdir: Path) -> str:
    """A Debian 12 base image made with ``debootstrap`` (no registry), with Python 3.11 and
    binutils; the root file system is cached machine-wide as a tar, so the suite pays for
    debootstrap once per machine, then ``podman import`` takes seconds."""
    if image_exists(BOOKWORM_IMAGE):
        return BOOKWORM_IMAGE
    if not BOOKWORM_CACHE.is_file():
        root = workdir / "bookworm-root"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={BOOKWORM_PACKAGES}", "bookworm",
             str(root), "http://deb.debian.org/debian"],
            check=True, capture_output=True, timeout=900,
        )
        BOOKWORM_CACHE.parent.mkdir(parents=True, exist_ok=True)
        partial = BOOKWORM_CACHE.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(BOOKWORM_CACHE)
        shutil.rmtree(root, ignore_errors=True)
    plain = BOOKWORM_IMAGE + "-plain"
    podman("import", "--change", "CMD [\"/bin/bash\"]", str(BOOKWORM_CACHE), plain)
    # the builds inside reach PyPI and Debian through this machine's network: trust the same
    # roots as this machine (a TLS-inspecting egress proxy has its own CA)
    context = workdir / "bookworm-ca"
    context.mkdir(exist_ok=True)
    shutil.copy(HOST_CA_BUNDLE, context / "ca-certificates.crt")
    (context / "Containerfile").write_text(
        f"FROM {plain}\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
    )
    podman("build", "--pull=never", "-q", "-t", BOOKWORM_IMAGE, str(context))
    podman("untag", plain)
    return BOOKWORM_IMAGE


def ensure_cgroups() -> None:
    """crun refuses a hybrid cgroup layout whose v2 hierarchy still holds controllers
    (a v1 host with e.g. ``hugetlb`` left on v2): mount those on v1, as scripts/setup does."""
    unified = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    if not unified.is_file():
        return
    for controller in unified.read_text().split():
        target = Path("/sys/fs/cgroup") / controller
        target.mkdir(exist_ok=True)
        subprocess.run(
            ["mount", "-t", "cgroup", "-o", controller, "cgroup", str(target)],
            check=False,
            capture_output=True,
        )


def cgroup_mount_script() -> str:
    """Shell commands that mount this machine's cgroup hierarchies again (in a namespace
    whose ``/sys`` is a fresh sysfs, as ``ip netns exec`` makes)."""
    commands = ["mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup"]
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, target, fstype, options, *_ = line.split()
        if not target.startswith("/sys/fs/cgroup/") or fstype not in ("cgroup", "cgroup2"):
            continue
        wanted = [
            o
            for o in options.split(",")
            if o not in ("rw", "relatime", "nosuid", "nodev", "noexec")
        ]
        opts = f"-o {','.join(wanted)} " if wanted and fstype == "cgroup" else ""
        commands.append(f"mkdir -p {target} && mount -t {fstype} {opts}cgroup {target}")
    return " && ".join(commands)


@contextlib.contextmanager
def podman_service(socket_path: Path, timeout: float = 15.0) -> Iterator[Path]:
    """``podman system service`` on ``socket_path`` for the block; stopped by its PID."""
    log = (socket_path.parent / "podman-service.log").open("wb")
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not socket_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start: see {log.name}")
            time.sleep(0.05)
        yield socket_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def remove_containers(label: str) -> None:
    """Force-remove every container carrying ``label`` (a test's leftovers)."""
    ids = podman("ps", "-aq", "--filter", f"label={label}").split()
    if ids:
        podman("rm", "-f", *ids)


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0
