"""Checks of a graph's configuration before any node starts (the launch file and `privacy-vision run`): the files
named exist and parse, and settings of two nodes that only work together agree. Each failure is one ConfigError
line naming the file or the parameters, so that a launch ends once with that line instead of six nodes
crash-looping with tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from privacy_vision.core.geometry import ConfigError
from privacy_vision.core.graph import NODE_NAMES

# A node process exits with this code on a configuration error (a bad parameter, a missing file or source): a
# launch ends on it instead of respawning; any other non-zero code is a crash and is respawned.
EXIT_CONFIGURATION_ERROR = 2

# Strict mode releases only groups the anonymizer forms: launch's mode:=strict sets both, and this many groups a
# day per track when the params file forms none (the tightest bound that releases anything).
STRICT_GROUPS_PER_DAY = 1


def read_yaml_file(path: Path, what: str) -> Any:
    """The parsed YAML of `path`; ConfigError naming `what` (the launch argument) for a missing file or a syntax
    error with its line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"{what} {path} is not valid YAML ({where}: {error.problem})") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{what} {path} cannot be read: {error}") from None


def read_params_file(path: Path) -> dict[str, dict[str, Any]]:
    """A ROS 2 params file as node -> parameters; ConfigError for anything rcl would refuse or the nodes ignore."""
    data = read_yaml_file(path, "params_file")
    if not isinstance(data, dict):
        raise ConfigError(f"params_file {path} must map node names to 'ros__parameters' sections")
    params: dict[str, dict[str, Any]] = {}
    for node, section in data.items():
        name = str(node).strip("/")
        if name not in (*NODE_NAMES, "**"):  # '/**' applies to every node
            raise ConfigError(
                f"params_file {path}: '{node}' is not a node of the graph ({', '.join(NODE_NAMES)}) nor '/**'"
            )
        values = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(values, dict):
            raise ConfigError(f"params_file {path}: section '{node}' needs a 'ros__parameters' mapping")
        params[name] = dict(values)
    return params


def merged(params: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The params file's values with the overrides (launch arguments, --set) on top."""
    result = {node: dict(values) for node, values in params.items()}
    for node, values in overrides.items():
        result.setdefault(node, {}).update(values)
    return result


def check_cross_node(params: dict[str, dict[str, Any]]) -> None:
    """Settings of two nodes that only work together: strict mode (aggregator) releases the groups the anonymizer
    forms, so it needs anonymizer groups_per_day ≥ 1 (otherwise nothing would ever be released)."""
    mode = params.get("aggregator", {}).get("mode", "default")
    groups = params.get("anonymizer", {}).get("groups_per_day", 0)
    if mode == "strict" and not (isinstance(groups, int) and groups >= 1):
        raise ConfigError(
            f"aggregator mode 'strict' needs anonymizer groups_per_day ≥ 1 (it is {groups}): nothing would be "
            f"released; set both, or use the launch argument mode:=strict (groups_per_day {STRICT_GROUPS_PER_DAY} "
            "unless given)"
        )


def strict_mode_overrides(params: dict[str, dict[str, Any]], groups_per_day: int | None) -> dict[str, dict[str, Any]]:
    """What launch's mode:=strict sets: the aggregator's mode and the anonymizer's groups together."""
    configured = params.get("anonymizer", {}).get("groups_per_day", 0)
    groups = (
        groups_per_day if groups_per_day is not None else (configured if configured >= 1 else STRICT_GROUPS_PER_DAY)
    )
    return {"aggregator": {"mode": "strict"}, "anonymizer": {"groups_per_day": groups}}
