"""Provider credentials: the names ``tako credentials`` accepts and the rules of each value.

Provider credentials are deploy-time secrets that tako-server itself uses, never the app:
``ssl.cloudflare`` (a Cloudflare API token: DNS-01 for Let's Encrypt, and the Origin CA
behind ``ssl = "cloudflare"``) and ``postgres_url`` (the PostgreSQL database that holds a
multi-server environment's workflow queue).

Rules:

- only the names in :data:`CREDENTIAL_NAMES` exist; any other name is refused with the list;
- a value is one line of at most :data:`MAX_VALUE_CHARS` characters, without NUL, CR or
  LF, and not blank; ``postgres_url`` must be a ``postgres://`` or ``postgresql://`` URL
  with a host;
- the same rules hold on the client (``tako credentials set``) and in the deploy request
  (:data:`CredentialMap`), so a server never stores a value the client would refuse.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

from tako_common.errors import ValidationError

CLOUDFLARE = "ssl.cloudflare"
POSTGRES_URL = "postgres_url"
CREDENTIAL_NAMES: tuple[str, ...] = (CLOUDFLARE, POSTGRES_URL)
MAX_VALUE_CHARS = 4096

#: what each credential is for, as ``tako credentials ls`` shows it
PURPOSE = {
    CLOUDFLARE: "Cloudflare API token (DNS-01 for wildcard routes, Origin CA certificates)",
    POSTGRES_URL: "PostgreSQL URL of the workflow queue (multi-server environments)",
}


def validate_credential_name(name: str) -> str:
    """``name`` when it is a known credential; else a ValidationError listing them."""
    if name not in CREDENTIAL_NAMES:
        raise ValidationError(
            f"unknown credential {name!r}: credentials are {', '.join(CREDENTIAL_NAMES)}",
            hint="app secrets go in `tako secrets set`, S3 key pairs in "
            "`tako storages credentials`",
        )
    return name


def validate_credential_value(name: str, value: str) -> str:
    """``value`` when it is a valid value of credential ``name``; else a ValidationError."""
    if not value.strip():
        raise ValidationError(f"the value of credential {name} is empty")
    if any(c in value for c in "\x00\r\n"):
        raise ValidationError(f"the value of credential {name} must be one line (no CR, LF, NUL)")
    if len(value) > MAX_VALUE_CHARS:
        raise ValidationError(
            f"the value of credential {name} is {len(value)} characters (at most {MAX_VALUE_CHARS})"
        )
    if name == POSTGRES_URL:
        _check_postgres_url(value)
    return value


def _check_postgres_url(value: str) -> None:
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:
        raise ValidationError(f"postgres_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("postgres", "postgresql") or not host:
        raise ValidationError(
            "postgres_url must look like postgresql://USER:PASSWORD@HOST:5432/DATABASE",
            hint="the scheme is postgres:// or postgresql:// and the host is required",
        )


def _check_map(value: dict[str, str]) -> dict[str, str]:
    for name, item in value.items():
        try:
            validate_credential_value(validate_credential_name(name), item)
        except ValidationError as exc:
            raise ValueError(exc.message) from exc
    return value


#: ``credentials`` of a deploy request: known names to valid values
CredentialMap = Annotated[dict[str, str], AfterValidator(_check_map)]
