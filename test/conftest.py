"""Shared fixtures: paths to the real test data in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not available (../shared is not beside the repository)")
    return path


@pytest.fixture(scope="session")
def vtest_video() -> Path:
    local = REPO / "data" / "vtest.avi"
    return local if local.is_file() else _require(SHARED / "data/video/vtest.avi")


@pytest.fixture(scope="session")
def pets_gt() -> Path:
    return _require(SHARED / "data/mot15/PETS09-S2L1/gt/gt.txt")


@pytest.fixture(scope="session")
def pets_frames_dir() -> Path:
    return _require(SHARED / "data/mot15/PETS09-S2L1/img1")


@pytest.fixture(scope="session")
def tflite_model() -> Path:
    return _require(SHARED / "models/ssd_mobilenet_v1_coco_quant/detect.tflite")


@pytest.fixture(scope="session")
def vtest_frames(vtest_video):
    from privacy_vision.core.sources import FrameSource

    source = FrameSource(str(vtest_video))
    frames = [frame.image.copy() for frame, _ in zip(source.frames(), range(30))]
    source.close()
    return frames


@pytest.fixture(scope="session")
def postgres_dsn():
    from testkit.postgres import postgres_server

    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request, tmp_path):
    """An ingest database, once as a SQLite file and once as a clean PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "ingest.sqlite")
    dsn = request.getfixturevalue("postgres_dsn")
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        for table in ("releases", "nonces", "sequences", "spans", "device_zones", "device_days"):
            db.execute(f"DROP TABLE IF EXISTS {table}")
    return dsn


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A fresh CA, server and device keys per test module (modules that need more define their own)."""
    from privacy_vision.core.pki import PkiPaths, create_pki

    root = tmp_path_factory.mktemp("pki")
    create_pki(root)
    return PkiPaths(root)


@pytest.fixture
def ingest(pki, tmp_path):
    """A TLS ingest on SQLite that knows the module's device key."""
    from privacy_vision.core.protocol import load_key_file
    from testkit.ingest import IngestThread

    server = IngestThread(pki, tmp_path / "ingest.sqlite", load_key_file(pki.device_key))
    yield server
    server.stop()


@pytest.fixture
def small_audit_disk(tmp_path):
    """tmp_path/audit on its own 64 KiB file system, to be filled up (testkit.core.fill_up); skipped with the reason
    where this process may not mount one."""
    from testkit.core import small_filesystem

    folder = tmp_path / "audit"
    folder.mkdir()
    try:
        with small_filesystem(folder, 64):
            yield folder
    except PermissionError as error:
        pytest.skip(str(error))
