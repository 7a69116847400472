"""Analyst tokens for the ingest's read side: issued by `privacy-vision pki --analyst NAME`, kept on the
ingest only as SHA-256 hashes (one `HASH NAME` line each), presented as `Authorization: Bearer <token>`.

Why separate from the device keys: a device key signs releases and must never read them back, an analyst
reads and must never post; a leaked hash file lets nobody in (the token has 256 random bits, so its hash
cannot be inverted). Standard library only: the ingest validates tokens without the device stack.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TOKEN_PREFIX = "pva_"  # makes a leaked token recognisable to secret scanners
NAME_PATTERN = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_LINE = re.compile(r"([0-9a-f]{64}) ([A-Za-z0-9._\-]{1,64})")
_BEARER = re.compile(r"Bearer ([A-Za-z0-9._~+/=\-]{16,256})")


class TokenFileError(RuntimeError):
    """The analyst token file is missing or malformed."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_token_hashes(path: str | Path) -> dict[str, str]:
    """name -> SHA-256 hex of its token; blank lines and `#` comments are allowed, anything else is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise TokenFileError(f"analyst token file {path}: {error}") from None
    hashes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise TokenFileError(f"analyst token file {path}, line {number}: expected 'SHA256HEX NAME'")
        hashes[match.group(2)] = match.group(1)
    return hashes


def _write_hashes(path: Path, hashes: dict[str, str]) -> None:
    lines = [
        "# privacy_vision analyst tokens: SHA-256 of each token and the analyst's name (tokens are never stored here)"
    ]
    lines += [f"{digest} {name}" for name, digest in sorted(hashes.items())]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="ascii")
    os.replace(temporary, path)  # the ingest never reads a half-written file


def issue_token(hash_file: str | Path, token_file: str | Path, name: str) -> str:
    """A new token for `name` (replacing, so revoking, its previous one); the hash goes to `hash_file`,
    the token itself only to `token_file` (mode 600) and the return value."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"analyst name must match {NAME_PATTERN.pattern}, got {name!r}")
    hash_file, token_file = Path(hash_file), Path(token_file)
    hashes = read_token_hashes(hash_file) if hash_file.exists() else {}
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_file.write_bytes(b"")
    os.chmod(token_file, 0o600)
    token_file.write_text(token + "\n")
    hashes[name] = token_hash(token)
    _write_hashes(hash_file, hashes)
    return token


def revoke_token(hash_file: str | Path, name: str) -> bool:
    """Remove `name`'s hash; True if it was there. A running ingest notices the changed file on its next read."""
    hash_file = Path(hash_file)
    hashes = read_token_hashes(hash_file)
    if hashes.pop(name, None) is None:
        return False
    _write_hashes(hash_file, hashes)
    return True


@dataclass(frozen=True)
class Verdict:
    """The outcome of one Authorization header: the analyst's name, or why not."""

    analyst: str | None
    reason: str = ""
    status: int = 401  # 503 when the server's own token file is broken


class AnalystTokens:
    """Checks bearer tokens against the hash file, re-read whenever it changes (so a revocation applies
    without a restart); every stored hash is compared, in constant time, whatever matched."""

    def __init__(
        self,
        path: str | Path | None,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self.path = Path(path) if path is not None else None
        self._log = log
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._hashes: dict[str, str] = {}
        self.error = ""
        if self.path is not None:
            self._hashes = read_token_hashes(self.path)  # a bad file at start is fatal, before serving
            self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int, int]:
        stat = self.path.stat()  # the inode too: every rewrite is a new file (os.replace), even within one clock tick
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _current(self) -> dict[str, str]:
        """The hashes in force; a file that became unreadable or malformed admits nobody (fail closed)."""
        with self._lock:
            try:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._hashes, self._stamp, self.error = read_token_hashes(self.path), stamp, ""
            except (OSError, TokenFileError) as error:
                if str(error) != self.error:
                    self._log(f"ERROR analyst token file: {error}; the read API admits nobody until it is fixed")
                self._hashes, self._stamp, self.error = {}, None, str(error)
            return self._hashes

    def check(self, authorization: str | None) -> Verdict:
        if self.path is None:
            return Verdict(None, "this ingest accepts no analyst tokens (start it with --analyst-tokens FILE)")
        if not authorization:
            return Verdict(None, "analyst token required: send 'Authorization: Bearer <token>'")
        match = _BEARER.fullmatch(authorization)
        if match is None:
            return Verdict(None, "malformed Authorization header: expected 'Bearer <token>'")
        presented = token_hash(match.group(1)).encode()
        hashes = self._current()
        if self.error:
            return Verdict(
                None, "analyst token file unreadable on the server; nobody is admitted until it is fixed", 503
            )
        found = None
        for name, digest in hashes.items():
            if hmac.compare_digest(presented, digest.encode()) and found is None:
                found = name
        return Verdict(found, "" if found else "unknown or revoked analyst token")
