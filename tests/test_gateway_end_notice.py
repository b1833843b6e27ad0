"""The open app's page says when its session ends and, once it ended, why (viz/gateway/end_notice.py).

A session ends at the earlier of its job's time limit (Slurm walltime; see
tests/test_slurm_gateway.py for the status fields there) and the gateway's
maximum session lifetime. The lifetime makes it testable with the local
launcher: real gateway, real explorer viz server, real Chromium.
"""

from __future__ import annotations

import re
import time

import pytest

from prefect_hpcviz.viz.backends import JobState, JobStatus
from prefect_hpcviz.viz.gateway import EmbeddedGateway, job_phase
from tests.test_gateway import Browser, echo_launcher

VIEW_READY = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"
NOTICE = "#hpcviz-session-notice"


# ---------------------------------------------------------------- when it ends
def test_a_session_ends_at_the_earlier_of_its_jobs_time_limit_and_the_maximum_lifetime():
    walltime = JobStatus(JobState.RUNNING, ends_at=1000.0)
    assert job_phase.session_end(walltime, 2000.0) == (1000.0, job_phase.JOB_TIME_LIMIT)
    assert job_phase.session_end(walltime, 900.0) == (900.0, job_phase.MAX_LIFETIME)
    assert job_phase.session_end(JobStatus(JobState.RUNNING), 900.0) == (900.0, job_phase.MAX_LIFETIME)
    assert job_phase.session_end(JobStatus(JobState.RUNNING), None) is None

    far = job_phase.describe("ready", walltime, now=0)
    assert far["ends_in_s"] == 1000 and far["ends_because"] == "the job's time limit" and "warning" not in far
    near = job_phase.describe("ready", walltime, now=760)
    assert near["warning"] == "This session ends in 4 min (the job's time limit). Save what you need."
    assert "warning" not in job_phase.describe("starting", walltime, now=760)  # no app page to show it on yet


@pytest.mark.parametrize(("lifetime", "warned"), [(3600, False), (300, True)])
def test_the_status_of_a_session_with_a_maximum_lifetime_says_when_it_ends(tmp_path, lifetime, warned):
    with EmbeddedGateway(state_dir=tmp_path, max_lifetime_s=lifetime, launch_timeout_s=30) as gw:
        reg = gw.client().register("/d", launcher=echo_launcher(), warm=True)
        session = gw.client().wait_ready(reg.id, timeout=30)
        browser = Browser(gw)
        browser.open(reg.link)
        status = browser.status(reg.id)
        expected = session["created_at"] + lifetime - time.time()
        assert status["state"] == "ready" and abs(status["ends_in_s"] - expected) <= 2, status
        assert status["ends_because"] == "the gateway's maximum session lifetime"
        assert status["ends_at"].endswith("Z")
        assert ("warning" in status) is warned
        if warned:
            assert re.fullmatch(
                r"This session ends in [45] min \(the gateway's maximum session lifetime\)\. Save what you need\.",
                status["warning"],
            ), status["warning"]


def test_the_end_notice_script_is_served_only_with_the_links_cookie(tmp_path):
    with EmbeddedGateway(state_dir=tmp_path) as gw:
        reg = gw.client().register("/d")
        browser = Browser(gw)
        path = f"/s/{reg.id}/__hpcviz__/end-notice.js"
        assert browser.get(path, page=False).status_code == 403
        browser.open(reg.link)
        script = browser.get(path, page=False)
        assert script.status_code == 200 and script.headers["content-type"].startswith("application/javascript")
        assert "hpcviz-session-notice" in script.text and "const WARN_BEFORE_S = 600;" in script.text


# ------------------------------------------------------------------ in Chromium
@pytest.mark.browser
def test_the_open_view_warns_before_the_maximum_lifetime_then_says_why_it_ended(
    chromium_browser, small_simulation, tmp_path
):
    lifetime = 45  # long enough to launch the explorer on a busy machine, short enough to wait for
    gw = EmbeddedGateway(state_dir=tmp_path, max_lifetime_s=lifetime, poll_interval_s=0.2, launch_timeout_s=40)
    context = chromium_browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        gw.start()
        reg = gw.client().register(str(small_simulation), title="end notice test")
        page = context.new_page()
        page.goto(reg.link)
        page.wait_for_function(VIEW_READY, timeout=60_000)
        session = gw.client().get(reg.id)["session"]

        # Before the end: a small warning with the time left, counted down on the page.
        notice = page.locator(f"{NOTICE}[data-kind=warning]")
        notice.wait_for(timeout=15_000)
        text = notice.inner_text()
        found = re.search(
            r"This session ends in (\d+) s \(the gateway's maximum session lifetime\)\. Save what you need\.", text
        )
        assert found, text
        left = int(found.group(1))
        expected = session["created_at"] + lifetime - time.time()
        assert 0 < left <= lifetime and abs(left - expected) <= 3, (left, expected)
        page.wait_for_function(  # counts down without another request to the gateway
            f"() => {{ const m = document.querySelector('{NOTICE}').textContent.match(/ends in (\\d+) s/);"
            f" return m && Number(m[1]) < {left}; }}",
            timeout=10_000,
        )
        assert page.locator("#hpcviz-view img").is_visible()  # the view stays usable under it
        page.screenshot(path=tmp_path / "end-notice-warning.png")  # for a look by eye

        # After the end: the reason, and a way to start again.
        ended = page.locator(f"{NOTICE}[data-kind=ended]")
        ended.wait_for(timeout=(lifetime + 30) * 1000)
        assert gw.client().get(reg.id)["session"]["state"] == "stopped"
        assert re.fullmatch(
            rf"This session ended: stopped after {lifetime} s, the gateway's maximum session lifetime; "
            r"start again\s*Start again",
            ended.inner_text().strip(),
        ), ended.inner_text()
        assert page.evaluate("window.hpcvizReconnect").startswith("not reloading")  # no new server for it
        page.screenshot(path=tmp_path / "end-notice-ended.png")

        ended.get_by_role("button", name="Start again").click()
        page.wait_for_function(VIEW_READY, timeout=60_000)
        again = gw.client().get(reg.id)["session"]
        assert again["id"] != session["id"] and again["state"] == "ready"
    finally:
        context.close()
        gw.stop()
