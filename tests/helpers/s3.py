"""A real S3 API server for tests: moto's standalone ``moto_server`` with TLS.

Rules:

- the server runs where the test puts it (inside an e2e host's network namespace, or on
  loopback) and only listens there; its certificate is signed by a throw-away CA made
  here (:class:`TestCA`), whose PEM is what the server's ``storage.ca_bundle`` setting
  (``TAKO_STORAGE_CA_BUNDLE``) and the test app trust;
- credentials are checked for real: moto's IAM auth is on after the first
  :data:`SETUP_ACTIONS` requests, which :func:`make_credentials` spends creating a user,
  its access key and a policy allowing ``s3:*``; so a wrong key is refused
  (``SignatureDoesNotMatch`` / ``InvalidAccessKeyId``) as a real provider would;
- readiness is a TCP connect (an HTTP probe would spend an unauthenticated action).
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SETUP_ACTIONS = 3
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


def moto_available() -> bool:
    return MOTO_SERVER.exists() or shutil.which("moto_server") is not None


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class TestCA:
    """A throw-away CA; :meth:`issue` signs a server certificate for IP addresses."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("tako-test-s3-ca"))
            .issuer_name(_name("tako-test-s3-ca"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / "s3-ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.pem.chmod(0o644)

    def issue(self, name: str, addresses: list[str]) -> tuple[Path, Path]:
        """``(cert.pem, key.pem)`` of a server certificate for ``addresses``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(a)) for a in addresses]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return cert_path, key_path


def moto_argv(cert: Path, key: Path, port: int, host: str = "0.0.0.0") -> list[str]:
    """argv of a TLS moto_server on ``host:port`` with IAM auth after the setup actions
    (``0.0.0.0`` inside an e2e host's own network namespace, else loopback)."""
    program = str(MOTO_SERVER) if MOTO_SERVER.exists() else "moto_server"
    return [
        "/usr/bin/env",
        f"INITIAL_NO_AUTH_ACTION_COUNT={SETUP_ACTIONS}",
        program,
        "-H",
        host,
        "-p",
        str(port),
        "-c",
        str(cert),
        "-k",
        str(key),
    ]


def wait_listening(address: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((address, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"moto_server did not listen on {address}:{port} within {timeout:.0f}s")


@dataclass(frozen=True)
class S3Account:
    endpoint: str
    ca: Path
    access_key_id: str
    secret_access_key: str

    def client(self, service: str = "s3") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            verify=str(self.ca),
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )


def make_credentials(endpoint: str, ca: Path) -> S3Account:
    """Spend the unauthenticated setup actions on a user with an ``s3:*`` access key."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        verify=str(ca),
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="tako-test")
    pair = iam.create_access_key(UserName="tako-test")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="tako-test", PolicyName="s3-all", PolicyDocument=json.dumps(policy)
    )
    return S3Account(endpoint, ca, pair["AccessKeyId"], pair["SecretAccessKey"])
