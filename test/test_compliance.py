"""DPIA and records of processing generated from the configuration in force."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_vision.core.compliance import EXAMPLE_PEOPLE, SystemFacts, build_dpia, render_markdown, risk_flags
from privacy_vision.core.release.grid import Grid
from privacy_vision.core.release.mechanisms import EventAccount, PresenceAccount, ReleaseSettings
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
    params["aggregator"].update(epsilon_per_presence_hour=8.0, daily_epsilon_cap=3.0)
    params["anonymizer"]["same_body_radius_m"] = 0.1
    params["detection"]["retention_frames"] = 5
    params["uplink"]["pins"] = ["only-one"]
    flags = {f.setting: f for f in risk_flags(params, SystemFacts("SUBNET", dds_profile_localhost=False))}
    assert set(flags) == {
        "aggregator.epsilon_per_presence_hour",
        "aggregator.daily_epsilon_cap",
        "anonymizer.same_body_radius_m",
        "detection.retention_frames",
        "uplink.pins",
        "ROS_AUTOMATIC_DISCOVERY_RANGE",
    }
    assert "bound instances" in flags["aggregator.daily_epsilon_cap"].reason
    assert "other hosts" in flags["ROS_AUTOMATIC_DISCOVERY_RANGE"].reason


@settings(max_examples=15, deadline=None)
@given(
    epsilon=st.sampled_from([0.5, 1.0, 3.0, 7.5]),
    events=st.sampled_from([0.1, 0.3, 1.0]),
    window_s=st.sampled_from([300.0, 900.0, 1800.0]),
    zones_per_day=st.integers(1, 4),
    k=st.integers(1, 20),
)
def test_every_number_of_the_dpia_is_what_the_code_composes(epsilon, events, window_s, zones_per_day, k):
    params = default_params()
    params["aggregator"].update(
        epsilon_per_presence_hour=epsilon, epsilon_events_per_track_day=events, k=k, daily_epsilon_cap=4 * events
    )
    params["anonymizer"].update(window_s=window_s, zones_per_day=zones_per_day)
    g = build_dpia(params, LOCAL)["privacy_guarantee"]
    settings_ = ReleaseSettings(
        epsilon_per_presence_hour=epsilon, epsilon_events_per_track_day=events, k=k, daily_epsilon_cap=4 * events
    )
    presence = PresenceAccount(settings_, Grid(window_s=window_s), 10)
    account = EventAccount(settings_, zones_per_day)
    assert g["presence"]["epsilon_per_presence_hour"] == round(presence.epsilon_per_presence_hour, 6)
    assert g["presence"]["epsilon_per_presence_hour"] == pytest.approx(epsilon)
    for name, seconds in EXAMPLE_PEOPLE.items():
        assert g["presence"]["examples"][name] == round(presence.epsilon_for_presence(seconds), 6)
        assert g["examples_total"][name]["total_if_one_lineage"] == round(
            presence.epsilon_for_presence(seconds) + account.epsilon_per_track_day, 6
        )
    assert g["events"]["epsilon_per_stitched_track_day"] == round(account.epsilon_per_track_day, 6) == round(events, 6)
    assert g["events"]["zones_per_lineage_day"] == zones_per_day and g["k"]["k"] == k
    assert g["presence"]["periods_s"]["window"] == window_s
    markdown = render_markdown(build_dpia(params, LOCAL))
    assert f"ε = {g['presence']['epsilon_per_presence_hour']:g} per presence-hour" in markdown
    assert f"ε = {g['events']['epsilon_per_stitched_track_day']:g} per stitched-track-day" in markdown


def test_the_document_says_what_k_is_and_is_not():
    dpia = build_dpia(default_params(), LOCAL)
    assert "not k-anonymity" in dpia["privacy_guarantee"]["k"]["rule"]
    assert "not k-anonymous" in dpia["record_of_processing_art30"]["categories_of_recipients"]
    assert "live people count" in dpia["processing"]["data_categories_on_device"]["diagnostics"]


def test_the_document_states_the_strict_mode_and_its_delta():
    params = default_params()
    params["aggregator"].update(mode="strict", strict_delta=1e-7, daily_epsilon_cap=4.0)
    params["anonymizer"].update(groups_per_day=2)
    dpia = build_dpia(params, LOCAL)
    groups = dpia["privacy_guarantee"]["groups"]
    assert groups["mechanism"] == "sparse_vector+discrete_laplace" and groups["delta_per_stitched_track_day"] == 1e-7
    assert groups["epsilon_per_stitched_track_day"] == 1.0 and groups["groups_per_lineage_day"] == 2
    assert groups["test_threshold"] > 5
    markdown = render_markdown(dpia)
    assert "δ = 1e-07" in markdown and "true size is at least k" in markdown
    params["anonymizer"]["groups_per_day"] = 0  # strict mode without groups: nothing is released, and it says so
    assert "nothing is released" in build_dpia(params, LOCAL)["privacy_guarantee"]["groups"]


def test_markdown_lists_topics_and_which_leave_the_device():
    markdown = render_markdown(build_dpia(default_params(), LOCAL))
    assert "| /zone_analytics | released spans: DP presence" in markdown and "| yes |" in markdown
    assert "| /camera/image_raw |" in markdown and "Record of processing (Art. 30 GDPR)" in markdown
    assert "/aggregator/release_cells" in markdown and "never on a topic" in markdown
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
