"""Certificates, keys and SPKI pins for the uplink↔ingest link (all with `cryptography`)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class PkiPaths:
    """Where the CA, certificates, device and audit keys, pins and analyst tokens live under one folder."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def backup_key(self) -> Path:
        return self.root / "backup-server.key"

    @property
    def backup_cert(self) -> Path:
        return self.root / "backup-server.crt"

    @property
    def device_key(self) -> Path:
        return self.root / "device.key"

    @property
    def devices(self) -> Path:
        """One key per device (`privacy-vision pki --device NAME`): the folder the ingest's --devices reads."""
        return self.root / "devices"

    def device_key_for(self, device_id: str) -> Path:
        return self.devices / f"{device_id}.key"

    def device_registration(self, device_id: str) -> Path:
        """The privacy configuration registered for the device (core/registration.py), beside its key."""
        return self.devices / f"{device_id}.json"

    @property
    def audit_key(self) -> Path:
        return self.root / "audit.key"

    @property
    def pins(self) -> Path:
        return self.root / "pins.txt"

    @property
    def analyst_tokens(self) -> Path:
        """SHA-256 hashes of the analyst tokens: what the ingest's --analyst-tokens reads."""
        return self.root / "analyst-tokens.sha256"

    def reader_arguments(self) -> list[str]:
        """The ingest's TLS and analyst-token arguments: what a read-only ingest (the dashboard) needs of this PKI."""
        tls = ["--cert", str(self.server_cert), "--key", str(self.server_key)]
        return [*tls, "--analyst-tokens", str(self.analyst_tokens)]

    def analyst_token(self, name: str) -> Path:
        """The token itself (mode 600), for the analyst; never copied to the ingest."""
        return self.root / f"analyst-{name}.token"

    def complete(self) -> bool:
        return all(
            p.is_file()
            for p in (
                self.ca_cert,
                self.server_cert,
                self.server_key,
                self.backup_key,
                self.backup_cert,
                self.device_key,
                self.audit_key,
                self.pins,
            )
        )


def spki_pin(public_key) -> str:
    """RFC 7469 pin: base64 SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def spki_pin_of_certificate_der(certificate_der: bytes) -> str:
    return spki_pin(x509.load_der_x509_certificate(certificate_der).public_key())


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(b"")
    os.chmod(path, 0o600)
    path.write_bytes(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_pki(
    root: str | Path,
    hostnames: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1", "::1"),
    days: int = 825,
) -> tuple[str, str]:
    """CA, server certificate, an offline backup server key, the device HMAC key and the device audit key;
    returns the (primary, backup) pins."""
    paths = PkiPaths(Path(root))
    paths.root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privacy_vision ingest CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    backup_key = ec.generate_private_key(ec.SECP256R1())
    alt_names = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]

    def server_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

    server_cert = server_certificate(server_key)
    # The backup pair is certified now so that a rotation needs no CA key: keep it offline, and when
    # the primary key is retired, install backup-server.{crt,key}; devices already pin it.
    backup_cert = server_certificate(backup_key)
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.server_key, _pem_key(server_key))
    _write_private(paths.backup_key, _pem_key(backup_key))
    paths.backup_cert.write_bytes(backup_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.device_key, (secrets.token_bytes(32).hex() + "\n").encode())
    _write_private(paths.audit_key, (secrets.token_bytes(32).hex() + "\n").encode())  # device audit-log MAC key
    primary, backup = spki_pin(server_key.public_key()), spki_pin(backup_key.public_key())
    paths.pins.write_text(f"{primary}\n{backup}\n")
    return primary, backup


def read_pins(paths: PkiPaths) -> list[str]:
    return [line.strip() for line in paths.pins.read_text().splitlines() if line.strip()]


# The device ids the signature header allows (core/protocol.py); no leading dot, so a name is never a hidden file.
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9_:\-][A-Za-z0-9._:\-]{0,63}")


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise ValueError(f"device id must match {DEVICE_ID_PATTERN.pattern}, got {device_id!r}")
    return device_id


def create_device_key(paths: PkiPaths, device_id: str) -> tuple[Path, bool]:
    """The device's own HMAC key (mode 600): created once, kept when it exists (a new key would lock the running
    device out; revoke first to replace it). Returns its path and whether it was created now."""
    path = paths.device_key_for(check_device_id(device_id))
    if path.exists():
        return path, False
    paths.devices.mkdir(parents=True, exist_ok=True)
    _write_private(path, (secrets.token_bytes(32).hex() + "\n").encode())
    return path, True


def revoke_device(paths: PkiPaths, device_id: str) -> bool:
    """Delete the device's key and registration; an ingest reading the folder (--devices) refuses the device within
    a second. Returns whether there was a key."""
    key = paths.device_key_for(check_device_id(device_id))
    existed = key.exists()
    key.unlink(missing_ok=True)
    paths.device_registration(device_id).unlink(missing_ok=True)
    return existed
