"""Fixtures for end-to-end tests: real sshd/tako-server hosts in network namespaces.

- ``host_network`` (session): the :class:`HostNetwork`; skips every e2e test with a clear
  reason when not root or ``ip netns`` is unavailable; tears all hosts down at the end.
- ``make_hosts`` (session): ``hosts = make_hosts(2)`` (``server=False`` for sshd only).
- ``echo_host`` (session): an sshd-only host with a JSON-lines echo server on
  ``ECHO_SOCKET`` (tests the transport without tako-server);
- ``client`` (function): a fresh :class:`ClientHome` trusting every host made so far;
  ``client_env`` is its environment dict for running the ``tako`` CLI.
- ``release_tarball`` (session): ``dist/tako-server-<target>.tar.gz`` from
  ``scripts/build-release --server-only``, built once per session (the script caches the
  executable by source hash, so a fresh build happens only when the sources changed).

When a test fails, the tail of every live host's logs (sshd, tako-server, spawned
processes) is attached to its report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.hosts import (
    ECHO_SOCKET,
    ClientHome,
    HostNetwork,
    TestHost,
    unavailable_reason,
    wait_for,
)
from tests.helpers import release

_NETWORK: HostNetwork | None = None


@pytest.fixture(scope="session")
def host_network() -> Iterator[HostNetwork]:
    global _NETWORK
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    _NETWORK = HostNetwork()
    try:
        yield _NETWORK
    finally:
        _NETWORK.close()
        _NETWORK = None


@pytest.fixture(scope="session")
def make_hosts(host_network: HostNetwork) -> Callable[..., list[TestHost]]:
    return host_network.make_hosts


@pytest.fixture(scope="session")
def echo_host(make_hosts: Callable[..., list[TestHost]]) -> TestHost:
    """An sshd-only host whose ``ECHO_SOCKET`` is served by ``jsonl_echo.py`` as user tako."""
    (host,) = make_hosts(1, server=False)
    script = host.paths.root / "jsonl_echo.py"
    script.write_text((Path(__file__).parent / "jsonl_echo.py").read_text())
    script.chmod(0o644)
    host.spawn(["/usr/bin/python3", str(script), ECHO_SOCKET], user="tako", log_name="echo")
    probe = f"test -S {ECHO_SOCKET}"
    wait_for(
        lambda: host.exec(probe, check=False).returncode == 0, f"the echo socket on {host.name}"
    )
    return host


@pytest.fixture(scope="session")
def release_tarball() -> Path:
    if not release.daemon_sources_present():
        pytest.skip("tako_server/cli.py does not exist yet")
    return release.build_release()


@pytest.fixture
def client(host_network: HostNetwork, tmp_path: Path) -> ClientHome:
    return host_network.client_home(tmp_path / "client-home")


@pytest.fixture
def client_env(client: ClientHome) -> dict[str, str]:
    return client.env


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _NETWORK is not None:
        for host in _NETWORK.hosts:
            for name, text in host.logs().items():
                report.sections.append((f"{host.name} {name}.log", text))
