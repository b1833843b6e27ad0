"""What the 3D view shows for a dataset, shared by the app and the thumbnail.

For a reduced dataset: the reduced volume's outline, a contour of one field
computed live on the reduced volume (the value follows a slider), the layers
the recipe precomputed (slices coloured by the field, stored contours
semi-transparent), a scalar bar, an isometric camera and a dark-blue gradient
background that reads well next to the Prefect UI. For any other dataset
``open_dataset`` reads, the whole dataset: outline plus a contour (volumes) or
its surface (surface meshes).

``Scene`` keeps its VTK pipeline objects and swaps their inputs on
``update(...)``, so a time or field change re-renders without rebuilding the
plotter.

Example:
    >>> import pyvista as pv
    >>> plotter = pv.Plotter(off_screen=True, window_size=(640, 400))
    >>> scene = build_scene(plotter, load_view_data("reduced/3f2a9c0d41b7e8aa"))
    >>> scene.update(step=2, cmap="plasma")
    >>> png = plotter.screenshot(return_img=True)
"""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

from collections import OrderedDict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyvista as pv  # noqa: E402

from prefect_hpcviz.viz.annotations import ViewAnnotations  # noqa: E402
from prefect_hpcviz.viz.errors import InputError  # noqa: E402

COLORMAPS: tuple[str, ...] = ("viridis", "plasma", "inferno", "coolwarm", "turbo", "gray")
"""Colormaps offered by the apps (matplotlib names)."""

BACKGROUND_BOTTOM = "#0a1628"
BACKGROUND_TOP = "#1f3f6e"
OUTLINE_COLOR = "#c8d4e6"
SOLID_COLOR = "#9fb4d3"
"""Colour of a layer that does not carry the selected field."""
STORED_CONTOUR_OPACITY = 0.35

_VOLUME_CACHE_SIZE = 8


@dataclass(frozen=True)
class ViewField:
    """A point field the view can colour and contour by.

    Attributes:
        name: array name in the volume.
        components: 1 for scalars, 3 for vectors (shown by magnitude).
        range: (min, max) over all time steps (magnitude for vectors).
    """

    name: str
    components: int
    range: tuple[float, float]


@dataclass(frozen=True)
class ViewLayer:
    """A precomputed layer: one polydata file per time step."""

    name: str
    kind: str  # "contour" | "slice"
    files: tuple[Path, ...]


def load_view_data(source: str | os.PathLike) -> Any:
    """Open what the view shows: a reduced directory, or any dataset.

    Args:
        source: a directory written by ``reduce_dataset`` (holding
            ``manifest.json``), or anything ``open_dataset`` reads.

    Returns:
        A ``ReducedDataset`` or a ``Dataset``.

    Raises:
        InputError: the path does not exist or cannot be read.

    Example:
        >>> data = load_view_data("out/reduced/3f2a9c0d41b7e8aa")
        >>> data.time_values
        [0.0, 0.5, 1.0]
    """
    from prefect_hpcviz.viz.reduce import ReducedDataset, is_reduced_dir

    text = os.fspath(source)
    if "://" not in text or text.startswith("file://"):
        local = Path(text.removeprefix("file://")).expanduser()
        if local.is_dir() and is_reduced_dir(local):
            return ReducedDataset.load(local)
    from prefect_hpcviz.viz.datasets import open_dataset

    return open_dataset(text)


def dataset_title(data: Any) -> str:
    """A short human name for a dataset: the source's file or directory name.

    Example:
        >>> dataset_title(load_view_data("sim/simulation.pvd"))
        'simulation.pvd'
    """
    if _is_reduced(data):
        source = str(data.manifest.get("source") or data.path)
    else:
        source = str(data.source)
    name = source.rstrip("/").rsplit("/", 1)[-1]
    return name or source


