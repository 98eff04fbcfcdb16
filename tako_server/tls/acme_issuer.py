"""AcmeIssuer: obtains certificates from an ACME CA (Let's Encrypt, Pebble), HTTP-01 or DNS-01.

Rules:

- The account key (``acme/account.key``, ECDSA P-256, 0600) is created once and kept;
  the registration (``acme/account.json``, 0600) is reused after a restart. A different
  directory URL, or a CA that forgot the account, registers the same key again.
- One order per domain: the token's key authorization goes into the
  :class:`~.challenges.ChallengeStore` *before* the CA is asked to validate, and is
  removed when the order ends (success or failure). The certificate key is fresh for
  every order (ECDSA P-256) and written with the chain through the :class:`CertStore`.
- With a :class:`~.cloudflare.CloudflareApi` (the ``ssl.cloudflare`` credential) the order
  is validated over DNS-01: one ``_acme-challenge`` TXT record per authorization is
  created through the Cloudflare DNS API, the issuer waits ``dns_propagation`` seconds,
  then answers; the records are deleted when the order ends (success or failure).
  Wildcards need DNS-01; without it they are refused before any request.
- All network calls are blocking (the ``acme`` package uses ``requests``) and run under
  one lock; :meth:`issue` runs them off the event loop with ``asyncio.to_thread``.
- Every failure becomes an :class:`~.errors.AcmeError` naming the domain and the CA's
  reason (``urn:ietf:params:acme:error:...: detail``).
- Counters (``accounts_created``, ``orders_created``, ``requests_sent``) count real
  traffic, so callers and tests can see that no ACME request was made.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import requests
from acme import client as acme_client
from acme import crypto_util, messages
from acme import errors as acme_errors
from acme.challenges import DNS01, HTTP01
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from .certinfo import CertInfo, validate_domain
from .challenges import ChallengeStore
from .cloudflare import CloudflareApi, Dns01Records
from .errors import AcmeError, TlsError
from .selfsigned import new_private_key_pem
from .store import CertStore

log = logging.getLogger(__name__)

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
USER_AGENT = "tako-server (acme-python)"


def directory_url_for(*, staging: bool = False, override: str | None = None) -> str:
    """The ACME directory to use: an explicit URL wins, else Let's Encrypt (staging)."""
    if override:
        return override
    return LETSENCRYPT_STAGING if staging else LETSENCRYPT_PRODUCTION


def _problem_reason(err: messages.Error) -> tuple[str, str, str | None]:
    typ = str(err.typ)
    detail = err.detail or err.title or err.description
    return (f"{typ}: {detail}" if detail else typ), typ, detail


def translate_error(domain: str, exc: Exception, directory_url: str) -> AcmeError:
    """Turn an ``acme``/``requests`` exception into an :class:`AcmeError` with the reason."""
    problem: messages.Error | None = None
    if isinstance(exc, messages.Error):
        problem = exc
    elif isinstance(exc, acme_errors.IssuanceError):
        problem = exc.error
    elif isinstance(exc, acme_errors.ValidationError):
        problem = next(
            (
                ch.error
                for authzr in exc.failed_authzrs
                for ch in authzr.body.challenges
                if ch.error is not None
            ),
            None,
        )
    if problem is not None:
        reason, typ, detail = _problem_reason(problem)
        return AcmeError(domain, reason, acme_type=typ, detail=detail)
    if isinstance(exc, acme_errors.TimeoutError):
        return AcmeError(domain, "the CA did not finish the order before the deadline")
    if isinstance(exc, requests.RequestException):
        return AcmeError(
            domain,
            f"cannot reach ACME server {directory_url}: {exc}",
            hint="check [acme] directory_url and ca_bundle in server-config.toml",
        )
    return AcmeError(domain, f"{type(exc).__name__}: {exc}")


