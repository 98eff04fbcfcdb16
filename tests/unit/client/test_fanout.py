"""Fan-out over servers: every host gets a result; one host's failure never cancels others."""

import asyncio

from tako_client.fanout import failed, fan_out
from tako_common.errors import TakoError


def test_an_unexpected_exception_on_one_host_does_not_cancel_the_others() -> None:
    finished: list[str] = []

    async def op(name: str) -> str:
        if name == "bad":
            raise KeyError("surprise")
        if name == "tako":
            raise TakoError("refused", hint="h")
        await asyncio.sleep(0.05)  # still running when "bad" fails
        finished.append(name)
        return name.upper()

    results = asyncio.run(fan_out(["a", "bad", "tako", "b"], lambda n: n, op))
    assert [r.server for r in results] == ["a", "bad", "tako", "b"]
    assert finished == ["a", "b"]
    assert [r.value for r in results if r.ok] == ["A", "B"]
    bad = {r.server: r.error for r in failed(results)}
    assert "KeyError" in str(bad["bad"]) and str(bad["tako"]) == "refused"