class Scene:
    """The pipeline of one view; ``update`` swaps inputs in place.

    Use ``build_scene`` to make one.

    Attributes:
        plotter: the pyvista plotter it draws into.
        fields: the point fields offered (name, components, range).
        time_values: one time value per step.
        step, field, cmap, contour_value: what is shown now.
        scalar_range: the colour range, or None for the field's whole range.
        extra_contours: iso-values drawn besides ``contour_value`` (a view
            preset's further contour values; the slider moves only the first).
        annotations: the time label and colour legend (``ViewAnnotations``),
            laid out for the plotter's window size.
    """

    def __init__(
        self,
        plotter: pv.Plotter,
        data: Any,
        *,
        step: int = 0,
        field: str | None = None,
        cmap: str = "viridis",
        contour_value: float | None = None,
    ) -> None:
        self.plotter = plotter
        self.data = data
        self.reduced = _is_reduced(data)
        self.time_values: list[float] = [float(t) for t in data.time_values] or [0.0]
        self.fields: list[ViewField] = _view_fields(data)
        self.layers: list[ViewLayer] = _view_layers(data) if self.reduced else []
        self._volumes: OrderedDict[int, pv.DataSet] = OrderedDict()
        self.scalar_range: tuple[float, float] | None = None
        self.extra_contours: tuple[float, ...] = ()

        self.step = self._check_step(step)
        self.field = self._check_field(field) if field else self._default_field()
        self.cmap = _check_cmap(cmap)
        self.contour_value = (
            float(contour_value) if contour_value is not None else self._middle(self.field)
        )

        self.lut = pv.LookupTable(cmap=self.cmap)
        self.lut.SetVectorModeToMagnitude()
        self.lut.nan_color = SOLID_COLOR

        plotter.set_background(BACKGROUND_BOTTOM, top=BACKGROUND_TOP)
        self._outline = self._add_actor("outline", color=OUTLINE_COLOR, line_width=1.5)
        self._main = self._add_actor("main", specular=0.3, smooth_shading=True)
        self._layer_actors = [
            self._add_actor(
                f"layer:{layer.name}",
                opacity=STORED_CONTOUR_OPACITY if layer.kind == "contour" else 1.0,
                ambient=0.25 if layer.kind == "slice" else 0.0,
            )
            for layer in self.layers
        ]
        self.annotations = ViewAnnotations(plotter, self.lut)

        self._refresh(volume=True)
        self.reset_camera()

    # -- public ---------------------------------------------------------------

    @property
    def field_names(self) -> list[str]:
        """Names of the fields the view can show, in dataset order."""
        return [f.name for f in self.fields]

    def field_info(self, name: str | None = None) -> ViewField | None:
        """The ``ViewField`` called ``name`` (default: the current field)."""
        name = name or self.field
        return next((f for f in self.fields if f.name == name), None)

    def update(
        self,
        *,
        step: int | None = None,
        field: str | None = None,
        cmap: str | None = None,
        contour_value: float | None = None,
        render: bool = True,
    ) -> None:
        """Show another time step, field, colormap or contour value.

        Only what changed is recomputed. A new field without a contour value
        contours at the middle of that field's range. The camera is kept.

        Example:
            >>> scene.update(step=1)
            >>> scene.update(field="velocity", cmap="coolwarm")
        """
        new_volume = False
        if step is not None and int(step) != self.step:
            self.step = self._check_step(step)
            new_volume = True
        if field is not None and field != self.field:
            self.field = self._check_field(field)
            if contour_value is None:
                contour_value = self._middle(self.field)
            self.scalar_range, self.extra_contours = None, ()  # they were the old field's
            new_volume = True
        if contour_value is not None:
            self.contour_value = float(contour_value)
        if cmap is not None and cmap != self.cmap:
            self.cmap = _check_cmap(cmap)
            self.lut.apply_cmap(self.cmap)
        self._refresh(volume=new_volume)
        if render:
            self.plotter.render()

    def reset_camera(self, render: bool = False) -> None:
        """Isometric view of the whole volume."""
        bounds = self.volume(self.step).bounds
        self.plotter.view_isometric(render=False, bounds=bounds)
        self.plotter.reset_camera(render=False, bounds=bounds)
        self.plotter.camera.zoom(0.9)  # perspective enlarges the nearest corner
        if render:
            self.plotter.render()

    def volume(self, step: int) -> pv.DataSet:
        """The volume of one step (the reduced volume, or the whole dataset), cached."""
        cached = self._volumes.get(step)
        if cached is not None:
            self._volumes.move_to_end(step)
            return cached
        if self.reduced:
            mesh = pv.read(self.data.volume_files[step])
        else:
            mesh = self.data.read(step)
            if set(mesh.cell_data.keys()) - set(mesh.point_data.keys()):
                mesh = mesh.cell_data_to_point_data()  # contours need point fields
        self._volumes[step] = mesh
        while len(self._volumes) > _VOLUME_CACHE_SIZE:
            self._volumes.popitem(last=False)
        return mesh

    # -- pipeline -------------------------------------------------------------

    def _add_actor(self, name: str, **prop: Any) -> pv.Actor:
        mapper = pv.DataSetMapper(pv.PolyData())
        mapper.SetInterpolateScalarsBeforeMapping(True)
        mapper.SetLookupTable(self.lut)
        mapper.SetUseLookupTableScalarRange(True)
        mapper.ScalarVisibilityOff()
        actor = pv.Actor(mapper=mapper)
        smooth = prop.pop("smooth_shading", False)
        for key, value in prop.items():
            setattr(actor.prop, key, value)
        if smooth:
            actor.prop.interpolation = "gouraud"
        self.plotter.add_actor(actor, reset_camera=False, name=name, render=False)
        return actor

    def _refresh(self, *, volume: bool) -> None:
        vol = self.volume(self.step)
        info = self.field_info()
        lo, hi = self.scalar_range or (info.range if info else (0.0, 1.0))
        self.lut.scalar_range = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
        self.annotations.update(
            title=self.field, time=f"t = {self.time_values[self.step]:g}", legend=info is not None
        )
        if volume:
            self._outline.mapper.SetInputData(vol.outline())
            for layer, actor in zip(self.layers, self._layer_actors):
                mesh = _read_layer(layer, self.step)
                self._colour(actor, mesh, self.field)
        self._main.mapper.SetInputData(self._main_geometry(vol))

    def _main_geometry(self, vol: pv.DataSet) -> pv.DataSet:
        """Contour of the field on a volume; the surface of a surface mesh."""
        if self.field is None or isinstance(vol, pv.PolyData):
            self._colour(self._main, vol, self.field)
            return vol
        scalars = _scalar_array(vol, self.field)
        method = "flying_edges" if isinstance(vol, pv.ImageData) else "contour"
        surface = vol.contour(
            [self.contour_value, *self.extra_contours],
            scalars=scalars,
            compute_normals=isinstance(vol, pv.ImageData),
            method=method,
        )
        self._colour(self._main, surface, scalars)
        return surface

    def _colour(self, actor: pv.Actor, mesh: pv.DataSet, array: str | None) -> None:
        mapper = actor.mapper
        mapper.SetInputData(mesh)
        if array and array in mesh.point_data:
            mapper.SetScalarModeToUsePointFieldData()
            mapper.SelectColorArray(array)
            mapper.ScalarVisibilityOn()
        elif array and array in mesh.cell_data:
            mapper.SetScalarModeToUseCellFieldData()
            mapper.SelectColorArray(array)
            mapper.ScalarVisibilityOn()
        else:
            mapper.ScalarVisibilityOff()
            actor.prop.color = SOLID_COLOR

    # -- checks ---------------------------------------------------------------

    def _check_step(self, step: int) -> int:
        step = int(step)
        n = len(self.time_values)
        if not 0 <= step < n:
            raise InputError(
                f"step {step}", f"out of range: the dataset has {n} time steps", f"use 0..{n - 1}"
            )
        return step

    def _check_field(self, field: str) -> str:
        if field not in self.field_names:
            raise InputError(
                f"field {field!r}",
                "not a point field of this dataset",
                f"use one of: {', '.join(self.field_names) or '(none)'}",
            )
        return field

    def _default_field(self) -> str | None:
        scalars = [f.name for f in self.fields if f.components == 1]
        return (scalars or self.field_names or [None])[0]

    def _middle(self, field: str | None) -> float:
        info = self.field_info(field)
        if info is None:
            return 0.0
        lo, hi = info.range
        return (lo + hi) / 2.0


