"""Release artifacts on the client: choosing the one for a host, verifying, inspecting."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from tako_client import server_release
from tako_client.server_release import (
    artifact_name,
    check_target,
    choose_artifact,
    find_artifact,
    read_checksum,
    release_files,
    server_digest,
)
from tako_common.errors import ValidationError

X86 = "tako-server-linux-x86_64-glibc.tar.gz"
ARM = "tako-server-linux-aarch64-glibc.tar.gz"
MUSL = "tako-server-linux-x86_64-musl.tar.gz"


def make_tarball(path: Path, server: bytes = b"#!/bin/sh\n", *, checksum: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("tako-server")
        info.size, info.mode = len(server), 0o755
        tar.addfile(info, io.BytesIO(server))
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    return path


@pytest.mark.parametrize(
    ("files", "arch", "libc", "chosen"),
    [
        ([(f"a/{X86}", 1.0), (f"a/{ARM}", 2.0)], "x86_64", "glibc", f"a/{X86}"),
        ([(f"a/{X86}", 1.0), (f"b/{X86}", 5.0)], "x86_64", "glibc", f"b/{X86}"),  # newest
        ([(f"a/{X86}", 1.0), (f"a/{MUSL}", 2.0)], "x86_64", "musl", f"a/{MUSL}"),
        ([(f"a/{ARM}", 1.0)], "x86_64", "glibc", None),
        ([], "aarch64", "glibc", None),
    ],
)
def test_the_newest_artifact_named_for_the_host_target_is_chosen(
    files: list[tuple[str, float]], arch: str, libc: str, chosen: str | None
) -> None:
    result = choose_artifact([(Path(p), m) for p, m in files], arch, libc)
    assert result == (Path(chosen) if chosen else None)


def test_only_tarballs_with_their_checksum_count_as_release_files(tmp_path: Path) -> None:
    make_tarball(tmp_path / X86)
    make_tarball(tmp_path / ARM, checksum=False)
    (tmp_path / "tako-0.1.0-py3-none-any.whl").write_text("")
    assert [p.name for p, _ in release_files(tmp_path)] == [X86]
    assert release_files(tmp_path / "missing") == []


def test_find_artifact_names_what_it_found_and_how_to_build_one(tmp_path: Path) -> None:
    make_tarball(tmp_path / X86)
    assert find_artifact(tmp_path, "x86_64", "glibc") == tmp_path / X86
    with pytest.raises(ValidationError) as caught:
        find_artifact(tmp_path, "aarch64", "glibc")
    assert f"for linux-aarch64-glibc in {tmp_path} (found: {X86})" in caught.value.message
    assert "scripts/build-release --server-only" in (caught.value.hint or "")
    with pytest.raises(ValidationError, match="does not run from a source checkout"):
        find_artifact(None, "x86_64", "glibc")


def test_the_checkout_dist_is_beside_scripts_build_release() -> None:
    dist = server_release.checkout_dist()
    assert dist is not None and (dist.parent / "scripts" / "build-release").is_file()


def test_a_tarball_named_for_another_target_is_refused() -> None:
    check_target(Path(X86), "x86_64", "glibc")
    check_target(Path("my-build.tar.gz"), "x86_64", "glibc")  # unknown names: the installer checks
    with pytest.raises(ValidationError, match=f"{ARM} is not for this host: it needs {X86}"):
        check_target(Path(ARM), "x86_64", "glibc")


def test_read_checksum_refuses_a_missing_file_checksum_or_a_mismatch(tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / X86)
    assert read_checksum(tarball) == hashlib.sha256(tarball.read_bytes()).hexdigest()
    Path(f"{tarball}.sha256").write_text(f"{'0' * 64}  {X86}\n")
    with pytest.raises(ValidationError, match=f"checksum mismatch: {X86} does not match"):
        read_checksum(tarball)
    os.unlink(f"{tarball}.sha256")
    with pytest.raises(ValidationError, match=f"no checksum for {X86}"):
        read_checksum(tarball)
    with pytest.raises(ValidationError, match="does not exist"):
        read_checksum(tmp_path / ARM)


def test_server_digest_is_the_sha256_of_the_executable_inside(tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / X86, b"binary bytes")
    assert server_digest(tarball) == hashlib.sha256(b"binary bytes").hexdigest()
    (tmp_path / "junk.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(ValidationError, match="is not a valid .tar.gz"):
        server_digest(tmp_path / "junk.tar.gz")
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(ValidationError, match="has no tako-server at its top level"):
        server_digest(empty)


def test_artifact_names_follow_build_release() -> None:
    assert artifact_name("aarch64", "musl") == "tako-server-linux-aarch64-musl.tar.gz"
