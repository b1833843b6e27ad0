"""Explorer: look at a (reduced) dataset in the browser, rendered on the server.

The view is the ``Scene`` of ``viz/scene.py`` (outline, live contour, the
recipe's layers, scalar bar), rendered server-side into a trame-vtk
``VtkRemoteView`` so a browser without a GPU gets images. Controls: field,
colormap, contour value, time step, reset camera.

Run it alone (no authentication; for your own machine)::

    python -m prefect_hpcviz.viz.apps.explorer --data out/reduced/3f2a9c0d41b7e8aa --port 8080

or through ``python -m prefect_hpcviz.viz.serve --app explorer --data PATH``,
which adds the session key, readiness report and idle exit.

DOM hooks for browser tests (stable; keep them when changing the UI):

- ``#hpcviz-title``: the title: ``$HPCVIZ_TITLE`` (the gateway sets the registered title) or the dataset's name.
- ``#hpcviz-view``: the container of the remote view; an ``<img>`` with a
  non-zero ``naturalWidth`` appears inside it once the first frame arrived.
- ``[data-testid=time-slider]``: the time slider (a Vuetify ``v-slider``;
  focus ``.v-slider-thumb`` and press ArrowRight / ArrowLeft to move it).
- ``#hpcviz-time-label``: ``t = <time value> (<step + 1>/<steps>)``.
- ``[data-testid=field-select]``, ``[data-testid=cmap-select]``: field and
  colormap selectors (Vuetify ``v-select``).
- ``[data-testid=contour-slider]``, ``#hpcviz-contour-label``: contour value
  slider and its ``<field> = <value>`` label.
- ``[data-testid=reset-camera]``: the reset-camera button.
"""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import argparse  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from typing import Any  # noqa: E402

import pyvista as pv  # noqa: E402
from trame.app import TrameApp  # noqa: E402
from trame.decorators import change  # noqa: E402
from trame.ui.vuetify3 import VAppLayout  # noqa: E402
from trame.widgets import html  # noqa: E402
from trame.widgets import vtk as vtk_widgets  # noqa: E402
from trame.widgets import vuetify3 as v  # noqa: E402

from prefect_hpcviz.viz.scene import COLORMAPS, build_scene, dataset_title, load_view_data  # noqa: E402
from prefect_hpcviz.viz.view_preset import VIEW_ENV, ViewPreset, apply_view, place_camera  # noqa: E402

__all__ = ["ExplorerApp", "create_app", "main", "prepare"]

_SLIDER_STEPS = 200
WINDOW_SIZE = (1024, 768)


def _testid(widget_cls: type, testid: str, **kwargs: Any) -> Any:
    """A trame widget with a ``data-testid`` attribute."""
    return widget_cls(data_testid=testid, __properties=[("data_testid", "data-testid")], **kwargs)


