"""The ingest's plausible ranges of stated privacy values are the aggregator's own parameter ranges: a device can be
configured with any value the node accepts, and the ingest must not call it implausible (they drifted once)."""

from __future__ import annotations

import pytest

from privacy_vision.cloud.trust import STATED_PARAMETER_RANGES
from privacy_vision.nodes.aggregator import RELEASE_PARAMETERS

pytestmark = pytest.mark.graph  # the node module loads rclpy


def test_the_ingest_takes_every_value_the_aggregator_accepts():
    for name, (low, high) in STATED_PARAMETER_RANGES.items():
        spec = RELEASE_PARAMETERS[name]
        assert (spec.minimum, spec.maximum) == (low, high), name
