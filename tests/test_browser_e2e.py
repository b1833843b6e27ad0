"""End to end, the way a scientist meets it: a real `prefect server` with its
UI, the gateway and the flow; headless Chromium opens the flow run, goes to
its artifact, clicks the link and sees the 3D view render; moving the time
slider changes the picture.

The two pictures in README.md are written by this test (to docs/images when
HPCVIZ_SCREENSHOTS=docs, to the test's tmp dir otherwise).
"""

from __future__ import annotations


import numpy as np
import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from prefect_hpcviz.blocks import LocalDaskCluster, LocalLauncher, VizGateway
from prefect_hpcviz.flows import visualize_simulation
from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayConfig
from tests.helpers import click_link, is_rendered, keep_picture, pixels, wait_until

pytestmark = pytest.mark.browser

VIEW_IMAGE_READY = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"


def test_click_the_artifact_link_in_the_prefect_ui_and_explore_the_3d_view(
    chromium_browser, prefect_server, small_simulation, tmp_path
):
    with EmbeddedGateway(GatewayConfig(host="127.0.0.1", port=0, state_dir=tmp_path / "gateway")) as gateway:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url, PREFECT_UI_URL: prefect_server.ui_url}):
            state = visualize_simulation(
                str(small_simulation),
                title="Browser test run",
                out_dir=str(tmp_path / "reduced"),
                cluster=LocalDaskCluster(n_workers=1, processes=False),
                launcher=LocalLauncher(),
                gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
                return_state=True,
            )
        assert state.is_completed(), state.message
        publication = state.result(_sync=True)  # playwright runs an event loop in this thread
        flow_run_id = state.state_details.flow_run_id

        context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(f"{prefect_server.ui_url}/runs/flow-run/{flow_run_id}", wait_until="domcontentloaded")
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("3D view of Browser test run", exact=True).click()  # the markdown artifact's card
        link = page.locator(f'a[href="{publication.link}"]').first
        link.wait_for(state="visible", timeout=60_000)
        thumbnail = page.locator('img[src^="data:image/png;base64,"]').first
        thumbnail.wait_for(state="visible", timeout=60_000)
        assert page.evaluate("(img) => img.naturalWidth", thumbnail.element_handle()) > 0
        keep_picture(page.screenshot(), "prefect-artifact.png", tmp_path)

        app = click_link(context, page, link)

        app.wait_for_function(VIEW_IMAGE_READY, timeout=120_000)
        assert "token=" not in app.url, "the token leaves the address bar once exchanged"
        assert app.url.startswith(f"{gateway.url}/s/{publication.viz_id}/")
        assert app.locator("#hpcviz-title").inner_text() == "Browser test run", "the app shows the registered title"
        view = app.locator("#hpcviz-view")
        first = wait_until(lambda: (lambda png: png if is_rendered(png) else None)(view.screenshot()), 30, "a rendered image")
        keep_picture(app.screenshot(), "explorer-view.png", tmp_path)

        label = app.locator("#hpcviz-time-label")
        before = label.inner_text()
        app.locator("[data-testid=time-slider] .v-slider-thumb").first.focus()
        app.keyboard.press("ArrowRight")
        wait_until(lambda: label.inner_text() != before, 15, "the time label to move on")
        changed = wait_until(
            lambda: (lambda png: png if is_rendered(png) and np.abs(pixels(png) - pixels(first)).mean() > 0.5 else None)(
                view.screenshot()
            ),
            20,
            "the picture to change with the time step",
        )
        assert changed != first
        context.close()
