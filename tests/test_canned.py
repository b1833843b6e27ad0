"""Canned visualizations: the catalog, and regenerate_canned under a real Prefect API,
on real Dask, publishing to a real gateway. Artifacts and task-run states are read
back through the Prefect client, the way the UI reads them."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import textwrap

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.sorting import ArtifactSort

from prefect_hpcviz.blocks import LocalDaskCluster, VizGateway
from prefect_hpcviz.flows import regenerate_canned
from prefect_hpcviz.viz.catalog import input_fingerprint, load_catalog, parse_catalog
from prefect_hpcviz.viz.datasets import write_synthetic
from prefect_hpcviz.viz.errors import InputError

PRESET = {"camera": "+x", "field": "pressure", "colormap": "coolwarm", "range": [0.0, 1.0], "contours": [0.4, 0.7]}


def write_catalog(folder, *, broken: bool = False) -> str:
    (folder / "recipes").mkdir(exist_ok=True)
    (folder / "recipes" / "light.yaml").write_text("steps:\n  - coarsen: {factor: 2}\n  - slice: {normal: z}\n")
    text = f"""
    defaults:
      thumbnails: [[160, 100], [320, 200]]
    visualizations:
      - name: Vortex overview
        source: runs/a/*.pvd
        recipe: recipes/light.yaml
        view: {PRESET}
      - name: Second run from above
        source: {folder / "runs" / "b" / "simulation.pvd"}
        recipe: {{steps: [{{coarsen: {{factor: 2}}}}, {{contour: {{field: pressure, values: [0.5]}}}}]}}
        view: {{camera: +z, field: velocity}}
    """
    if broken:
        text += """
      - name: Missing run
        source: runs/missing/simulation.pvd
      - name: Wrong field
        source: runs/b/simulation.pvd
        recipe: {steps: [{contour: {field: temperature, values: [1]}}]}
    """
    path = folder / ("broken.yaml" if broken else "catalog.yaml")
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("canned-site")
    for run in ("a", "b"):
        write_synthetic(folder / "runs" / run, shape=(24, 24, 24), steps=2)
    return folder


def regenerate(catalog, site, gateway):
    return regenerate_canned(
        catalog,
        out_dir=str(site / "canned"),
        gateway=VizGateway(url=gateway.url, admin_token=gateway.admin_token),
        cluster=LocalDaskCluster(n_workers=1, processes=False),
        return_state=True,
    )


async def task_states(flow_run_id) -> dict[str, str]:
    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.state.name for run in runs}


async def artifacts(flow_run_id) -> dict:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


async def history(key: str) -> list:
    async with get_client() as client:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                           sort=ArtifactSort.CREATED_DESC)


@pytest.fixture(scope="module")
def first_run(prefect_harness, gateway, site):
    catalog = write_catalog(site)
    state = regenerate(catalog, site, gateway)
    assert state.is_completed(), state.message
    return catalog, state


# -- the catalog ---------------------------------------------------------------------------------


def test_the_catalog_reads_files_relative_to_itself(site):
    catalog = load_catalog(write_catalog(site))
    overview, second = catalog.entries

    assert overview.source == str(site / "runs" / "a" / "*.pvd") and overview.is_glob
    assert overview.recipe_file == str(site / "recipes" / "light.yaml")
    assert overview.view.camera == "+x" and overview.view.contours == (0.4, 0.7)
    assert overview.thumbnails == ((160, 100), (320, 200))
    assert second.view.field == "velocity" and second.app == "explorer"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{name: a, source: x.pvd, view: {colormap: jett}}", r"entry 1 \('a'\) key 'view.colormap': 'jett' is not a colormap"),
        ("{name: a, source: x.pvd, view: {camera: top}}", r"entry 1 \('a'\) key 'view.camera': 'top' is not a named view"),
        ("{name: a, source: x.pvd, thumbnails: [[8, 8]]}", r"entry 1 \('a'\) key 'thumbnails': 8x8 is outside"),
        ("{name: a, source: x.pvd, recipe: {steps: [{coarsen: {factor: 0}}]}}", r"entry 1 \('a'\) key 'recipe' step 1 \(coarsen\)"),
        ("{name: a, source: x.pvd, recipe: nowhere.yaml}", r"entry 1 \('a'\) key 'recipe': .*nowhere.yaml: no such file"),
        ("{name: a, source: x.pvd, colour: red}", r"entry 1 \('a'\) key 'colour': unknown key"),
        ("{name: a}", r"entry 1 \('a'\) key 'source': missing or empty"),
    ],
)
def test_a_bad_catalog_entry_is_named_with_its_key(entry, expected, tmp_path):
    with pytest.raises(InputError, match=f"site.yaml {expected}"):
        parse_catalog(f"visualizations:\n  - {entry}\n", source="site.yaml", base_dir=tmp_path)


def test_the_example_catalog_is_valid():
    from prefect_hpcviz.deployments import PREFECT_YAML

    catalog = load_catalog(PREFECT_YAML.with_name("catalog.example.yaml"))
    assert [e.slug for e in catalog.entries] == ["vortex-overview", "ocean-salinity-from-above"]
    assert catalog.entries[1].storage_options == {"account_name": "mysite"}


def test_two_entries_with_the_same_artifact_key_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"entry 2 \('Run A'\) key 'name': gives the same artifact key as entry 1"):
        parse_catalog("visualizations:\n  - {name: run-a, source: a.pvd}\n  - {name: Run A, source: b.pvd}\n",
                      source="site.yaml", base_dir=tmp_path)


def test_the_fingerprint_changes_when_an_input_or_the_recipe_changes(site, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(site / "runs" / "b", folder)
    entry = parse_catalog(f"visualizations: [{{name: a, source: {folder}/simulation.pvd, recipe: {{steps: []}}}}]").entries[0]
    first = input_fingerprint(entry)

    assert input_fingerprint(entry).key == first.key, "stable while nothing changes"
    piece = sorted(folder.glob("*.vti"))[-1]
    os.utime(piece, ns=(piece.stat().st_atime_ns, piece.stat().st_mtime_ns + 1_000_000_000))
    touched = input_fingerprint(entry)
    assert touched.key != first.key, "touching one piece of the series changes it"
    other = parse_catalog(f"visualizations: [{{name: a, source: {folder}/simulation.pvd, "
                          "recipe: {steps: [{coarsen: {factor: 2}}]}}]").entries[0]
    assert input_fingerprint(other).key != touched.key, "another recipe changes it"
    assert first.files == 3 and first.nbytes > 0


def test_a_glob_stands_for_its_newest_match(site, tmp_path):
    for name in ("old", "new"):
        shutil.copytree(site / "runs" / "b", tmp_path / name)
    old, new = tmp_path / "old" / "simulation.pvd", tmp_path / "new" / "simulation.pvd"
    os.utime(old, ns=(old.stat().st_atime_ns, new.stat().st_mtime_ns - 10**9))
    entry = parse_catalog(f"visualizations: [{{name: a, source: '{tmp_path}/*/simulation.pvd'}}]").entries[0]

    assert input_fingerprint(entry).source == str(new)


