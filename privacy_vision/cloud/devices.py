"""The devices the ingest admits: each device id with its own HMAC key and, when registered, the privacy
configuration its releases must state (core/registration.py).

One key belongs to exactly one device id: a key file (or the same key bytes) given for two ids is refused at start,
since either device could then post as the other and be stored as it. Keys come from `--device-key ID=PATH` and from
a folder (`--devices DIR`: every NAME.key in it is device NAME's key, NAME.json its registration), as
`privacy-vision pki --device NAME` writes them. The files are read again when they change (checked at most once a
second), so a new or revoked device applies without a restart; while they are broken nobody is admitted.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privacy_vision.core.protocol import KeyFileError, load_key_file
from privacy_vision.core.registration import RegistrationError, read_registration

RECHECK_S = 1.0


class DeviceRegistryError(RuntimeError):
    """The device keys or registrations cannot be used as they are; the message says what to do."""


@dataclass(frozen=True)
class Device:
    """A device the ingest admits: its key, and its registered privacy values (None: not registered)."""

    device_id: str
    key: bytes
    registered: dict[str, Any] | None


def _registration_beside(key_path: Path) -> Path:
    return key_path.with_suffix(".json")


def load_devices(explicit: list[tuple[str, Path]], folder: Path | None) -> dict[str, Device]:
    """Every device of the given key files and folder; DeviceRegistryError names the first problem."""
    sources = list(explicit)
    if folder is not None:
        if not folder.is_dir():
            raise DeviceRegistryError(f"--devices {folder} is not a folder")
        sources += [(path.stem, path) for path in sorted(folder.glob("*.key"))]
    devices: dict[str, Device] = {}
    owners: dict[Path, str] = {}
    key_owners: dict[bytes, str] = {}
    for device_id, path in sources:
        try:
            key = load_key_file(path)
        except KeyFileError as error:
            raise DeviceRegistryError(f"device {device_id}: {error}") from None
        resolved = path.resolve()
        for owner in (owners.get(resolved), key_owners.get(key)):
            if owner is not None and owner != device_id:
                raise DeviceRegistryError(
                    f"devices {owner} and {device_id} share one key ({path}): either could post as the other; "
                    f"give each device its own key with 'privacy-vision pki --device NAME'"
                )
        if device_id in devices and devices[device_id].key != key:
            raise DeviceRegistryError(f"device {device_id} is given two different keys")
        owners[resolved], key_owners[key] = device_id, device_id
        registration = _registration_beside(path)
        try:
            registered = read_registration(registration, device_id) if registration.exists() else None
        except RegistrationError as error:
            raise DeviceRegistryError(str(error)) from None
        devices[device_id] = Device(device_id, key, registered)
    return devices


class DeviceRegistry:
    """Thread-safe lookup of the admitted devices, re-read when their files change."""

    def __init__(
        self,
        explicit: list[tuple[str, Path]],
        folder: Path | None = None,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self._explicit, self._folder, self._log = explicit, folder, log
        self._lock = threading.Lock()
        self._signature = self._files_signature()
        self._devices = load_devices(explicit, folder)  # a problem at start ends the ingest with its reason
        self._broken = ""
        self._checked = time.monotonic()

    @classmethod
    def of_keys(cls, keys: dict[str, bytes]) -> DeviceRegistry:
        """Fixed devices with their keys and no registration (embedded use and tests); never re-read."""
        registry = cls([])
        registry._devices = {device_id: Device(device_id, key, None) for device_id, key in keys.items()}
        return registry

    def __len__(self) -> int:
        return len(self._devices)

    def describe(self) -> str:
        registered = sum(device.registered is not None for device in self._devices.values())
        return f"{len(self._devices)} devices ({registered} with a registered privacy configuration)"

    def lookup(self, device_id: str) -> Device | None:
        """The device, or None when unknown; DeviceRegistryError while the files are broken (admit nobody)."""
        with self._lock:
            if time.monotonic() - self._checked >= RECHECK_S:
                self._checked = time.monotonic()
                self._reload_if_changed()
            if self._broken:
                raise DeviceRegistryError(self._broken)
            return self._devices.get(device_id)

    def _files_signature(self) -> tuple:
        paths = [path for _, path in self._explicit] + [_registration_beside(path) for _, path in self._explicit]
        if self._folder is not None and self._folder.is_dir():
            paths += sorted(self._folder.iterdir())
        signature = []
        for path in paths:
            try:
                stat = path.stat()
                signature.append((str(path), stat.st_mtime_ns, stat.st_size, stat.st_mode))
            except OSError:
                signature.append((str(path), None))
        return tuple(signature)

    def _reload_if_changed(self) -> None:
        signature = self._files_signature()
        if signature == self._signature:
            return
        self._signature = signature
        try:
            devices = load_devices(
                [(device_id, path) for device_id, path in self._explicit if path.exists()], self._folder
            )
        except DeviceRegistryError as error:
            self._broken = f"device keys unusable, nobody is admitted until they are fixed: {error}"
            self._log(f"ERROR {self._broken}")
            return
        for gone in sorted(set(self._devices) - set(devices)):
            self._log(f"device {gone}: key removed, revoked")
        for new in sorted(set(devices) - set(self._devices)):
            self._log(f"device {new}: admitted")
        self._devices, self._broken = devices, ""
