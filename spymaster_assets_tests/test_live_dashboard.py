"""The dashboard in a real browser: headless Chromium loads the page during a fast replay of a recorded session and
draws candles, the level lines, approach cards and the analogs' paths; the replay controls restart the session."""

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from spymaster_assets.live.recorded import RecordedReplaySource, write_log
from spymaster_assets.live.server import create_app
from spymaster_assets_tests.live_support import SESSION, HeadlessChromium, serving, session_frames

DESCRIBE = "window.spymaster && window.spymaster.describe()"
# What is on screen: the level legend, the first active card's text, and how many analog-overlay pixels are in the
# BREAK blue or REJECT red (a drawn overlay, not an empty canvas).
PROBE = """
  const c = document.querySelector('#cards .card.active canvas.analogs');
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let coloured = 0;
  for (let i = 0; i < px.length; i += 4) {
    if ((px[i + 2] > 200 && px[i] < 140) || (px[i] > 200 && px[i + 1] < 120 && px[i + 2] < 120)) coloured++;
  }
  return { ...d, coloured, card: document.querySelector('#cards .card.active').innerText,
           legend: [...document.querySelectorAll('.level-chip')].map(chip => chip.textContent) };"""


def artifact_dir() -> Path:
    return Path(os.environ.get("SPYMASTER_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "spymaster-test-artifacts"))


@pytest.fixture
def chromium_binary():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return binary


def test_the_dashboard_draws_a_replay_in_headless_chromium(tmp_path, chromium_binary, capsys):
    log = tmp_path / "session.jsonl"
    write_log(log, session_frames())
    # 300× real time: the page joins a replay already under way and keeps receiving frames while it is checked
    app = create_app(RecordedReplaySource(log), replay=SESSION, speed=300)
    with serving(app) as url:
        browser = HeadlessChromium(tmp_path / "profile", binary=chromium_binary)
        try:
            browser.call("Page.navigate", url=url + "/")
            # one probe, evaluated atomically in the page, so an approach ending between two checks cannot race them
            seen = browser.wait_for(f"(() => {{ const d = {DESCRIBE}; if (!(d && d.clock >= '10:40:00' && d.candles >= 10 "
                                    f"&& d.levelLines >= 4 && d.cards >= 1 && d.analogPaths >= 1 && d.streamLevels >= 4)) "
                                    f"return null; {PROBE} }})()", timeout_s=90)
            shot = artifact_dir() / "dashboard.png"
            browser.screenshot(shot)
            with capsys.disabled():
                print(f"\ndashboard screenshot: {shot}")
            assert seen["status"]["session"] == str(SESSION) and seen["status"]["sessions"] == [str(SESSION)]
            assert len(seen["legend"]) == 6 and "PM high 5621.25" in seen["legend"]
            assert "P(BREAK)" in seen["card"] and "eff. N" in seen["card"] and "similar past cases" in seen["card"]
            assert seen["coloured"] > 50  # the analog overlay is really drawn, in the outcome colours

            # the replay controls: restart from 11:00 as fast as possible; the page starts afresh from 11:00
            browser.evaluate("""(() => {
                document.getElementById('speed-select').value = '0';
                document.getElementById('start-input').value = '11:00';
                document.getElementById('replay-form').requestSubmit(); })()""")
            done = browser.wait_for(f"(() => {{ const d = {DESCRIBE}; return d.status && !d.status.running "
                                    f"&& d.status.replay_time_et === '12:30:00' ? d : null }})()", timeout_s=90)
            from_eleven = {f.bar_start_ns for f in session_frames() if f.type == "candle" and f.time_et >= "11:00:00"}
            assert done["candles"] == len(from_eleven)  # the candles before 11:00 were cleared
            assert browser.console == [], browser.console
        finally:
            browser.close()
    assert shot.stat().st_size > 50_000
    assert dt.date.fromisoformat(done["status"]["session"]) == SESSION
