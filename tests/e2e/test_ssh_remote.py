"""RemoteServer (the protocol client) over a real SSH connection to a JSON-lines server in a
test host: request/response framing, error envelopes, streams, and bad answers."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from tako_client.remote import RemoteServer
from tako_client.ssh import SshClient, SshSettings, SshTarget
from tako_common.errors import ProtocolError, RemoteError
from tako_common.protocol import StatusRequest
from tests.e2e.hosts import ECHO_SOCKET, ClientHome, TestHost

pytestmark = pytest.mark.root


async def remote(host: TestHost, client: ClientHome) -> RemoteServer:
    conn = await SshClient(SshSettings(home=client.home)).connect(
        SshTarget(host.address, label=host.name)
    )
    return RemoteServer(conn, socket_path=ECHO_SOCKET)


async def test_requests_share_one_stream_and_return_the_data_of_each_answer(
    echo_host: TestHost, client: ClientHome
) -> None:
    server = await remote(echo_host, client)
    try:
        first = await server.request({"command": "ping", "n": 1})
        second = await server.request(StatusRequest(app="web", env="production"))
    finally:
        await server.close()
        await server.connection.close()
    assert first == {"command": "ping", "n": 1}
    assert second == {"command": "status", "app": "web", "env": "production"}


async def test_error_answer_raises_remote_error_with_the_servers_code_and_hint(
    echo_host: TestHost, client: ClientHome
) -> None:
    server = await remote(echo_host, client)
    try:
        with pytest.raises(RemoteError) as caught:
            await server.request({"command": "fail"})
        after = await server.request({"command": "still-usable"})
    finally:
        await server.close()
        await server.connection.close()
    assert (caught.value.message, caught.value.code, caught.value.hint) == (
        "asked to fail",
        "test_failure",
        "do not ask",
    )
    assert after == {"command": "still-usable"}


async def test_stream_yields_each_answer_until_the_caller_stops(
    echo_host: TestHost, client: ClientHome
) -> None:
    server = await remote(echo_host, client)
    seen = []
    try:
        async with aclosing(server.stream({"command": "stream", "count": 5})) as stream:
            async for data in stream:
                seen.append(data["lines"][0])
                if len(seen) == 3:
                    break
        after = await server.request({"command": "after-stream"})  # the main channel is untouched
    finally:
        await server.close()
        await server.connection.close()
    assert seen == ["line 0", "line 1", "line 2"]
    assert after == {"command": "after-stream"}


async def test_answer_of_the_wrong_shape_is_a_protocol_error_naming_the_command(
    echo_host: TestHost, client: ClientHome
) -> None:
    server = await remote(echo_host, client)
    try:
        with pytest.raises(ProtocolError, match="server_info"):
            await server.server_info()  # the echo answers with the request itself
    finally:
        await server.close()
        await server.connection.close()
