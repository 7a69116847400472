"""Prints the pipeline audit's figures (testkit/planted_bugs.py): the empirical ε lower bound against the stated ε,
for the model as shipped and with each planted bug. A bound above the stated ε is a broken guarantee.

    .venv/bin/python bench/privacy_audit.py [--draws 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testkit.planted_bugs import DRAWS, PLANTED, events_audit, presence_audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=DRAWS, help="noise draws per neighbouring input")
    draws = parser.parse_args().draws
    rows = [("as shipped", None, presence_audit), ("as shipped", None, events_audit)]
    rows += [(bug, plant, audit) for bug, (plant, audit) in PLANTED.items()]
    print(f"| model | audited unit | empirical ε lower bound | stated ε | verdict |  ({draws} draws)")
    print("|---|---|---|---|---|")
    for name, plant, audit in rows:
        started = time.monotonic()
        with pytest.MonkeyPatch.context() as monkeypatch:
            if plant:
                plant(monkeypatch)
            bound, stated = audit(draws)
        unit = "presence-hour (window tier)" if audit is presence_audit else "stitched-track-day"
        verdict = "within" if bound <= stated else "BROKEN"
        print(f"| {name} | {unit} | {bound:.3f} | {stated:.3f} | {verdict} |", flush=True)
        print(f"  ({time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
