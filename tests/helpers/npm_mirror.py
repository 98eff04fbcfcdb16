"""A small npm registry mirror for pinned-runtime tests (tako-server's ``runtime_registry``).

It answers ``GET /{package}/{version}`` (the version's metadata, with ``dist.tarball``
pointing back at the mirror) and ``GET /tarballs/{file}``. Packages are either *fake*
(built here: a shell script as the binary; offline) or *proxied* from the real registry
(the test machine may reach it, the test hosts may not), cached in a machine-wide
directory so the suite downloads each tarball once. Runs in a thread on the address
given; stopped by :meth:`NpmMirror.close`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

UPSTREAM = "https://registry.npmjs.org"
CACHE = Path("/var/cache/tako-tests/npm")


def fake_tarball(member: str, script: str) -> bytes:
    """A ``.tgz`` holding ``member`` (an executable shell script) and a package.json."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, mode in (
            (member, script.encode(), 0o755),
            ("package/package.json", b"{}", 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class NpmMirror:
    """Serve fake packages (``add_fake``) or proxy real ones (``proxy=True``)."""

    def __init__(self, host: str = "127.0.0.1", *, proxy: bool = False) -> None:
        self.fakes: dict[tuple[str, str], bytes] = {}
        self.requests: list[str] = []
        self.proxy = proxy
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                mirror.requests.append(self.path)
                status, body = mirror.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def add_fake(self, package: str, version: str, member: str, script: str) -> None:
        self.fakes[(package, version)] = fake_tarball(member, script)

    def answer(self, path: str) -> tuple[int, bytes]:
        parts = urllib.parse.unquote(path).lstrip("/")
        if parts.startswith("tarballs/"):
            return self._tarball(parts[len("tarballs/") :])
        package, _, version = parts.rpartition("/")
        if (package, version) in self.fakes:
            data = self.fakes[(package, version)]
            return 200, self._meta(package, version, integrity(data))
        if not self.proxy:
            return 404, b'{"error":"not found"}'
        try:
            with urllib.request.urlopen(
                f"{UPSTREAM}/{urllib.parse.quote(package, safe='@')}/{version}", timeout=30
            ) as resp:
                meta = json.loads(resp.read())
        except OSError:
            return 404, b'{"error":"not found"}'
        self._cache_path(package, version).parent.mkdir(parents=True, exist_ok=True)
        (self._cache_path(package, version).with_suffix(".url")).write_text(meta["dist"]["tarball"])
        return 200, self._meta(package, version, meta["dist"]["integrity"])

    def _meta(self, package: str, version: str, digest: str) -> bytes:
        name = urllib.parse.quote(f"{package}@{version}", safe="")
        dist = {"tarball": f"{self.url}/tarballs/{name}", "integrity": digest}
        return json.dumps({"name": package, "version": version, "dist": dist}).encode()

    def _cache_path(self, package: str, version: str) -> Path:
        return CACHE / urllib.parse.quote(f"{package}@{version}", safe="") / "package.tgz"

    def _tarball(self, name: str) -> tuple[int, bytes]:
        package, _, version = name.rpartition("@")
        if (package, version) in self.fakes:
            return 200, self.fakes[(package, version)]
        cached = self._cache_path(package, version)
        if not cached.exists():
            url_file = cached.with_suffix(".url")
            if not url_file.exists():
                return 404, b""
            with urllib.request.urlopen(url_file.read_text(), timeout=300) as resp:
                data = resp.read()
            cached.write_bytes(data)
        return 200, cached.read_bytes()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
