"""Canned views in a real browser: a real `prefect server` with its UI shows the
gallery artifact of regenerate_canned; headless Chromium clicks a thumbnail and
the explorer opens through the gateway with the entry's view preset restored.

The README's pictures of the gallery and of a canned view are written by this
test (to docs/images when HPCVIZ_SCREENSHOTS=docs, to the test's tmp dir otherwise).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from prefect_hpcviz.blocks import LocalDaskCluster, LocalLauncher, VizGateway
from prefect_hpcviz.flows import regenerate_canned
from prefect_hpcviz.viz.datasets import write_synthetic
from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayConfig
from tests.helpers import click_link, is_rendered, keep_picture, wait_until

pytestmark = pytest.mark.browser

VIEW_IMAGE_READY = "() => { const i = document.querySelector('#hpcviz-view img'); return !!i && i.naturalWidth > 0 }"


def _catalog(folder: Path) -> Path:
    for run in ("vortex", "plume", "wake"):
        write_synthetic(folder / run, shape=(48, 48, 48), steps=3)
    path = folder / "catalog.yaml"
    path.write_text(textwrap.dedent("""
        defaults:
          thumbnails: [[240, 150], [640, 400]]
          recipe: {steps: [{coarsen: {factor: 2}}, {slice: {normal: z}}]}
        visualizations:
          - name: Vortex, pressure from below
            source: vortex/simulation.pvd
            view:
              camera: {position: [4.2, -5.2, -2.6], focal_point: [0, 0, 0], up: [0, 0, 1]}
              field: pressure
              colormap: coolwarm
              range: [-0.2, 1.2]
              contours: [0.9]
          - name: Plume, pressure isosurfaces
            source: plume/simulation.pvd
            view: {camera: iso, field: pressure, colormap: plasma, contours: [0.3, 0.7]}
          - name: Wake from above
            source: wake/simulation.pvd
            view: {camera: +z, field: pressure, colormap: turbo, step: 2}
    """))
    return path


def test_click_a_gallery_thumbnail_and_the_canned_view_opens_with_its_preset(
    chromium_browser, prefect_server, tmp_path
):
    catalog = _catalog(tmp_path / "site")
    with EmbeddedGateway(GatewayConfig(host="127.0.0.1", port=0, state_dir=tmp_path / "gateway")) as gateway:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url, PREFECT_UI_URL: prefect_server.ui_url}):
            state = regenerate_canned(
                str(catalog),
                out_dir=str(tmp_path / "canned"),
                gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
                cluster=LocalDaskCluster(n_workers=1, processes=False),
                launcher=LocalLauncher(),
                return_state=True,
            )
        assert state.is_completed(), state.message
        report = state.result(_sync=True)  # playwright runs an event loop in this thread
        vortex = report.entries[0].view

        context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(f"{prefect_server.ui_url}/runs/flow-run/{state.state_details.flow_run_id}", wait_until="domcontentloaded")
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("Canned visualizations", exact=True).first.click()  # the gallery artifact's card
        thumbnails = page.locator('a[href*="/v/"] img[src^="data:image/png;base64,"]')
        wait_until(lambda: thumbnails.count() == 3, 60, "three gallery thumbnails")
        for i in range(3):
            thumbnails.nth(i).wait_for(state="visible", timeout=60_000)
            assert page.evaluate("(img) => img.naturalWidth", thumbnails.nth(i).element_handle()) == 240
        keep_picture(page.screenshot(), "canned-gallery.png", tmp_path)

        link = page.locator(f'a[href="{vortex.link}"]').first
        app = click_link(context, page, link)

        app.wait_for_function(VIEW_IMAGE_READY, timeout=120_000)
        assert app.url.startswith(f"{gateway.url}/s/{vortex.viz_id}/")
        assert app.locator("#hpcviz-title").inner_text() == "Vortex, pressure from below"
        assert app.locator("#hpcviz-contour-label").inner_text() == "pressure = 0.9", "the preset's field and contour"
        assert "coolwarm" in app.locator("[data-testid=cmap-select]").inner_text(), "the preset's colormap"
        assert "pressure" in app.locator("[data-testid=field-select]").inner_text()
        view = app.locator("#hpcviz-view")
        wait_until(lambda: is_rendered(view.screenshot()), 30, "a rendered image")
        keep_picture(app.screenshot(), "canned-view.png", tmp_path)
        context.close()