def build_scene(
    plotter: pv.Plotter,
    data: Any,
    *,
    step: int = 0,
    field: str | None = None,
    cmap: str = "viridis",
    contour_value: float | None = None,
) -> Scene:
    """Draw a dataset into a plotter: outline, live contour, layers, scalar bar.

    Args:
        plotter: a pyvista plotter (off-screen for thumbnails and the apps).
        data: a ``ReducedDataset`` (its volume and layers are shown) or a
            ``Dataset`` (shown whole); ``load_view_data`` makes either from a path.
        step: time step index.
        field: point field to colour and contour by (default: the first scalar).
        cmap: matplotlib colormap name, one of ``COLORMAPS`` or any other.
        contour_value: iso-value (default: middle of the field's range).

    Returns:
        The ``Scene``; call ``scene.update(...)`` to change what is shown.

    Raises:
        InputError: unknown field or colormap, step out of range.

    Example:
        >>> plotter = pv.Plotter(off_screen=True)
        >>> scene = build_scene(plotter, reduced, field="pressure", cmap="plasma")
        >>> scene.update(step=1, contour_value=0.4)
    """
    return Scene(plotter, data, step=step, field=field, cmap=cmap, contour_value=contour_value)


# -- data adapters ------------------------------------------------------------


def _is_reduced(data: Any) -> bool:
    return hasattr(data, "volume_files") and hasattr(data, "layers")


