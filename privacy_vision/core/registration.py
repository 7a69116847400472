"""A device's registered privacy configuration: the values each of its releases must state (the REGISTERED_FIELDS of
core/release_schema.py), taken from its parameters at provisioning (`privacy-vision pki --device NAME --config
params.yaml`) and compared by the ingest with every release it receives.

Why: a device key proves who sent a release, not that the stated ε and k are what the device runs; a registration
made by the operator fixes what the fleet was approved with (the DPIA), so a device claiming ε 0.001 while it is
registered at 2 is refused instead of being shown with a false guarantee.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from privacy_vision.core.release_schema import REGISTERED_FIELDS


class RegistrationError(ValueError):
    """A registration that cannot be made or read, with what to do."""


def registered_parameters() -> dict[str, tuple[str, str | None, str, str]]:
    """Each registration key ('field', or 'field/kind' where the kinds state different parameters) with its release
    field, the release kind it applies to (None: every kind) and the node parameter it states."""
    keys = {}
    for field, source in REGISTERED_FIELDS.items():
        for kind, (node, name) in source.items() if isinstance(source, dict) else [(None, source)]:
            keys[f"{field}/{kind}" if kind else field] = (field, kind, node, name)
    return keys


def registered_values(params_file: str | Path, overrides: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The registered values as a device with this parameters file (and --set overrides, YAML text) states them."""
    params_file = Path(params_file)
    try:
        params = yaml.safe_load(params_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise RegistrationError(f"cannot read {params_file}: {error}") from None
    values: dict[str, Any] = {}
    for key, (_, _, node, name) in registered_parameters().items():
        given = (overrides or {}).get(node, {})
        value = (
            yaml.safe_load(given[name])
            if name in given
            else ((params.get(node) or {}).get("ros__parameters") or {}).get(name)
        )
        if not isinstance(value, (int, float, str)) or isinstance(value, bool):
            raise RegistrationError(f"{params_file} gives no value for {node}.{name}, which releases state")
        values[key] = value
    return values


def write_registration(path: str | Path, device_id: str, values: dict[str, Any], source: str) -> None:
    """Replace the device's registration atomically (the ingest may be reading the folder)."""
    path = Path(path)
    document = {
        "device_id": device_id,
        "registered": values,
        "source": source,
        "registered_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def read_registration(path: str | Path, device_id: str) -> dict[str, Any]:
    """The registered values of `device_id` from its registration file; RegistrationError says what is wrong."""
    try:
        document = json.loads(Path(path).read_text())
        values = document["registered"]
        named = document["device_id"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RegistrationError(f"registration {path} cannot be read: {error}") from None
    if named != device_id:
        raise RegistrationError(f"registration {path} is for device {named!r}, not {device_id!r}")
    if not isinstance(values, dict) or set(values) != set(registered_parameters()):
        raise RegistrationError(
            f"registration {path} must register exactly {', '.join(registered_parameters())}; register the device "
            f"again with 'privacy-vision pki --device {device_id} --config PARAMS'"
        )
    return values


def mismatches(release: Any, registered: dict[str, Any]) -> list[str]:
    """Each registered value the release (of its kind) states differently, as 'field: stated X, registered Y'. Numbers
    match to a relative 1e-6: a stated ε is the OpenDP composition of the configured one, equal up to rounding."""
    found = []
    for key, (field, kind, _, _) in registered_parameters().items():
        if kind is not None and kind != release.kind:
            continue
        stated, expected = getattr(release, field), registered[key]
        if isinstance(expected, str) or isinstance(stated, str):
            same = stated == expected
        else:
            same = math.isclose(float(stated), float(expected), rel_tol=1e-6)
        if not same:
            found.append(f"{field}: stated {stated!r}, registered {expected!r}")
    return found
