"""systemd readiness notifications (``sd_notify``) without libsystemd.

Rules:

- The address comes from ``$NOTIFY_SOCKET`` (read by the CLI and passed in): a path
  (``/run/systemd/notify``) or an abstract name written with a leading ``@``. Without it
  (not run by systemd, or a unit that is not ``Type=notify``) every call is a no-op.
- A message is ``KEY=value`` lines sent as one datagram on a ``AF_UNIX``/``SOCK_DGRAM``
  socket; values never contain a newline (it is replaced by a space).
- Notifications are best effort: a send failure is logged once per call and never
  raised, so a broken notify socket cannot take the server down.
- What the daemon sends (see ``docs/upgrade.md``): ``READY=1`` + ``MAINPID`` + ``STATUS``
  once listeners and the control socket are up; the successor of a takeover sends the
  same with its own ``MAINPID``; ``STOPPING=1`` only on a real shutdown (never when a
  successor took over); ``STATUS=`` for a failed takeover.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address of a ``$NOTIFY_SOCKET`` value (None when unsupported/empty)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def format_message(fields: Mapping[str, str | int]) -> bytes:
    """``KEY=value\\n`` lines in the given order (newlines in values become spaces)."""
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{key}={text}\n")
    return "".join(lines).encode()


class Notifier:
    """Sends notifications to one systemd notify socket (or nowhere)."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    def __repr__(self) -> str:
        where = "disabled" if self.address is None else repr(self.address.replace("\0", "@"))
        return f"Notifier({where})"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        value = environ.get(NOTIFY_SOCKET_ENV, "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning("ignoring unsupported NOTIFY_SOCKET %r (use a path or @name)", value)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, fields: Mapping[str, str | int]) -> bool:
        """Send one message; True when it was delivered to the socket."""
        if self.address is None or not fields:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(format_message(fields), self.address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address.replace("\0", "@"), exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        """This process is the one serving now (also after a takeover)."""
        return self.send({"MAINPID": os.getpid(), "READY": 1, "STATUS": status})

    def stopping(self, status: str = "stopping") -> bool:
        return self.send({"STOPPING": 1, "STATUS": status})

    def status(self, status: str) -> bool:
        return self.send({"STATUS": status})
