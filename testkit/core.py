"""Test and benchmark helpers that need no rclpy: paths, ROS domains, node processes. Pure-core tests import only
this module (and the package's core), so they run where the ROS client libraries are not installed."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from privacy_vision.core.graph import graph_environment

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
SHARED = REPO.parent / "shared"  # test data, models and the ros2 command line beside the repository


_HELD_DOMAINS: list = []  # open lock files: a domain stays ours until this test process exits


def free_domain_id() -> int:
    """A ROS domain no other test process on this host holds (an exclusive lock file per domain): random
    picks alone let two concurrent test runs talk to each other's graphs."""
    folder = Path(tempfile.gettempdir()) / "privacy_vision_ros_domains"
    folder.mkdir(exist_ok=True)
    for domain in random.sample(range(110, 201), 91):
        handle = open(folder / f"{domain}.lock", "w")  # noqa: SIM115 - held (locked) until the process exits
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _HELD_DOMAINS.append(handle)
        return domain
    raise RuntimeError(
        "every ROS domain from 110 to 200 is held by another test process on this host: wait for them to end"
    )


def node_environment(domain_id: int) -> dict[str, str]:
    return graph_environment(CONFIG, domain_id)


def start_node(name: str, domain_id: int, parameters: dict[str, str], log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "privacy_vision.node_main",
        name,
        "--ros-args",
        "--params-file",
        str(CONFIG / "params.yaml"),
    ]
    parameters = {"audit_dir": str(log_path.parent / "audit"), **parameters}
    for key, value in parameters.items():
        command += ["-p", f"{key}:={value}"]
    log = open(log_path, "w")  # noqa: SIM115 - the node process writes it for its lifetime
    return subprocess.Popen(command, cwd=REPO, env=node_environment(domain_id), stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, timeout_s: float = 15.0) -> int:
    if process.poll() is None:
        process.send_signal(2)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def small_filesystem(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` mounted on the existing folder `path`, for a full disk on demand (with fill_up). Needs
    the right to mount (root, as in CI): PermissionError with mount's reason otherwise."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=700", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs on {path}: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill_up(folder: Path) -> Path:
    """Fill the file system under `folder` until it refuses another byte (ENOSPC); delete the file returned to
    give the space back."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
    return filler


def queue_releases(store_path: Path, releases: list[dict]) -> None:
    """Record wire releases in a release store as the aggregator does (the uplink then sends them from it)."""
    from privacy_vision.core.protocol import canonical_release_bytes
    from privacy_vision.core.release.store import ReleaseStore, SpanKey

    store = ReleaseStore(store_path, daily_epsilon_cap=float("inf"))
    try:
        for release in releases:
            key = SpanKey(
                release["kind"],
                release["tier"],
                release["zone_id"],
                release["period_start_s"],
                release["segment_start_s"],
                release["segment_end_s"],
            )
            recorded = store.record(
                key, release["release_id"], canonical_release_bytes(release), {}, release["configuration"], []
            )
            assert recorded.stored, recorded
    finally:
        store.close()
