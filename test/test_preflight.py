"""Configuration errors end `privacy-vision run` before anything starts: one clear line per problem and a non-zero
exit, no node process, no ingest (the issue: a missing video, a corrupt one and ε = -1 each started the whole graph
first, the last one then processed the whole video for no release)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from privacy_vision.cli import domain_id
from testkit.core import REPO, free_domain_id


def run(tmp_path, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "privacy_vision.cli", "run", "--quiet", "--var-dir", str(tmp_path / "var")]
    command += ["--domain-id", str(free_domain_id()), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def started_nothing(tmp_path) -> bool:
    logs = list((tmp_path / "var" / "logs").glob("*/*.log"))
    return all(log.name == "check.log" for log in logs)


def test_every_configuration_error_is_named_before_anything_starts(tmp_path, vtest_video):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 4)  # 1 KB that is no video
    result = run(
        tmp_path,
        "--source",
        str(corrupt),
        "--set",
        "aggregator.epsilon_per_presence_hour=-1",
        "--set",
        "anonymizer.window_s=7",
        "--set",
        f"tracking.homography_file={tmp_path / 'absent.yaml'}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    for node, reason in [
        ("camera", "could not open or decode it"),
        ("aggregator", "epsilon_per_presence_hour out of range"),
        ("anonymizer", "window_s must divide an hour"),
        ("tracking", "absent.yaml"),
    ]:
        line = next(line for line in output.splitlines() if f"configuration error: node '{node}'" in line)
        assert reason in line, line
    assert "nothing was started" in output and "Released by this run" not in output
    assert started_nothing(tmp_path), list((tmp_path / "var" / "logs").glob("*/*"))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--source", "/nonexistent.mp4"], "source '/nonexistent.mp4' is neither an existing file"),
        (["--set", "aggregator.k=abc"], "--set aggregator.k=abc: expected an integer"),
        (["--set", "aggregator.kk=3"], "node 'aggregator' has no parameter 'kk'"),
        (["--set", "detection.backend=tflite", "--set", "detection.tflite_model=/absent.tflite"], "/absent.tflite"),
    ],
)
def test_a_bad_value_is_one_line_and_a_non_zero_exit(tmp_path, vtest_video, args, says):
    """Before the type check, `--set aggregator.k=abc` ran the whole video with k = 5: with a second params file
    ROS's parser keeps the first file's value when the types differ, without a word."""
    result = run(tmp_path, "--source", str(vtest_video), *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and says in output, output
    assert started_nothing(tmp_path)


def test_ros_domain_id_is_honoured(monkeypatch):
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    assert domain_id(None) is None  # the runner then picks one at random
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert domain_id(None) == 42 and domain_id(7) == 7  # --domain-id wins over the environment
    for bad in ("300", "-1", "x"):
        monkeypatch.setenv("ROS_DOMAIN_ID", bad)
        with pytest.raises(SystemExit, match="ROS_DOMAIN_ID must be an integer from 0 to 232"):
            domain_id(None)