class ExplorerApp(TrameApp):
    """The explorer app on one trame server.

    Args:
        data: a ``ReducedDataset`` or ``Dataset`` (see ``load_view_data``).
        server: a trame server or its name (default: a new one).
        window_size: initial render size; the browser resizes it.
        plotter: an offscreen plotter made ahead of time by :func:`prepare`
            (default: a new one of ``window_size``).
        view: the view preset to open with (camera, field, colormap, range,
            contours, step); "Reset camera" returns to its camera.

    Example:
        >>> app = ExplorerApp(load_view_data("out/reduced/3f2a9c0d41b7e8aa"))
        >>> app.server.start(port=8080, open_browser=False)
    """

    def __init__(
        self,
        data: Any,
        server: Any = None,
        *,
        window_size: tuple[int, int] = WINDOW_SIZE,
        plotter: pv.Plotter | None = None,
        view: ViewPreset | None = None,
    ) -> None:
        super().__init__(server, client_type="vue3")
        self.data = data

        # -- pipeline ---------------------------------------------------------
        self.plotter = plotter if plotter is not None else _new_plotter(window_size)
        self.scene = build_scene(self.plotter, data)
        self.view = view or ViewPreset()
        apply_view(self.scene, self.view)
        self.plotter.render_window.Render()  # compile shaders now, not on the first client

        # -- state --------------------------------------------------------------
        scene = self.scene
        title = os.environ.get("HPCVIZ_TITLE") or dataset_title(data)  # the gateway passes the registered title
        self.state.trame__title = f"hpcviz · {title}"
        cmaps = list(COLORMAPS) if scene.cmap in COLORMAPS else [*COLORMAPS, scene.cmap]  # a preset's own
        self.state.update(
            {
                "title": title,
                "view": self.view.to_dict(),
                "scalar_range": list(scene.lut.scalar_range),
                "field_items": [
                    {
                        "title": f.name if f.components == 1 else f"{f.name} (magnitude)",
                        "value": f.name,
                    }
                    for f in scene.fields
                ],
                "field": scene.field,
                "cmap_items": cmaps,
                "cmap": scene.cmap,
                "time_values": scene.time_values,
                "time_max": len(scene.time_values) - 1,
                "time_index": scene.step,
                "contour_value": scene.contour_value,
                "show_controls": True,
            }
        )
        self._set_contour_range()
        self._set_time_label()
        self._set_contour_label()

        self.ui = self._build_ui()

    # -- state changes ------------------------------------------------------------

    @change("field")
    def _on_field(self, field: str | None, **_: Any) -> None:
        if field and field != self.scene.field:
            self.scene.update(field=field, render=False)
            self._set_contour_range()
            self.state.scalar_range = list(self.scene.lut.scalar_range)  # the preset's range was the old field's
            self.state.contour_value = self.scene.contour_value
            self._set_contour_label()
            self._push()

    @change("cmap")
    def _on_cmap(self, cmap: str, **_: Any) -> None:
        if cmap and cmap != self.scene.cmap:
            self.scene.update(cmap=cmap, render=False)
            self._push()

    @change("contour_value")
    def _on_contour(self, contour_value: float, **_: Any) -> None:
        if contour_value is not None and float(contour_value) != self.scene.contour_value:
            self.scene.update(contour_value=float(contour_value), render=False)
            self._set_contour_label()
            self._push()

    @change("time_index")
    def _on_time(self, time_index: int, **_: Any) -> None:
        step = int(time_index)
        if step != self.scene.step:
            self.scene.update(step=step, render=False)
            self._set_time_label()
            self._push()

    def reset_camera(self) -> None:
        """Back to the view preset's camera (isometric, whole volume, without one)."""
        place_camera(self.scene, self.view.camera)
        self._push()

    def _push(self) -> None:
        self.ctrl.view_update()  # renders server-side and sends the image to every client

    def _set_contour_range(self) -> None:
        info = self.scene.field_info()
        lo, hi = info.range if info else (0.0, 1.0)
        self.state.contour_min = lo
        self.state.contour_max = hi
        self.state.contour_step = (hi - lo) / _SLIDER_STEPS if hi > lo else 1.0

    def _set_time_label(self) -> None:
        step, times = self.scene.step, self.scene.time_values
        self.state.time_label = f"t = {times[step]:g} ({step + 1}/{len(times)})"

    def _set_contour_label(self) -> None:
        self.state.contour_label = f"{self.scene.field or ''} = {self.scene.contour_value:.4g}"

    # -- UI ---------------------------------------------------------------------

    def _build_ui(self) -> VAppLayout:
        with VAppLayout(self.server, theme="dark", full_height=True) as layout:
            with v.VAppBar(density="compact", color="#0a1628", elevation=1):
                v.VAppBarNavIcon(click="show_controls = !show_controls")
                v.VToolbarTitle("{{ title }}", id="hpcviz-title", classes="text-subtitle-1")
                with html.Div(classes="d-flex align-center", style="width: 45%; min-width: 260px"):
                    _testid(
                        v.VSlider,
                        "time-slider",
                        v_model=("time_index", self.scene.step),
                        min=0,
                        max=("time_max",),
                        step=1,
                        disabled=("time_max < 1",),
                        hide_details=True,
                        density="compact",
                        color="#4c8bf5",
                        classes="mx-2",
                    )
                    html.Span(
                        "{{ time_label }}",
                        id="hpcviz-time-label",
                        classes="text-caption text-no-wrap ml-3 mr-4",
                        style="min-width: 8em",
                    )

            with v.VNavigationDrawer(v_model=("show_controls",), width=280, color="#10203a"):
                with v.VContainer(classes="pa-4 d-flex flex-column ga-4"):
                    _testid(
                        v.VSelect,
                        "field-select",
                        label="Field",
                        v_model=("field",),
                        items=("field_items",),
                        density="compact",
                        hide_details=True,
                    )
                    _testid(
                        v.VSelect,
                        "cmap-select",
                        label="Colormap",
                        v_model=("cmap",),
                        items=("cmap_items",),
                        density="compact",
                        hide_details=True,
                    )
                    html.Div("Contour", classes="text-caption text-medium-emphasis")
                    _testid(
                        v.VSlider,
                        "contour-slider",
                        v_model=("contour_value",),
                        min=("contour_min",),
                        max=("contour_max",),
                        step=("contour_step",),
                        hide_details=True,
                        density="compact",
                        color="#4c8bf5",
                    )
                    html.Div("{{ contour_label }}", id="hpcviz-contour-label", classes="text-caption")
                    with _testid(
                        v.VBtn,
                        "reset-camera",
                        click=self.reset_camera,
                        variant="tonal",
                        prepend_icon="mdi-crop-free",
                    ):
                        html.Span("Reset camera")

            with v.VMain():
                with v.VContainer(
                    fluid=True, id="hpcviz-view", classes="hpcviz-view pa-0 fill-height"
                ):
                    view = vtk_widgets.VtkRemoteView(
                        self.plotter.render_window,
                        ref="hpcviz_view",
                        interactive_ratio=0.5,
                        interactive_quality=60,
                        still_ratio=1,
                        still_quality=92,
                    )
                    self.ctrl.view_update = view.update
        self.server.add_protocol_to_configure(_deliver_every_frame)
        return layout


