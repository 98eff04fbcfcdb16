"""The container create body of an instance (pure): port, environment, limits, labels."""

from __future__ import annotations

from pathlib import Path

from tako_server.supervisor.container import LABEL_APP, LABEL_VERSION, create_config
from tako_server.supervisor.spec import ContainerRun, LaunchSpec


def spec(run: ContainerRun, command: list[str] | None = None) -> LaunchSpec:
    return LaunchSpec(
        app="shop",
        env="production",
        version="abc123",
        workdir=Path("/opt/tako/apps/shop/production/releases/abc123"),
        command=command or [],
        environ={"SECRET": "s", "TAKO_ENV": "production"},
        log_dir=Path("/tmp/logs"),
        container=run,
    )


def test_port_is_published_on_loopback_only_with_env_labels_and_limits() -> None:
    run = ContainerRun(
        "localhost/tako/shop-production:abc123",
        Path("/run/p.sock"),
        memory_mb=256,
        pids_limit=64,
        mounts=(Path("/opt/tako/data"),),
    )
    body = create_config(spec(run), run, port=41000, instance_id=3)
    host = body["HostConfig"]
    assert host["PortBindings"] == {"41000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41000"}]}
    assert body["ExposedPorts"] == {"41000/tcp": {}}
    assert {"SECRET=s", "PORT=41000", "HOST=0.0.0.0", "TAKO_INSTANCE=3"} <= set(body["Env"])
    assert body["Labels"] == {LABEL_APP: "shop/production", LABEL_VERSION: "abc123"}
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (256 << 20, 256 << 20, 64)
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["Binds"] == ["/opt/tako/data:/opt/tako/data:rw"]
    assert {"Name": "nproc", "Soft": 64, "Hard": 64} in host["Ulimits"]
    assert "Cmd" not in body  # the image's own command


def test_a_writable_root_and_an_explicit_command() -> None:
    run = ContainerRun("img:1", Path("/run/p.sock"), read_only=False)
    body = create_config(spec(run, ["/bin/sh", "-c", "serve"]), run, port=1, instance_id=1)
    assert body["HostConfig"]["ReadonlyRootfs"] is False and "Tmpfs" not in body["HostConfig"]
    assert body["Cmd"] == ["/bin/sh", "-c", "serve"]
