"""Errors of the TLS layer: certificate files, self-signed generation and ACME.

Rules: every error is a :class:`~tako_common.errors.TakoError` with a one-line message
that names what failed and why; ACME errors carry the CA's problem type
(``urn:ietf:params:acme:error:...``) and detail as data so ``status`` can show them.
"""

from __future__ import annotations

from tako_common.errors import TakoError


class TlsError(TakoError):
    """A certificate could not be loaded, parsed or written."""

    code = "tls"


class AcmeError(TlsError):
    """The ACME CA refused or could not complete an order for ``domain``."""

    code = "acme"

    def __init__(
        self,
        domain: str,
        reason: str,
        *,
        acme_type: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.domain = domain
        self.reason = reason
        self.acme_type = acme_type
        self.detail = detail
        super().__init__(f"certificate for {domain} not issued: {reason}", hint=hint)