def _deliver_every_frame(protocol: Any) -> None:
    """Make trame-vtk deliver each frame as soon as it is encoded, and never drop one.

    trame-vtk renders on the server thread and JPEG-encodes in a background
    thread; a push that finds the frame still being encoded ("stale") sends
    the previous frame and fetches the new one later: first after 0.5 s
    (here 50 ms, so that the first image is not late by seconds). Its retry
    (``render_stale_image``) waits ``delta`` after its n-th try but then
    demands ``delta * (n + 1)``, so after a second stale try it gives up
    silently: whenever encoding takes longer than one retry interval (a
    large view, a busy node) the new picture never comes, and the next
    control change shows the frame of the one before ("the picture lags one
    change behind"). :func:`_fetch_stale_frame` replaces that retry.
    """
    from trame_vtk.modules.vtk.protocols import vtkWebPublishImageDelivery

    for linked in protocol.getLinkProtocols():
        if isinstance(linked, vtkWebPublishImageDelivery):
            linked.delta_stale_time_before_render = 0.05
            linked.stale_count_limit = 200  # 10 s of encoding at most; then the next push fetches it
            linked.render_stale_image = types.MethodType(_fetch_stale_frame, linked)


def _fetch_stale_frame(delivery: Any, view_id: str, stale_count: int = 0) -> None:
    """Fetch a frame that was still being encoded; ``push_render`` schedules this again while it is.

    A fetch costs no render (the view did not change since), only a look at
    the encoder's latest output, so it may run every 50 ms.

    Example:
        >>> # delivery.render_stale_image = types.MethodType(_fetch_stale_frame, delivery)
    """
    pending = delivery.stale_handler_count
    if pending.get(view_id, 0) > 0:
        pending[view_id] -= 1
    still_stale = delivery.last_stale_time.get(view_id, 0) != 0  # 0: a push got the frame meanwhile
    if still_stale and stale_count < delivery.stale_count_limit:
        delivery.push_render(view_id, False, stale_count + 1)


def _new_plotter(window_size: tuple[int, int]) -> pv.Plotter:
    return pv.Plotter(off_screen=True, window_size=window_size)


def prepare() -> dict[str, Any]:
    """What a standby server makes before it knows its data: the offscreen plotter.

    Creating the (EGL) render window and its OpenGL context is about half a
    second; a standby server pays it before the click.

    Returns:
        ``{"plotter": plotter}``, keyword arguments for :func:`create_app`.

    Example:
        >>> app = create_app("out/reduced/3f2a9c0d41b7e8aa", **prepare())
    """
    plotter = _new_plotter(WINDOW_SIZE)
    plotter.render_window.Render()  # creates the OpenGL context now
    return {"plotter": plotter}


def create_app(
    data_path: str | os.PathLike,
    server: Any = None,
    *,
    plotter: pv.Plotter | None = None,
    view: ViewPreset | None = None,
) -> ExplorerApp:
    """Open a dataset and build the explorer app on a trame server.

    The data is opened first, so a bad path fails before any port is bound.

    Args:
        data_path: a reduced directory or any dataset ``open_dataset`` reads.
        server: a trame server or its name (default: a new one).
        plotter: an offscreen plotter from :func:`prepare` (default: a new one).
        view: the view preset; default the JSON in ``$HPCVIZ_VIEW`` (the
            gateway sets it from the registration's ``view``), else none.

    Raises:
        InputError: the data cannot be opened, or the preset is not valid for it.

    Example:
        >>> app = create_app("out/reduced/3f2a9c0d41b7e8aa")
        >>> app.server.start(port=0, open_browser=False)
    """
    if view is None:
        view = ViewPreset.from_json(os.environ.get(VIEW_ENV))
    return ExplorerApp(load_view_data(data_path), server=server, plotter=plotter, view=view)


def main(argv: list[str] | None = None) -> int:
    """Run the explorer alone: ``python -m prefect_hpcviz.viz.apps.explorer --data PATH``.

    No authentication and no idle exit: for a workstation. Compute jobs use
    ``prefect_hpcviz.viz.serve``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m prefect_hpcviz.viz.apps.explorer",
        description="Explore a dataset in the browser (no authentication; local use).",
    )
    parser.add_argument("--data", required=True, help="reduced directory or dataset")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    args = parser.parse_args(argv)

    from prefect_hpcviz.viz import serve

    return serve.main(
        [
            "--app",
            "explorer",
            "--data",
            args.data,
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--idle-timeout",
            "0",
            "--no-auth",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
