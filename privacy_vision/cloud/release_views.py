"""What the read API sends for a page of stored releases: JSON rows with every value's 95% interval read out and
marked, or CSV with one line per value. The intervals come from core/intervals.py, the one place that reads them
(the terminal summary uses the same function), so the dashboard, a CSV export and the terminal always agree."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime

from privacy_vision.cloud.ingest_store import Page
from privacy_vision.core.intervals import LEVEL, release_intervals

CSV_COLUMNS = (
    "zone_id",
    "kind",
    "tier",
    "period_start_utc",
    "period_end_utc",
    "metric",
    "value",
    "ci95_low",
    "ci95_high",
    "noise_dominated",
    "mechanism",
    "epsilon",
    "coverage",
    "release_id",
    "received_at_utc",
)
# A spreadsheet would run a text cell that starts with a formula sign, also after leading blanks (space, no-break
# space, BOM, ideographic space), with fullwidth ＝ ＋ － ＠, or with | and % (DDE, macros): such cells get a leading '.
FORMULA_START = re.compile("^[\\s\u00a0\u2000-\u200b\u3000\ufeff]*[=+\\-@|%\uff1d\uff0b\uff0d\uff20]|^[\t\r\n]")


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def annotated_row(body: str, received_at: float) -> str:
    """The stored body with `received_at` and `intervals` (each value's interval and whether it is noise-dominated)
    added, spliced in without re-encoding the body (a page of 1,000 rows costs a decode, not an encode too)."""
    release = json.loads(body)
    intervals = {name: value.as_dict() for name, value in release_intervals(release).items()}
    extra = {"received_at": received_at, "interval_level": LEVEL, "intervals": intervals}
    return body.rstrip()[:-1] + "," + json.dumps(extra, separators=(",", ":"))[1:]


def page_json(page: Page) -> str:
    return "[" + ",".join(annotated_row(body, at) for body, at in zip(page.bodies, page.received_at)) + "]"


def _safe(value: object) -> object:
    """Text guarded against formula injection; numbers stay numbers (a value below 0 is no formula)."""
    return "'" + value if isinstance(value, str) and FORMULA_START.match(value) else value


def page_csv(page: Page, header: bool = True) -> str:
    """One line per released value with its interval; a cell shown as "< k" is one line whose value is '< k'."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for body, received_at in zip(page.bodies, page.received_at):
        release = json.loads(body)
        epsilons = release.get("epsilon_by_metric") or {}
        common = (
            release["zone_id"],
            release["kind"],
            release["tier"],
            _utc(release["period_start_s"]),
            _utc(release["period_end_s"]),
        )
        tail = (release["coverage"], release["release_id"], _utc(received_at))
        if release["below_k"]:
            writer.writerow([_safe(str(v)) for v in (*common, "", "< k", "", "", "", release["mechanism"], "", *tail)])
            continue
        for name, interval in release_intervals(release).items():
            epsilon = epsilons.get(name.split(".", 1)[0], "")
            row = (*common, name, interval.value, interval.low, interval.high, interval.noise_dominated)
            writer.writerow([_safe(v) for v in (*row, release["mechanism"], epsilon, *tail)])
    return out.getvalue()
