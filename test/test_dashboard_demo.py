"""The dashboard on a real run's store, as a new user opens it: two short runs of the graph on the PETS video (a
pause between them), then `privacy-vision dashboard` (read-only, the run's analyst token, no device key) in
headless Chromium. Checked on the page: the default view is the latest data's span, not a day; no line or band
crosses the pause; the window reads in seconds; one footfall group per zone and day with each run's bar labelled;
an interval on every chart and a scale on the heading rose; the screenshot is what docs/img/dashboard.png shows
(PV_DASHBOARD_SCREENSHOT=docs/img/dashboard.png refreshes it)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import Chromium, chromium_binary

from privacy_vision.core.intervals import ValueInterval, sum_interval
from testkit.core import REPO, free_domain_id

pytestmark = pytest.mark.graph
WINDOW_S = 4


def run_graph(var: Path, video: Path) -> str:
    command = [sys.executable, "-m", "privacy_vision.cli", "run", "--source", str(video), "--var-dir", str(var)]
    command += ["--domain-id", str(free_domain_id()), "--quiet", "--max-frames", "80", "--fps", "20"]
    command += ["--set", f"anonymizer.window_s={WINDOW_S}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_dashboard_shows_a_demo_run(tmp_path, vtest_video):
    if chromium_binary() is None:
        pytest.fail("chromium is not installed: make test installs Debian's chromium package")
    var = tmp_path / "var"
    first = run_graph(var, vtest_video)
    time.sleep(2 * WINDOW_S)  # at least two windows without data: a gap the charts must not bridge
    second = run_graph(var, vtest_video)
    command = first.splitlines()[-1].split("Open the dashboard on this run: ", 1)[1]
    assert command == f".venv/bin/privacy-vision dashboard --var-dir {var}" and command in second
    with sqlite3.connect(var / "ingest.sqlite") as db:
        stored = [json.loads(row[0]) for row in db.execute("SELECT body FROM releases")]
    dashboard = subprocess.Popen(
        [*command.split(), "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = {}
    try:
        lines = []
        while not any("read API and dashboard: https://" in line for line in lines):
            line = dashboard.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        printed = "".join(lines)
        url = re.search(r"read API and dashboard: (https://\S+/) ", printed).group(1)
        token = (var / "pki" / "analyst-analyst.token").read_text().strip()
        assert token in printed and "read-only" in printed and "--device-key" not in printed

        async def look() -> None:
            async with Chromium(width=1280, height=900) as page:
                await page.open(url)
                await page.wait_for("document.body.dataset.ready === 'login'")
                await page.type_into("#token", token)
                await page.evaluate("document.querySelector('#login button').click()")
                await page.wait_for("document.body.dataset.ready === 'true'", timeout_s=60)
                seen["text"] = await page.evaluate("document.body.innerText")
                seen["status"] = await page.evaluate("document.getElementById('status').textContent")
                seen["charts"] = await page.evaluate(
                    """[...document.querySelectorAll('section.zone')].map(s => ({
                      zone: s.dataset.zone,
                      titles: [...s.querySelectorAll('.chart-title')].map(t => t.textContent),
                      occupancy: s.querySelector('svg.occupancy') && Object.fromEntries(
                        ['points', 'intervals', 'lines', 'gaps'].map(k => [k, +s.querySelector('svg.occupancy').dataset[k]])),
                      bands: [...s.querySelectorAll('svg.occupancy .interval, svg.occupancy path.values')]
                        .map(b => b.getBBox()).map(b => [b.x, b.x + b.width]),
                      gapRects: [...s.querySelectorAll('svg.occupancy rect.gap')].map(b => b.getBBox()).map(b => [b.x, b.x + b.width]),
                      roseScale: s.querySelectorAll('svg.rose circle.scale').length,
                      roseWhiskers: s.querySelectorAll('svg.rose .whisker').length,
                      dwellWhiskers: s.querySelectorAll('svg.dwell .whisker').length,
                      days: s.querySelector('svg.footfall') ? +s.querySelector('svg.footfall').dataset.days : 0,
                      dayBars: s.querySelectorAll('svg.footfall .day-bar, svg.footfall .suppressed').length,
                      runLabels: [...s.querySelectorAll('svg.footfall .run-label')].map(t => t.textContent),
                      footfallWhiskers: s.querySelectorAll('svg.footfall .whisker').length,
                    }))"""
                )
                seen["sum_check"] = await page.evaluate(
                    "JSON.stringify(sumInterval([{value: 3, half_width: 28}, {value: 5, half_width: 28}]))"
                )
                await page.screenshot(tmp_path / "dashboard.png")

        asyncio.run(look())
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
    if os.environ.get("PV_DASHBOARD_SCREENSHOT"):
        shutil.copy(tmp_path / "dashboard.png", Path(os.environ["PV_DASHBOARD_SCREENSHOT"]))

    windows = sorted((r for r in stored if r["tier"] == "window"), key=lambda r: r["period_start_s"])
    # the latest data's span: the two runs' windows (a pause of seconds, not of an hour), not the day from 00:00
    match = re.search(r"(\d{4}-\d\d-\d\dT[\d:]+Z) to (\d{4}-\d\d-\d\dT[\d:]+Z)", seen["status"])
    assert match, seen["status"]
    since, until = (time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone for t in match.groups())
    assert since == windows[0]["period_start_s"] and until == max(r["period_end_s"] for r in windows), seen["status"]
    zones = {r["zone_id"] for r in stored}
    assert {chart["zone"] for chart in seen["charts"]} == zones
    for chart in seen["charts"]:
        if chart["zone"] == "site":  # the whole site has a day cell only
            assert chart["days"] == 1 and chart["dayBars"] == 2 and chart["runLabels"]
            continue
        assert f"occupancy per {WINDOW_S} s window (people present on average)" in chart["titles"], chart
        occupancy = chart["occupancy"]
        assert occupancy["gaps"] >= 1 and chart["gapRects"], chart  # the pause between the runs is drawn as such
        assert occupancy["intervals"] == occupancy["points"], chart  # a band for every shown window
        for low, high in chart["bands"]:  # no line or band crosses the pause
            assert not any(low < gap_low + 0.5 and high > gap_high - 0.5 for gap_low, gap_high in chart["gapRects"]), (
                chart
            )
        assert chart["roseScale"] == 2 and chart["roseWhiskers"] == 8 and chart["dwellWhiskers"] == 3, chart
        assert chart["days"] == 1 and chart["dayBars"] == 2, chart  # one day, a bar per run...
        assert len(set(chart["runLabels"])) == 2, chart  # each labelled with the time its run ended
        shown_days = [r for r in stored if r["zone_id"] == chart["zone"] and r["kind"] == "events" and not r["below_k"]]
        assert chart["footfallWhiskers"] == len(shown_days)  # ...each with its interval
    assert "0.333" not in seen["text"] and "min window" not in seen["text"]  # was: "per 0.3333333333333333 min window"
    same = sum_interval([ValueInterval(3.0, 0.0, 31.0, 28.0, True), ValueInterval(5.0, 0.0, 33.0, 28.0, True)])
    assert json.loads(seen["sum_check"])["half_width"] == pytest.approx(same.half_width)  # the page sums as Python
    assert (tmp_path / "dashboard.png").read_bytes().startswith(b"\x89PNG")
