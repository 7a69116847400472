"""DPIA and records of processing generated from the configuration in force."""

from __future__ import annotations

import json

import yaml

from privacy_vision.core.compliance import SystemFacts, build_dpia, render_markdown, risk_flags
from testkit.core import REPO

LOCAL = SystemFacts(discovery_range="LOCALHOST", dds_profile_localhost=True)


def default_params() -> dict:
    data = yaml.safe_load((REPO / "config/params.yaml").read_text())
    params = {node: dict(body["ros__parameters"]) for node, body in data.items()}
    params["uplink"]["pins"] = ["primary-pin", "backup-pin"]
    return params


def test_default_configuration_raises_no_flags():
    assert risk_flags(default_params(), LOCAL) == []


def test_weak_configuration_is_flagged_with_reasons():
    params = default_params()
    params["aggregator"].update(k=3, epsilon_per_track_day=8.0, daily_epsilon_cap=8.0)
    params["detection"]["retention_frames"] = 5
    params["uplink"]["pins"] = ["only-one"]
    flags = {f.setting: f for f in risk_flags(params, SystemFacts("SUBNET", dds_profile_localhost=False))}
    assert set(flags) == {
        "aggregator.k",
        "aggregator.epsilon_per_track_day",
        "detection.retention_frames",
        "uplink.pins",
        "ROS_AUTOMATIC_DISCOVERY_RANGE",
    }
    assert flags["aggregator.k"].value == 3 and "fewer than 5" in flags["aggregator.k"].reason
    assert "other hosts" in flags["ROS_AUTOMATIC_DISCOVERY_RANGE"].reason


def test_the_document_follows_the_parameters():
    params = default_params()
    before = build_dpia(params, LOCAL)
    params["aggregator"].update(k=8, epsilon_per_track_day=0.5)
    params["anonymizer"].update(grid_size_m=1.0, window_s=300.0, cells_per_day=[2, 2, 2])
    after = build_dpia(params, LOCAL)
    assert before["privacy_guarantee"]["k_anonymity"]["k"] == 5 and after["privacy_guarantee"]["k_anonymity"]["k"] == 8
    dp_ = after["privacy_guarantee"]["differential_privacy"]
    assert dp_["epsilon_per_track_day"] == 0.5 and dp_["cells_per_track_per_day"] == {"window": 2, "hour": 2, "day": 2}
    assert sum(2 * e for e in dp_["epsilon_per_cell"].values()) == 0.5  # L × ε per cell over the tiers
    person = after["privacy_guarantee"]["person_day"]
    assert person["epsilon_per_person_day"] == round(0.5 * max(person["tracks_per_person_measured"].values()), 3)
    markdown = render_markdown(after)
    assert (
        "k = 8" in markdown
        and "ε = 0.5 per track-day" in markdown
        and "1.0 m grid" in markdown
        and "window 300 s" in markdown
    )
    assert "k = 5" not in markdown
    json.dumps(after)  # the JSON form serialises


def test_the_document_states_the_strict_mode_and_its_delta():
    params = default_params()
    params["aggregator"].update(mode="strict", strict_delta=1e-7)
    params["anonymizer"].update(groups_per_day=2)
    dpia = build_dpia(params, LOCAL)
    dp_ = dpia["privacy_guarantee"]["differential_privacy"]
    assert dp_["mechanism"] == "sparse_vector+discrete_laplace" and dp_["delta"] == 1e-7
    assert (
        dp_["epsilon_per_track_day"] == 2.0
        and dp_["cells_per_track_per_day"] == {"group": 2}
        and dp_["test_threshold"] > 5
    )
    markdown = render_markdown(dpia)
    assert "δ = 1e-07" in markdown and "true size is at least k" in markdown
    params["anonymizer"]["groups_per_day"] = (
        0  # strict mode without groups: nothing is released, and the document says so
    )
    assert (
        "nothing is released" in build_dpia(params, LOCAL)["privacy_guarantee"]["differential_privacy"]["composition"]
    )


def test_markdown_lists_topics_and_which_leave_the_device():
    markdown = render_markdown(build_dpia(default_params(), LOCAL))
    assert (
        "| /zone_analytics | per-cell DP aggregates (window, hour, day tiers), '< k' cells withheld | yes |" in markdown
    )
    assert "| /camera/image_raw |" in markdown and "Record of processing (Art. 30 GDPR)" in markdown
    assert "None: every checked setting" in markdown


def test_dpia_states_where_frames_go_in_each_capture_mode():
    params = default_params()
    topic_mode = build_dpia(params, LOCAL)
    assert "/camera/image_raw" in topic_mode["data_flows"]["topics"]
    assert (
        "any process on this device can read" in topic_mode["processing"]["data_categories_on_device"]["camera frames"]
    )
    assert "any process on this device" in topic_mode["data_flows"]["topics"]["/camera/image_raw"]["content"]
    params["detection"]["capture"] = "in_process"
    in_process = build_dpia(params, LOCAL)
    assert "/camera/image_raw" not in in_process["data_flows"]["topics"]
    assert "no image topic exists" in in_process["processing"]["data_categories_on_device"]["camera frames"]
    assert not in_process["risks"]
    live = SystemFacts(
        discovery_range="LOCALHOST", dds_profile_localhost=True, topics={"/camera/image_raw": ["sensor_msgs/msg/Image"]}
    )
    flagged = build_dpia(params, live)
    assert [r["setting"] for r in flagged["risks"]] == ["detection.capture"]
