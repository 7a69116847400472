"""ament_python package privacy_vision (the interfaces live in msg/, package privacy_vision_msgs)."""

import sys
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from privacy_vision.core.graph import NODE_NAMES as NODES

PACKAGE = "privacy_vision"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={f"{PACKAGE}.cloud": ["dashboard.html"], f"{PACKAGE}.core": ["presence_calibration.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        # The default detector (YOLOX-nano, Apache-2.0) with its licence and provenance; found through the ament index.
        (f"share/{PACKAGE}/models/yolox_nano", sorted(glob("models/yolox_nano/*"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    python_requires=">=3.10",
    maintainer="privacy_vision developers",
    maintainer_email="dev@privacy-vision.invalid",
    description="Anonymous spatial analytics on ROS 2 with k-anonymity, differential privacy and a pinned, signed uplink.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{node}_node = {PACKAGE}.node_main:{node}" for node in NODES]
        + [f"composed_node = {PACKAGE}.node_main:composed"]
        + [f"privacy-vision = {PACKAGE}.cli:main", f"privacy-vision-ingest = {PACKAGE}.cloud.ingest:main"],
    },
)
