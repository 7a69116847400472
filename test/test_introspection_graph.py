"""A planted loss on a node's per-frame link shows on its /diagnostics as a count and a WARN; the limit is a validated
parameter. The tracking node runs as a real process; the test publishes its /detections with frames left out."""

from __future__ import annotations

import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from privacy_vision.core.graph import DIAGNOSTICS_TOPIC, TF_STATIC_TOPIC
from privacy_vision.nodes.common import RELIABLE_QOS, seconds_to_stamp
from privacy_vision_msgs.msg import Detections
from testkit.core import CONFIG, free_domain_id, start_node, stop
from testkit.ros import ParameterClient, RosProbe

pytestmark = pytest.mark.graph
FRAMES = 80  # at 10 frames/s; one in four is left out


def tracking_status(reports: list[DiagnosticArray]) -> DiagnosticStatus | None:
    statuses = [s for r in reports for s in r.status if s.name == "privacy_vision/tracking"]
    return statuses[-1] if statuses else None


def test_frames_left_out_of_detections_are_counted_and_warned_about(tmp_path):
    domain = free_domain_id()
    probe = RosProbe(domain)
    log = tmp_path / "tracking.log"
    process = start_node("tracking", domain, {"homography_file": str(CONFIG / "homography_pets.yaml")}, log)
    reports: list[DiagnosticArray] = []
    try:
        publisher = probe.node.create_publisher(Detections, "detections", RELIABLE_QOS)
        probe.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, reports.append, 50)
        assert probe.spin_until(lambda: publisher.get_subscription_count() > 0, 90.0), log.read_text()
        assert probe.spin_until(lambda: tracking_status(reports) is not None, 30.0), log.read_text()
        assert tracking_status(reports).level == DiagnosticStatus.OK
        start = time.time()
        sent = [frame for frame in range(FRAMES) if frame % 4 != 3]
        for frame in sent:
            message = Detections(image_width=768, image_height=576, backend="hog")
            seconds_to_stamp(start + frame * 0.1, message.header.stamp)
            publisher.publish(message)
            probe.spin_for(0.01)
        lost = sum(1 for frame in range(sent[-1]) if frame % 4 == 3)

        def counted() -> bool:
            status = tracking_status(reports)
            return status is not None and dict((v.key, v.value) for v in status.values).get(
                "frames_lost_upstream"
            ) == str(lost)

        assert probe.spin_until(counted, 30.0), tracking_status(reports)
        status = tracking_status(reports)
        values = {v.key: v.value for v in status.values}
        assert status.level == DiagnosticStatus.WARN, status
        assert "of the recent frames on /detections lost (over 0.05)" in status.message, status.message
        assert float(values["frames_lost_recent_fraction"]) == pytest.approx(lost / (lost + len(sent)), abs=1e-3)

        params = ParameterClient(probe, "tracking")
        refused = params.set("frame_loss_warn_fraction", 1.5)
        assert not refused.successful and "out of range" in refused.reason.lower(), refused.reason
        assert params.set("frame_loss_warn_fraction", 0.5).successful  # 25% lost is under this limit: OK again
        reports.clear()
        assert probe.spin_until(lambda: tracking_status(reports) is not None, 30.0)
        assert tracking_status(reports).level == DiagnosticStatus.OK, tracking_status(reports)
    finally:
        code = stop(process)
        probe.close()
    assert code == 0, log.read_text()


def test_a_homography_without_a_camera_pose_publishes_no_tf_and_says_why(tmp_path):
    """The default identity homography (pixels are metres) determines no camera: no /tf_static, and the reason on
    /diagnostics; tracking goes on."""
    domain = free_domain_id()
    probe = RosProbe(domain)
    log = tmp_path / "tracking.log"
    process = start_node("tracking", domain, {"homography_file": '""'}, log)
    reports: list[DiagnosticArray] = []
    try:
        probe.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, reports.append, 50)
        assert probe.spin_until(lambda: tracking_status(reports) is not None, 90.0), log.read_text()
        status = tracking_status(reports)
        assert status.level == DiagnosticStatus.OK and "no /tf_static: " in status.message, status
        assert "set the tracking node's camera_focal_px" in status.message, status.message
        assert probe.node.count_publishers(TF_STATIC_TOPIC) == 0
    finally:
        code = stop(process)
        probe.close()
    assert code == 0, log.read_text()