# -- the flow --------------------------------------------------------------------------------------


async def test_every_entry_gets_a_keyed_artifact_and_the_gallery_links_every_thumbnail(first_run, gateway):
    _, state = first_run
    report = state.result(_sync=True)
    assert [(e.name, e.status) for e in report.entries] == [("Vortex overview", "reduced"), ("Second run from above", "reduced")]
    by_key = await artifacts(state.state_details.flow_run_id)
    assert {"hpcviz-canned-vortex-overview", "hpcviz-canned-second-run-from-above", "hpcviz-canned-gallery",
            "hpcviz-canned-report"} <= set(by_key)

    gallery = by_key["hpcviz-canned-gallery"].data
    cards = re.findall(r'<a href="([^"]+)"[^>]*><img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"', gallery)
    assert [alt for _, _, alt in cards] == ["Vortex overview", "Second run from above"]
    for (link, png, _), outcome in zip(cards, report.entries):
        assert html.unescape(link) == outcome.view.link
        assert link.startswith(f"{gateway.url}/v/")
        assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
        response = httpx.get(html.unescape(link), follow_redirects=False, trust_env=False)
        assert response.status_code == 303, "every gallery link opens its view at the gateway"

    entry_markdown = by_key["hpcviz-canned-vortex-overview"].data
    assert report.entries[0].view.link in html.unescape(entry_markdown)
    assert "input fingerprint" in entry_markdown


def test_the_view_preset_travels_with_the_registration(first_run, gateway):
    _, state = first_run
    overview = state.result(_sync=True).entries[0].view
    with gateway.client() as client:
        registered = client.get(overview.viz_id)
    assert registered["view"] == PRESET
    assert registered["title"] == "Vortex overview"


