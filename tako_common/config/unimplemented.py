"""tako.toml options that this version validates but does not act on yet.

Rules:

- :data:`NOT_IMPLEMENTED` is the one list of them (id -> the option as a user writes it).
  When a feature lands, delete its entry: the load warning and the ``tako init`` template
  note go away with it (the finder below may stay; it is only consulted for listed ids);
- every such option is still fully validated by the model and the rules, so a file stays
  valid when the feature arrives;
- loading warns once per place the option is set, as ``file:line key: '<option>' is not
  implemented yet in this version and is ignored`` — a user is never silently ignored;
- settings that change nothing are not reported: ``release = ""`` (clears the command),
  ``ssl = "letsencrypt"`` (the implemented default), an unset ``source_ip``.

Pure: a validated :class:`TakoConfig` in, :class:`Issue` warnings out.
"""

from __future__ import annotations

from collections.abc import Callable

from tako_common.config.issues import Issue
from tako_common.config.lines import KeyPath
from tako_common.config.model import EnvConfig, TakoConfig

#: Options accepted and validated but not implemented yet: id -> the option as written.
NOT_IMPLEMENTED: dict[str, str] = {
    "workflows": "[workflows]",
    "source_ip": "source_ip",
    "ssl_cloudflare": 'ssl = "cloudflare"',
}

NOTE = "not implemented yet in this version: validated, ignored"


def warning_text(option_id: str) -> str:
    """The load warning for one option id."""
    return f"'{NOT_IMPLEMENTED[option_id]}' is not implemented yet in this version and is ignored"


def template_note(option_id: str) -> str:
    """The comment line ``tako init`` writes above the option; ``""`` once it is implemented."""
    if option_id not in NOT_IMPLEMENTED:
        return ""
    return f"# {NOTE} ({NOT_IMPLEMENTED[option_id]})"


def unimplemented_warnings(config: TakoConfig) -> list[Issue]:
    """One warning per place a not-yet-implemented option is set."""
    return [
        Issue(path, warning_text(option_id))
        for option_id in NOT_IMPLEMENTED
        for path in FINDERS[option_id](config)
    ]


def _release(config: TakoConfig) -> list[KeyPath]:
    found: list[KeyPath] = [("release",)] if config.release else []
    return found + [("envs", name, "release") for name, env in config.envs.items() if env.release]


def _top(key: str) -> Callable[[TakoConfig], list[KeyPath]]:
    return lambda config: [(key,)] if getattr(config, key) is not None else []


def _workflows(config: TakoConfig) -> list[KeyPath]:
    found: list[KeyPath] = [("workflows",)] if config.workflows is not None else []
    return found + [
        ("servers", name, "workflows")
        for name, server in config.servers.items()
        if server.workflows is not None
    ]


def _storages(config: TakoConfig) -> list[KeyPath]:
    found: list[KeyPath] = [("storages", name) for name in list(config.storages)[:1]]
    return found + [("envs", name, "storages") for name, env in config.envs.items() if env.storages]


def _env_keys(config: TakoConfig, key: str, is_set: Callable[[EnvConfig], bool]) -> list[KeyPath]:
    return [("envs", name, key) for name, env in config.envs.items() if is_set(env)]


#: How to find each option in a validated config (key paths where it is set).
FINDERS: dict[str, Callable[[TakoConfig], list[KeyPath]]] = {
    "release": _release,
    "container": _top("container"),
    "workflows": _workflows,
    "storages": _storages,
    "backup": lambda config: _env_keys(config, "backup", lambda env: env.backup is not None),
    "images": _top("images"),
    "source_ip": lambda config: _env_keys(
        config, "source_ip", lambda env: "source_ip" in env.model_fields_set
    ),
    "ssl_cloudflare": lambda config: _env_keys(
        config, "ssl", lambda env: env.ssl == "cloudflare"
    ),
    "dev": _top("dev"),
    "runtime_version": lambda config: [("runtime",)] if config.runtime_version else [],
}
