"""``tako dev trust`` / ``untrust``: the local CA in the system trust store, and back out.

Rules:

- Debian and its derivatives (``update-ca-certificates``): ``trust`` copies the CA
  certificate to ``/usr/local/share/ca-certificates/tako-dev-ca.crt`` (0644) and runs
  ``update-ca-certificates``, which links it into ``/etc/ssl/certs`` and rebuilds the
  bundle ``/etc/ssl/certs/ca-certificates.crt``; ``untrust`` removes that file and runs
  ``update-ca-certificates --fresh`` (which also drops the stale links). Both then read the
  bundle back and say whether it contains the CA, so the report states what changed:
  the file written or removed, the tool's own summary line, the bundle's state;
- the privileged steps run through ``sudo`` when this user may not write the store
  (the report says so); without ``sudo`` the error names the commands to run as root;
- macOS and systems without ``update-ca-certificates`` are not changed: the error gives
  the exact commands (``security add-trusted-cert`` for the macOS keychain; docs/dev.md);
- browsers with their own store (Firefox; Chromium's NSS database on Linux) are not
  touched: the report says so;
- :class:`TrustStore` holds the paths under a root (``/``, or ``TAKO_DEV_TRUST_ROOT`` for
  packaging and tests, where the tool is told every directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tako_common.errors import TakoError

from .ca import LocalCA

TRUSTED_NAME = "tako-dev-ca.crt"
UPDATE_TOOL = "update-ca-certificates"
BROWSER_NOTE = (
    "browsers with their own certificate store (Firefox, Chromium's NSS database on "
    "Linux) are not changed: see docs/dev.md to add the CA there"
)


class TrustError(TakoError):
    """The trust store could not be changed."""

    code = "dev_trust"


@dataclass(frozen=True)
class TrustStore:
    """The Debian trust store's paths under ``root``."""

    root: Path = Path("/")

    def _at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def local_dir(self) -> Path:
        return self._at("/usr/local/share/ca-certificates")

    @property
    def etc_certs(self) -> Path:
        return self._at("/etc/ssl/certs")

    @property
    def bundle(self) -> Path:
        return self.etc_certs / "ca-certificates.crt"

    @property
    def installed(self) -> Path:
        return self.local_dir / TRUSTED_NAME

    def update_argv(self, tool: str, *, fresh: bool) -> list[str]:
        """The update command; under another root every directory is named."""
        argv = [tool, *(["--fresh"] if fresh else [])]
        if self.root != Path("/"):
            argv += [
                "--certsconf", str(self._at("/etc/ca-certificates.conf")),
                "--certsdir", str(self._at("/usr/share/ca-certificates")),
                "--localcertsdir", str(self.local_dir),
                "--etccertsdir", str(self.etc_certs),
                "--hooksdir", str(self._at("/etc/ca-certificates/update.d")),
            ]
        return argv

    def bundle_has(self, ca: LocalCA) -> bool:
        try:
            text = self.bundle.read_bytes()
        except OSError:
            return False
        return ca.cert_pem.strip() in text


def _tool() -> str:
    if sys.platform == "darwin":
        raise TrustError(
            "tako dev trust does not change the macOS keychain by itself",
            hint="run: sudo security add-trusted-cert -d -r trustRoot -k "
            "/Library/Keychains/System.keychain ~/.tako/ca/tako-dev-ca.pem (see docs/dev.md)",
        )
    found = shutil.which(UPDATE_TOOL) or next(
        (p for p in ("/usr/sbin/" + UPDATE_TOOL, "/sbin/" + UPDATE_TOOL) if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        raise TrustError(
            f"{UPDATE_TOOL} was not found: this system's trust store is not one tako dev "
            "knows (Debian/Ubuntu's)",
            hint="add ~/.tako/ca/tako-dev-ca.pem to your system's trust store by hand "
            "(see docs/dev.md)",
        )
    return found


def _needs_sudo(store: TrustStore) -> bool:
    probe = store.local_dir if store.local_dir.exists() else store.local_dir.parent
    return not os.access(probe, os.W_OK)


def _run(argv: list[str], sudo: bool) -> str:
    if sudo:
        if shutil.which("sudo") is None:
            raise TrustError(
                "changing the system trust store needs root, and sudo is not installed",
                hint="run the command as root: " + " ".join(argv),
            )
        argv = ["sudo", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TrustError(f"{' '.join(argv)} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise TrustError(
            f"{' '.join(argv)} exited with {done.returncode}"
            + (f": {detail[-1]}" if detail else "")
        )
    return done.stdout


def _summary(output: str) -> str:
    lines = [line for line in output.splitlines() if "added" in line and "removed" in line]
    return lines[-1].strip() if lines else "done"


def trust(ca: LocalCA, store: TrustStore) -> list[str]:
    """Add the CA to the store; the lines that say what changed."""
    tool = _tool()
    sudo = _needs_sudo(store)
    report = [f"CA: {ca.name} (SHA-256 {ca.fingerprint})"]
    if store.installed.exists() and store.installed.read_bytes() == ca.cert_pem:
        report.append(f"{store.installed} already holds this CA (kept)")
    elif sudo:
        _run(["install", "-D", "-m", "0644", str(ca.cert_path), str(store.installed)], True)
        report.append(f"wrote {store.installed} (through sudo)")
    else:
        store.local_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca.cert_path, store.installed)
        os.chmod(store.installed, 0o644)
        report.append(f"wrote {store.installed}")
    summary = _summary(_run(store.update_argv(tool, fresh=False), sudo))
    report.append(f"ran {UPDATE_TOOL}: {summary}")
    if not store.bundle_has(ca):
        raise TrustError(
            f"{store.bundle} does not contain the CA after {UPDATE_TOOL}",
            hint=f"check {store.installed} and run {UPDATE_TOOL} by hand",
        )
    report += [f"{store.bundle} now trusts {ca.name}", BROWSER_NOTE]
    return report


def untrust(ca: LocalCA | None, store: TrustStore) -> list[str]:
    """Remove the CA from the store; the lines that say what changed."""
    tool = _tool()
    sudo = _needs_sudo(store)
    report = []
    if not store.installed.exists():
        report.append(f"{store.installed} does not exist (nothing to remove)")
    elif sudo:
        _run(["rm", "-f", str(store.installed)], True)
        report.append(f"removed {store.installed} (through sudo)")
    else:
        store.installed.unlink()
        report.append(f"removed {store.installed}")
    summary = _summary(_run(store.update_argv(tool, fresh=True), sudo))
    report.append(f"ran {UPDATE_TOOL} --fresh: {summary}")
    if ca is not None and store.bundle_has(ca):
        raise TrustError(
            f"{store.bundle} still contains {ca.name}",
            hint=f"another copy of the CA is installed: look in {store.local_dir}",
        )
    if ca is not None:
        report.append(f"{store.bundle} no longer trusts {ca.name}")
    return report