def test_thumbnails_are_rendered_for_the_preset_at_each_size(first_run, site):
    from PIL import Image

    thumbnails = site / "canned" / "thumbnails"
    assert sorted(p.name for p in thumbnails.glob("vortex-overview-*.png")) == [
        "vortex-overview-160x100.png", "vortex-overview-320x200.png"]
    assert Image.open(thumbnails / "vortex-overview-320x200.png").size == (320, 200)
    default = thumbnails.parent / "default.png"
    from prefect_hpcviz.viz.thumbnail import render_thumbnail

    overview = site / "canned" / first_run[1].result(_sync=True).entries[0].view.reduced_path
    default.write_bytes(render_thumbnail(overview, size=(320, 200)))
    assert default.read_bytes() != (thumbnails / "vortex-overview-320x200.png").read_bytes()


async def test_an_unchanged_rerun_does_no_reduction_work_and_a_touched_input_redoes_only_its_entry(first_run, site, gateway):
    catalog, first = first_run
    reduced = {e.name: e.view.reduced_path for e in first.result(_sync=True).entries}
    manifests = {name: os.stat(os.path.join(path, "manifest.json")).st_mtime_ns for name, path in reduced.items()}

    second = regenerate(catalog, site, gateway)
    assert second.is_completed(), second.message
    assert [e.status for e in second.result(_sync=True).entries] == ["unchanged", "unchanged"]
    assert [e.view.viz_id for e in second.result(_sync=True).entries] == [e.view.viz_id for e in first.result(_sync=True).entries], \
        "an unchanged view keeps its gateway registration; only the link is new"
    states = await task_states(second.state_details.flow_run_id)
    assert states["reduce Vortex overview"] == "Cached"
    assert states["reduce Second run from above"] == "Cached"
    assert states["thumbnails Vortex overview"] == "Cached"
    assert {name: os.stat(os.path.join(path, "manifest.json")).st_mtime_ns for name, path in reduced.items()} == manifests

    piece = sorted((site / "runs" / "b").glob("*.vti"))[0]
    os.utime(piece, ns=(piece.stat().st_atime_ns, piece.stat().st_mtime_ns + 10**9))
    third = regenerate(catalog, site, gateway)
    assert third.is_completed(), third.message
    outcomes = {e.name: e for e in third.result(_sync=True).entries}
    assert outcomes["Vortex overview"].status == "unchanged"
    assert outcomes["Second run from above"].status == "reduced"
    assert outcomes["Second run from above"].view.reduced_path != reduced["Second run from above"]
    assert outcomes["Second run from above"].view.viz_id != first.result(_sync=True).entries[1].view.viz_id
    states = await task_states(third.state_details.flow_run_id)
    assert states["reduce Vortex overview"] == "Cached" and states["reduce Second run from above"] == "Completed"

    versions = await history("hpcviz-canned-second-run-from-above")
    assert len(versions) >= 3, "one version per run: the UI shows the history under one key"


async def test_a_deleted_reduction_is_made_again_not_taken_from_the_prefect_cache(first_run, site, gateway):
    catalog, _ = first_run
    before = regenerate(catalog, site, gateway).result(_sync=True)
    gone = before.entries[0].view.reduced_path
    shutil.rmtree(gone)
    after = regenerate(catalog, site, gateway)
    assert after.is_completed(), after.message
    assert after.result(_sync=True).entries[0].status == "reduced"
    assert os.path.isfile(os.path.join(gone, "manifest.json"))


async def test_failing_entries_do_not_stop_the_others_and_the_run_says_which_and_why(first_run, site, gateway):
    state = regenerate(write_catalog(site, broken=True), site, gateway)

    assert state.is_failed()
    assert "2 of 4 canned visualizations failed" in state.message
    assert "Missing run:" in state.message and "no such file" in state.message
    assert "Wrong field:" in state.message and "temperature" in state.message
    by_key = await artifacts(state.state_details.flow_run_id)
    report = {row["name"]: row for row in _table(by_key["hpcviz-canned-report"].data)}
    assert report["Vortex overview"]["status"] == "unchanged"
    assert report["Missing run"]["status"] == "failed" and "no such file" in report["Missing run"]["reason"]
    gallery = by_key["hpcviz-canned-gallery"].data
    assert gallery.count("<img ") == 2 and "**failed**" in gallery


def _table(data):
    import json

    return json.loads(data) if isinstance(data, str) else data


def test_a_bad_catalog_fails_the_run_at_once_naming_entry_and_key(prefect_harness, gateway, site, tmp_path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text("visualizations:\n  - {name: a, source: x.pvd, view: {range: [1, 0]}}\n")
    state = regenerate(str(bad), site, gateway)

    assert state.is_failed()
    with pytest.raises(InputError, match=r"entry 1 \('a'\) key 'view.range'.*not increasing"):
        state.result(_sync=True)