def _view_fields(data: Any) -> list[ViewField]:
    if _is_reduced(data):
        summaries = data.fields
    else:
        summaries = data.summary().fields
    fields = []
    for s in summaries:
        if _is_reduced(data) and getattr(s, "association", "point") != "point":
            continue
        lo, hi = (float(v) for v in s.range)
        fields.append(ViewField(s.name, int(s.components), (lo, hi)))
    return fields


def _view_layers(data: Any) -> list[ViewLayer]:
    return [
        ViewLayer(str(layer.name), str(layer.kind), tuple(Path(f) for f in layer.files))
        for layer in data.layers
    ]


def _read_layer(layer: ViewLayer, step: int) -> pv.DataSet:
    if step >= len(layer.files):
        return pv.PolyData()
    from prefect_hpcviz.viz.reduce.result import read_layer  # .vtp, .vtkhdf or a .pvtp in pieces

    return read_layer(layer.files[step])


def _scalar_array(mesh: pv.DataSet, field: str) -> str:
    """Name of a one-component point array for ``field`` (magnitude for vectors)."""
    if field not in mesh.point_data:
        raise InputError(
            f"field {field!r}",
            "not present in this time step",
            f"use one of: {', '.join(mesh.point_data.keys())}",
        )
    values = mesh.point_data[field]
    if values.ndim == 1 or values.shape[1] == 1:
        return field
    name = f"{field} magnitude"
    if name not in mesh.point_data:
        mesh.point_data[name] = np.linalg.norm(values, axis=1).astype(values.dtype, copy=False)
    return name


def _check_cmap(cmap: str) -> str:
    try:
        pv.LookupTable(cmap=cmap)
    except Exception as exc:  # matplotlib raises ValueError, pyvista its own
        raise InputError(
            f"colormap {cmap!r}", "unknown colormap", f"use one of: {', '.join(COLORMAPS)}"
        ) from exc
    return cmap
