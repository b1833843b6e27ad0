"""One control change in the explorer brings its new picture, without a second interaction.

trame-vtk JPEG-encodes frames in a background thread; a frame not encoded
yet when it is pushed is fetched again later. Its own retry gave up after
the second try, so whenever encoding took longer than one retry interval
the picture stayed one change behind until the next render (see
``_deliver_every_frame`` in viz/apps/explorer.py). Each change below is made
once, then the picture is polled (with a deadline) until it shows the change.

Real gateway, real explorer viz server (EGL offscreen), real Chromium.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from prefect_hpcviz.viz.gateway import EmbeddedGateway

pytestmark = pytest.mark.browser

VIEW_READY = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"
PICTURE_DEADLINE_S = 10.0


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def difference(a: bytes, b: bytes) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def settled(view, timeout: float = 30) -> bytes:
    """The view's picture once two screenshots 0.3 s apart are the same."""
    deadline = time.monotonic() + timeout
    last = view.screenshot()
    while True:
        time.sleep(0.3)  # the interval compared, not a readiness wait: the loop polls the picture
        png = view.screenshot()
        if png == last:
            return png
        assert time.monotonic() < deadline, f"the picture did not settle within {timeout} s"
        last = png


def picture_changes(view, before: bytes) -> float:
    """Seconds until the picture differs from ``before`` (no further interaction); fails at the deadline."""
    start = time.monotonic()
    while (took := time.monotonic() - start) < PICTURE_DEADLINE_S:
        if difference(view.screenshot(), before) > 0.1:
            return took
        time.sleep(0.05)
    raise AssertionError(f"the picture did not change within {PICTURE_DEADLINE_S:g} s of one control change")


def test_each_single_control_change_shows_its_picture_without_another_render(
    chromium_browser, small_simulation, tmp_path
):
    gw = EmbeddedGateway(state_dir=tmp_path, launch_timeout_s=60, poll_interval_s=0.2)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})  # large frames encode slowly
    try:
        gw.start()
        reg = gw.client().register(str(small_simulation), title="picture test")
        page = context.new_page()
        page.goto(reg.link)
        page.wait_for_function(VIEW_READY, timeout=90_000)
        view, label = page.locator("#hpcviz-view"), page.locator("#hpcviz-time-label")
        thumb = page.locator("[data-testid=time-slider] .v-slider-thumb").first
        first = settled(view)

        took = []
        for key, step in [("ArrowRight", "(2/3)"), ("ArrowRight", "(3/3)"), ("ArrowLeft", "(2/3)"),
                          ("ArrowLeft", "(1/3)"), ("ArrowRight", "(2/3)"), ("ArrowLeft", "(1/3)")]:
            before = settled(view)
            thumb.focus()
            page.keyboard.press(key)  # once
            took.append(picture_changes(view, before))
            assert step in label.inner_text()
        # Back at the first step, the picture is the first step's again, not a frame behind.
        assert difference(settled(view), first) < 0.05

        before = settled(view)
        page.locator("[data-testid=field-select]").click()
        page.get_by_role("option", name="velocity (magnitude)").click()  # once
        took.append(picture_changes(view, before))

        before = settled(view)
        page.locator("[data-testid=cmap-select]").click()
        page.get_by_role("option", name="gray").click()  # once
        took.append(picture_changes(view, before))
        print("seconds from one change to its picture:", [round(t, 2) for t in took])
    finally:
        context.close()
        gw.stop()