class AcmeIssuer:
    """Issues certificates for single domains from one ACME directory."""

    def __init__(
        self,
        acme_dir: Path,
        directory_url: str,
        email: str | None,
        ca_bundle: Path | None,
        challenges: ChallengeStore,
        *,
        store: CertStore,
        timeout: float = 90.0,
        dns_propagation: float = 10.0,
    ) -> None:
        self.acme_dir = Path(acme_dir)
        self.directory_url = directory_url
        self.email = email
        self.ca_bundle = ca_bundle
        self.challenges = challenges
        self.store = store
        self.timeout = timeout
        self.dns_propagation = dns_propagation
        self.accounts_created = 0
        self.orders_created = 0
        self.requests_sent = 0
        self._lock = threading.Lock()
        self._client: acme_client.ClientV2 | None = None

    def __repr__(self) -> str:
        return (
            f"AcmeIssuer({self.directory_url!r}, connected={self._client is not None}, "
            f"orders={self.orders_created}, requests={self.requests_sent})"
        )

    @property
    def key_path(self) -> Path:
        return self.acme_dir / "account.key"

    @property
    def account_path(self) -> Path:
        return self.acme_dir / "account.json"

    async def issue(self, domain: str, dns: CloudflareApi | None = None) -> CertInfo:
        """Obtain and store a certificate for ``domain`` without blocking the loop
        (DNS-01 through ``dns`` when given, else HTTP-01)."""
        return await asyncio.to_thread(self.issue_blocking, domain, dns)

    def issue_blocking(self, domain: str, dns: CloudflareApi | None = None) -> CertInfo:
        """Obtain and store a certificate for ``domain`` (blocking; raises AcmeError)."""
        name = validate_domain(domain)
        if name.startswith("*.") and dns is None:
            raise AcmeError(
                name, "wildcard certificates need DNS-01 (set the ssl.cloudflare credential)"
            )
        with self._lock:
            try:
                return self._issue_locked(name, dns)
            except TlsError:
                raise
            except Exception as exc:  # translated at the library boundary
                raise translate_error(name, exc, self.directory_url) from exc

    def close(self) -> None:
        """Close the HTTP session (the next issue reconnects)."""
        with self._lock:
            if self._client is not None:
                self._client.net.session.close()
                self._client = None

    def _issue_locked(self, domain: str, dns: CloudflareApi | None) -> CertInfo:
        client = self._connect()
        _, key_pem = new_private_key_pem()
        csr_pem = crypto_util.make_csr(key_pem, [domain])
        try:
            order = client.new_order(csr_pem)
        except messages.Error as exc:
            if exc.code != "accountDoesNotExist":
                raise
            log.info("ACME account unknown to %s; registering again", self.directory_url)
            client = self._register(client)
            order = client.new_order(csr_pem)
        self.orders_created += 1
        if dns is not None:
            records = Dns01Records(dns)
            try:
                self._answer_dns01(client, order, domain, records)
                done = self._finalize(client, order)
            finally:
                records.cleanup()
        else:
            tokens = self._answer_challenges(client, order, domain)
            try:
                done = self._finalize(client, order)
            finally:
                for token in tokens:
                    self.challenges.remove(token)
        if not done.fullchain_pem:
            raise AcmeError(domain, "the CA returned no certificate")
        return self.store.put(domain, done.fullchain_pem.encode("ascii"), key_pem)

    def _finalize(
        self, client: acme_client.ClientV2, order: messages.OrderResource
    ) -> messages.OrderResource:
        deadline = dt.datetime.now() + dt.timedelta(seconds=self.timeout)
        return client.poll_and_finalize(order, deadline)

    def _answer_dns01(
        self,
        client: acme_client.ClientV2,
        order: messages.OrderResource,
        domain: str,
        records: Dns01Records,
    ) -> None:
        """Publish every pending authorization's TXT record, wait, then answer them."""
        answers = []
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            offered = authzr.body.challenges
            challb = next((c for c in offered if isinstance(c.chall, DNS01)), None)
            if challb is None:
                raise AcmeError(domain, "the CA offered no dns-01 challenge")
            identifier = authzr.body.identifier.value
            response, validation = challb.response_and_validation(client.net.key)
            record = challb.chall.validation_domain_name(identifier)
            records.add(identifier, record, validation)
            answers.append((challb, response))
        if answers and self.dns_propagation > 0:
            time.sleep(self.dns_propagation)  # off the loop: issue() runs in a thread
        for challb, response in answers:
            client.answer_challenge(challb, response)

    def _answer_challenges(
        self, client: acme_client.ClientV2, order: messages.OrderResource, domain: str
    ) -> list[str]:
        tokens: list[str] = []
        try:
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                offered = authzr.body.challenges
                challb = next((c for c in offered if isinstance(c.chall, HTTP01)), None)
                if challb is None:
                    raise AcmeError(domain, "the CA offered no http-01 challenge")
                response, validation = challb.response_and_validation(client.net.key)
                token = challb.chall.encode("token")
                self.challenges.put(token, validation)
                tokens.append(token)
                client.answer_challenge(challb, response)
        except BaseException:
            for token in tokens:
                self.challenges.remove(token)
            raise
        return tokens

    def _connect(self) -> acme_client.ClientV2:
        if self._client is not None:
            return self._client
        jwk = JWKEC(key=self._load_or_create_key())
        verify: Any = str(self.ca_bundle) if self.ca_bundle is not None else True
        net = acme_client.ClientNetwork(jwk, alg=ES256, verify_ssl=verify, user_agent=USER_AGENT)
        net.session.hooks["response"].append(self._count_response)
        directory = acme_client.ClientV2.get_directory(self.directory_url, net)
        client = acme_client.ClientV2(directory, net)
        saved = self._load_registration()
        if saved is not None:
            net.account = saved
        else:
            client = self._register(client)
        self._client = client
        return client

    def _count_response(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.requests_sent += 1

    def _register(self, client: acme_client.ClientV2) -> acme_client.ClientV2:
        client.net.account = None
        new_reg = messages.NewRegistration.from_data(email=self.email, terms_of_service_agreed=True)
        try:
            regr = client.new_account(new_reg)
        except acme_errors.ConflictError as exc:
            regr = messages.RegistrationResource(uri=str(exc), body=messages.Registration())
            client.net.account = regr
        self.accounts_created += 1
        record = {"directory_url": self.directory_url, "email": self.email, "regr": regr.to_json()}
        self._write_private(self.account_path, json.dumps(record, indent=2).encode())
        return client

    def _load_registration(self) -> messages.RegistrationResource | None:
        try:
            record = json.loads(self.account_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            log.warning("ignoring unreadable %s: %s", self.account_path, exc)
            return None
        if record.get("directory_url") != self.directory_url:
            return None
        regr: messages.RegistrationResource = messages.RegistrationResource.from_json(
            record["regr"]
        )
        return regr

    def _load_or_create_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except FileNotFoundError:
            new_key, pem = new_private_key_pem()
            self._write_private(self.key_path, pem)
            return new_key
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AcmeError("account", f"{self.key_path} is not an ECDSA key")
        return key

    def _write_private(self, path: Path, data: bytes) -> None:
        self.acme_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
