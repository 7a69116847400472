"""Uplink wire protocol: canonical release bytes and HMAC-signed requests with replay protection."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HEADER_DEVICE = "X-PV-Device"
HEADER_TIMESTAMP = "X-PV-Timestamp"
HEADER_NONCE = "X-PV-Nonce"
HEADER_SEQUENCE = "X-PV-Sequence"
HEADER_BODY_SHA256 = "X-PV-Content-SHA256"
HEADER_SIGNATURE = "X-PV-Signature"
MAX_CLOCK_SKEW_S = 300


class KeyFileError(RuntimeError):
    """The HMAC key file is missing, malformed or readable by others."""


def canonical_release_bytes(release: dict) -> bytes:
    """Serialise once, at release time; retries resend exactly these bytes."""
    return json.dumps(release, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class SignedHeaders:
    """The signed request headers of a release upload (device, time, nonce, sequence, body hash)."""

    device_id: str
    timestamp: int
    nonce: str
    sequence: int
    body_sha256: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            HEADER_DEVICE: self.device_id,
            HEADER_TIMESTAMP: str(self.timestamp),
            HEADER_NONCE: self.nonce,
            HEADER_SEQUENCE: str(self.sequence),
            HEADER_BODY_SHA256: self.body_sha256,
            HEADER_SIGNATURE: self.signature,
        }


def canonical_request(
    method: str, path: str, device_id: str, timestamp: int, nonce: str, sequence: int, body_sha256: str
) -> bytes:
    return "\n".join([method.upper(), path, device_id, str(timestamp), nonce, str(sequence), body_sha256]).encode()


def sign_request(
    key: bytes,
    method: str,
    path: str,
    device_id: str,
    body: bytes,
    timestamp: int,
    sequence: int,
    nonce: str | None = None,
) -> SignedHeaders:
    nonce = nonce or os.urandom(16).hex()
    body_sha256 = hashlib.sha256(body).hexdigest()
    message = canonical_request(method, path, device_id, timestamp, nonce, sequence, body_sha256)
    signature = hmac.new(key, message, hashlib.sha256).hexdigest()
    return SignedHeaders(device_id, timestamp, nonce, sequence, body_sha256, signature)


class RequestRejected(Exception):
    """An upload the ingest refuses, with the HTTP status and reason the device is told."""

    def __init__(self, status: int, reason: str, **details: int) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.details = details


# Each header's exact shape: checked before any use, so a hostile value (non-ASCII, 2**63, megabytes)
# is a 400 with a reason instead of an exception deep in hmac or the database.
_HEADER_PATTERNS = {
    HEADER_DEVICE: re.compile(r"[A-Za-z0-9._:\-]{1,64}"),
    HEADER_TIMESTAMP: re.compile(r"[0-9]{1,12}"),
    HEADER_NONCE: re.compile(r"[0-9a-f]{16,128}"),
    HEADER_SEQUENCE: re.compile(r"[0-9]{1,19}"),
    HEADER_BODY_SHA256: re.compile(r"[0-9a-f]{64}"),
    HEADER_SIGNATURE: re.compile(r"[0-9a-f]{64}"),
}
MAX_SEQUENCE = 2**63 - 1  # a signed 64-bit column in every database
# A device's sequence never runs behind its clock in microseconds (core/uplink.py: Outbox.next_sequence), and its
# clock is within MAX_CLOCK_SKEW_S of the ingest's: so no honest sequence is above this window past the ingest's
# clock. One hostile request cannot push a device's counter out of reach (or past 2**63 - 1) for good.
SEQUENCE_WINDOW = 10**6


def highest_sequence(now_s: float) -> int:
    """The largest sequence the ingest accepts at `now_s`: its clock in µs, plus the clock skew and the window."""
    return int((now_s + MAX_CLOCK_SKEW_S) * 1e6) + SEQUENCE_WINDOW


def parse_signed_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """The six signature headers, each matched against its exact shape (400 with the header's name)."""
    values = {}
    for name, pattern in _HEADER_PATTERNS.items():
        value = headers.get(name)
        if value is None:
            raise RequestRejected(400, f"missing signature header {name}")
        if not pattern.fullmatch(value):
            raise RequestRejected(400, f"malformed signature header {name}")
        values[name] = value
    sequence = int(values[HEADER_SEQUENCE])
    if not 0 < sequence <= MAX_SEQUENCE:
        raise RequestRejected(400, f"{HEADER_SEQUENCE} must be between 1 and 2**63-1")
    return SignedHeaders(
        values[HEADER_DEVICE],
        int(values[HEADER_TIMESTAMP]),
        values[HEADER_NONCE],
        sequence,
        values[HEADER_BODY_SHA256],
        values[HEADER_SIGNATURE],
    )


def verify_signed_headers(
    key: bytes, method: str, path: str, headers: Mapping[str, str], now_s: float
) -> SignedHeaders:
    """Check the signature (constant time) and clock skew from the headers alone: the body's hash is one
    of them, so a request is authenticated before its body is read (an unsigned slow body costs nothing)."""
    signed = parse_signed_headers(headers)
    expected = hmac.new(
        key,
        canonical_request(
            method, path, signed.device_id, signed.timestamp, signed.nonce, signed.sequence, signed.body_sha256
        ),
        hashlib.sha256,
    ).hexdigest()
    if not hmac.compare_digest(expected, signed.signature):
        raise RequestRejected(401, "bad signature")
    if abs(now_s - signed.timestamp) > MAX_CLOCK_SKEW_S:
        raise RequestRejected(408, f"timestamp outside ±{MAX_CLOCK_SKEW_S} s of the server clock")
    return signed


def check_signed_body(signed: SignedHeaders, body: bytes) -> None:
    if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), signed.body_sha256):
        raise RequestRejected(400, "body does not match its signed SHA-256 (tampered in transit?)")


def verify_request(
    key: bytes, method: str, path: str, headers: Mapping[str, str], body: bytes, now_s: float
) -> SignedHeaders:
    """Signature, clock skew and body hash; replay state is the caller's."""
    signed = verify_signed_headers(key, method, path, headers, now_s)
    check_signed_body(signed, body)
    return signed


def load_key_file(path: str | Path) -> bytes:
    """A hex HMAC key of ≥ 32 bytes in a file that neither group nor others may read."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"key file {path} not found; create it with 'privacy-vision pki'")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is accessible by group/others (mode {oct(mode & 0o777)}); run: chmod 600 {path}"
        )
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise KeyFileError(f"key file {path} must hold the key as hex") from None
    if len(key) < 32:
        raise KeyFileError(f"key file {path} holds {len(key)} bytes; at least 32 are required")
    return key
