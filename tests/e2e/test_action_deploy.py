"""The GitHub Action's own shell steps, run as the runner runs them, deploy an app with the
real ``tako`` CLI to a real test host, from a bare CI home (no ~/.ssh, no ~/.tako): key
from the ``ssh-private-key`` input, host keys from ``known-hosts``, servers from
``servers``, the secrets key from ``secrets-keys``; then the app answers over HTTPS with
the secret the action's key decrypted.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.hosts import ClientHome, HostNetwork, TestHost
from tests.helpers.action import run_action_steps

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "ci-app.test"


def test_the_actions_steps_deploy_to_a_test_host(
    make_hosts: Callable[..., list[TestHost]],
    host_network: HostNetwork,
    tmp_path: Path,
) -> None:
    (host,) = make_hosts(1)
    developer = host_network.client_home(tmp_path / "developer")
    app = tmp_path / "workspace" / "app"
    shutil.copytree(ROOT / "examples" / "python-app", app)
    base = (app / "tako.toml").read_text().split("[envs.production]")[0]
    (app / "tako.toml").write_text(
        base + f'[envs.production]\nroute = "{ROUTE}"\nservers = ["ci-host"]\n'
    )
    # The developer sets a secret once; its key becomes a repository secret.
    done = developer.run_tako(
        "secrets", "set", "SECRET_CI", "-c", str(app / "tako.toml"), input="from-ci\n"
    )
    assert done.returncode == 0, done.stderr
    key = (developer.tako_home / "keys" / "production").read_text().strip()
    assert len(base64.b64decode(key)) == 32

    ci_home = tmp_path / "ci-home"
    ci_home.mkdir()
    inputs = {
        "ssh-private-key": (developer.ssh_dir / "id_ed25519").read_text(),
        "known-hosts": f"{host.address} {host.host_key}\n",
        "servers": f"ci-host {host.address}",
        "secrets-keys": f"production={key}",
        "working-directory": "app",
    }
    results = run_action_steps(
        ROOT / "action.yml",
        inputs,
        home=ci_home,
        workspace=tmp_path / "workspace",
        path_prefix=[Path(sys.executable).parent],
        skip=("Install the tako CLI",),
    )
    output = "\n".join(r.stdout + r.stderr for r in results)
    assert "URL     : https://ci-app.test" in output, output
    assert not (ci_home / ".tako" / "keys").exists(), "CI keys come from TAKO_KEY_<ENV> only"
    assert "from-ci" not in output
    response = host.curl(f"https://{ROUTE}/env", "-k", "--fail")
    assert response.returncode == 0, response.stderr
    assert json.loads(response.stdout)["SECRET_CI"] == "from-ci"
    assert isinstance(developer, ClientHome)
