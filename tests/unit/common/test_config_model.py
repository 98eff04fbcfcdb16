"""tako.toml shape: valid files load into the model; each bad value names file, line, key, rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_common.config import load_config
from tako_common.errors import ConfigError

PROD = '[envs.production]\nroute = "app.example.com"\n'

COMPLETE_EXAMPLE = '''\
name = "my-app"
runtime = "bun@1.2.3"
package_manager = "bun"
preset = "tanstack-start"
app_root = "src"
release = "bun run db:migrate"

[build]
run = "bun run build"

[vars]
API_URL = "https://api.example.com"

[vars.staging]
API_URL = "https://staging-api.example.com"

[envs.production]
route = "app.example.com"
servers = ["la", "nyc"]
storages = { uploads = "prod_uploads" }
backup = { storage = "private_backups" }
ssl = "letsencrypt"
source_ip = "auto"

[envs.staging]
routes = ["staging.example.com", "example.com/api/*"]
servers = ["staging"]
release = ""

[storages.prod_uploads]
provider = "s3"
bucket = "app-uploads"
endpoint = "https://example.r2.cloudflarestorage.com"
region = "auto"
public_base_url = "https://cdn.example.com/uploads"

[storages.private_backups]
provider = "s3"
bucket = "app-backups"
endpoint = "https://example.r2.cloudflarestorage.com"
region = "auto"

[images]
remote_patterns = ["https://cdn.example.com/uploads/**"]
local_patterns = ["/images/**"]
sizes = [320, 640, 960, 1200, 1920]
qualities = [75]
formats = ["webp", "avif"]

[workflows]
workers = 0
concurrency = 10

[workflows.email]
run = ["./worker", "email"]
workers = 1

[servers.la.workflows]
workers = 2

[servers.la.workflows.email]
workers = 4
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tako.toml"
    path.write_text(text, encoding="utf-8")
    return path


def issues_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.issues


def test_minimal_config_from_the_reference_loads(tmp_path: Path) -> None:
    text = 'name = "my-app"\nruntime = "bun"\npreset = "tanstack-start"\n' + PROD
    loaded = load_config(write(tmp_path, text))
    assert loaded.config.name == "my-app"
    assert loaded.config.envs["production"].route == "app.example.com"
    assert loaded.warnings == []


def test_complete_example_loads_with_defaults_filled_in(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, COMPLETE_EXAMPLE)).config
    assert config.runtime_name == "bun" and config.runtime_version == "1.2.3"
    staging = config.envs["staging"]
    assert staging.idle_timeout == 300 and staging.ssl == "letsencrypt"
    assert staging.source_ip == "auto" and staging.release == ""
    assert config.storages["prod_uploads"].force_path_style is False
    assert config.workflows is not None and config.workflows.groups["email"].workers == 1
    assert config.servers["la"].workflows is not None
    assert config.servers["la"].workflows.groups["email"].workers == 4


def test_images_local_patterns_default_to_everything(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PROD + "[images]\nformats = ['webp']\n")).config
    assert config.images is not None and config.images.local_patterns == ["/**"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"text"', "text"),
        ("42", "42"),
        ("-1.5", "-1.5"),
        ("true", "true"),
        ("false", "false"),
        ("1979-05-27T07:32:00Z", "1979-05-27T07:32:00+00:00"),
        ("1979-05-27", "1979-05-27"),
        ("07:32:00", "07:32:00"),
    ],
)
def test_variable_values_become_process_env_strings(
    tmp_path: Path, value: str, expected: str
) -> None:
    loaded = load_config(write(tmp_path, PROD + f"[vars]\nVALUE = {value}\n"))
    assert loaded.config.vars.common == {"VALUE": expected}


@pytest.mark.parametrize(
    ("runtime", "ok"),
    [
        ("bun", True), ("node", True), ("deno", True), ("python", True), ("go", True),
        ("bun@1.2.3", True), ("python@3.12", True), ("ruby", False), ("bun@", False),
        ("Bun", False), ("node@ 20", False),
    ],
)
def test_runtime_accepts_known_adapters_with_optional_version(
    tmp_path: Path, runtime: str, ok: bool
) -> None:
    path = write(tmp_path, f'runtime = "{runtime}"\n' + PROD)
    if ok:
        assert load_config(path).config.runtime == runtime
    else:
        with pytest.raises(ConfigError, match=r"tako\.toml:1 runtime: invalid runtime"):
            load_config(path)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("my-app", True), ("a", True), ("a" * 63, True), ("a1-b2", True),
        ("My_App", False), ("-app", False), ("app-", False), ("1app", False), ("a" * 64, False),
    ],
)
def test_name_must_be_dns_friendly(tmp_path: Path, name: str, ok: bool) -> None:
    path = write(tmp_path, f'name = "{name}"\n' + PROD)
    if ok:
        assert load_config(path).config.name == name
    else:
        with pytest.raises(ConfigError, match=r"tako\.toml:1 name: invalid app name"):
            load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('package_manager = "cargo"\n' + PROD,
         "tako.toml:1 package_manager: must be one of 'bun', 'npm', 'pnpm' or 'yarn' "
         "(got 'cargo')"),
        ("dev = []\n" + PROD, "tako.toml:1 dev: must not be empty"),
        ('start = "./server"\n' + PROD, "tako.toml:1 start: must be an array (got string)"),
        ('rout = "x"\n' + PROD, "tako.toml:1 rout: unknown key 'rout'"),
        ('main = ""\n' + PROD, "tako.toml:1 main: must not be empty"),
        (PROD + "idle_timeout = -1\n",
         "tako.toml:3 envs.production.idle_timeout: must be >= 0 (got -1)"),
        (PROD + 'idle_timeout = "300"\n',
         "tako.toml:3 envs.production.idle_timeout: must be an integer (got string)"),
        (PROD + "idle_timeout = true\n",
         "tako.toml:3 envs.production.idle_timeout: must be an integer (got boolean)"),
        (PROD + 'ssl = "zerossl"\n',
         "tako.toml:3 envs.production.ssl: must be one of 'letsencrypt' or 'cloudflare' "
         "(got 'zerossl')"),
        (PROD + 'source_ip = "proxy"\n',
         "tako.toml:3 envs.production.source_ip: must be one of 'auto', 'direct', "
         "'cloudflare-proxy' or 'trusted-proxy' (got 'proxy')"),
        (PROD + "routs = []\n",
         "tako.toml:3 envs.production.routs: unknown key 'routs'; did you mean 'routes'?"),
        ('[envs.production]\nroute = "/api/*"\n',
         "tako.toml:2 envs.production.route: invalid route '/api/*': path-only routes are "
         "invalid: a route needs a host, e.g. example.com/api/*"),
        ('[envs.production]\nroutes = ["a.com",\n  "https://b.com"]\n',
         "tako.toml:3 envs.production.routes[1]: invalid route 'https://b.com': a route takes "
         "no scheme"),
        (PROD + "backup = {}\n",
         "tako.toml:3 envs.production.backup.storage: missing required key"),
        (PROD + '[storages.s]\nprovider = "s3"\nendpoint = "https://e"\nregion = "r"\n',
         "tako.toml:3 storages.s.bucket: missing required key"),
        (PROD + '[storages.s]\nprovider = "gcs"\nbucket = "b"\nendpoint = "https://e"\n'
         'region = "r"\n',
         "tako.toml:4 storages.s.provider: must be one of 's3' (got 'gcs')"),
        (PROD + '[storages.s]\nprovider = "s3"\nbucket = "b"\nendpoint = "http://e"\n'
         'region = "r"\n',
         "tako.toml:6 storages.s.endpoint: must be an https:// URL with a host (got 'http://e')"),
        (PROD + '[storages.s]\nprovider = "s3"\nbucket = "b"\nendpoint = "https://e"\n'
         'region = "r"\npublic_base_url = "http://cdn"\n',
         "tako.toml:8 storages.s.public_base_url: must be an https:// URL with a host"),
        (PROD + '[images]\nlocal_patterns = ["images/**"]\n',
         "tako.toml:4 images.local_patterns[0]: local image pattern 'images/**' must start "
         "with '/'"),
        (PROD + "[images]\nqualities = [0]\n", "tako.toml:4 images.qualities[0]: must be >= 1"),
        (PROD + '[images]\nformats = ["gif"]\n', "tako.toml:4 images.formats[0]: must be one of"),
        (PROD + '[[build_stages]]\nname = "web"\n', "tako.toml:3 build_stages[0].run: missing "
         "required key"),
        (PROD + '[build]\nrun = "x"\nworking_dir = "y"\n',
         "tako.toml:5 build.working_dir: unknown key 'working_dir'"),
        (PROD + "[workflows]\nconcurrency = 0\n",
         "tako.toml:4 workflows.concurrency: must be >= 1 (got 0)"),
        (PROD + "[workflows.email]\nwokers = 1\n",
         "tako.toml:4 workflows.email.wokers: unknown key 'wokers'; did you mean 'workers'?"),
        (PROD + "[workflows]\ngroups = 1\n",
         "tako.toml:3 workflows: unknown key 'groups'; name a group with a [workflows.<group>] "
         "table"),
        (PROD + "[servers.la.workflows.email]\nworkers = -2\n",
         "tako.toml:4 servers.la.workflows.email.workers: must be >= 0 (got -2)"),
        (PROD + "[vars]\nLIST = [1, 2]\n",
         "tako.toml:4 vars.LIST: arrays are invalid variable values; use a string"),
        (PROD + '[vars]\n"BAD-NAME" = "x"\n',
         "tako.toml:4 vars.BAD-NAME: invalid variable name 'BAD-NAME': "
         "use [A-Za-z_][A-Za-z0-9_]*"),
        (PROD + "[vars.staging]\nNESTED = { a = 1 }\n",
         "tako.toml:4 vars.staging.NESTED: tables are invalid variable values; use a string"),
        (PROD + "[vars.Staging]\nA = 1\n",
         "tako.toml:3 vars.Staging: a table under [vars] holds per-environment variables"),
        (PROD + "vars = 3\n", "tako.toml:3 envs.production.vars: unknown key 'vars'"),
    ],
)
def test_shape_problems_name_file_line_key_and_rule(
    tmp_path: Path, text: str, expected: str
) -> None:
    issues = issues_of(tmp_path, text)
    assert any(issue.startswith(expected) for issue in issues), issues


def test_toml_syntax_error_shows_line_and_column(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, 'name = "x"\nroute = \n')
    assert issues == ["tako.toml: invalid TOML: Invalid value (at line 2, column 9)"]


def test_every_shape_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        'name = "Bad"\nruntime = "ruby"\n[envs.production]\nroute = "a.com"\nssl = "x"\n'
        "[vars]\nA = [1]\n[workflows]\nconcurrency = 0\n"
    )
    issues = issues_of(tmp_path, text)
    assert [issue.split(" ")[0] for issue in issues] == [
        "tako.toml:1", "tako.toml:2", "tako.toml:5", "tako.toml:7", "tako.toml:9",
    ]
