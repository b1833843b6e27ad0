"""A view preset: the camera, field, colormap, colour range and contours a view opens with.

The same preset drives the thumbnail (``render_thumbnail(..., view=preset)``)
and the explorer app (the gateway hands it over as ``HPCVIZ_VIEW``, JSON), so
the picture in the gallery is the view the click opens.

Example:
    >>> preset = ViewPreset.from_dict({"camera": "+x", "field": "pressure",
    ...                                "colormap": "coolwarm", "range": [0, 1],
    ...                                "contours": [0.3, 0.7]})
    >>> preset.camera, preset.contours
    ('+x', (0.3, 0.7))
    >>> ViewPreset.from_json(preset.to_json()) == preset
    True
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError

VIEW_ENV = "HPCVIZ_VIEW"
"""Environment variable through which the gateway hands a preset to the app."""

NAMED_VIEWS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "iso": ((1.0, 1.0, 1.0), (0.0, 0.0, 1.0)),
    "+x": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "-x": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "+y": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "-y": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "+z": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "-z": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
}
"""Named camera views: (direction from the centre to the camera, view-up).

``+x`` puts the camera on the +x side looking at the data's centre.
"""

Vector = tuple[float, float, float]


class CameraPose(BaseModel):
    """An explicit camera: where it is, what it looks at, which way is up.

    Example:
        >>> CameraPose(position=[3, 0, 0], focal_point=[0, 0, 0]).up
        (0.0, 0.0, 1.0)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    position: Vector = Field(description="camera position, e.g. [3, 2, 2]")
    focal_point: Vector = Field(description="the point looked at, e.g. [0.5, 0.5, 0.5]")
    up: Vector = Field((0.0, 0.0, 1.0), description="the view-up direction, e.g. [0, 0, 1]")

    @model_validator(mode="after")
    def _not_degenerate(self) -> CameraPose:
        if self.position == self.focal_point:
            raise ValueError("position and focal_point are the same point")
        if self.up == (0.0, 0.0, 0.0):
            raise ValueError("up is the zero vector")
        return self


class ViewPreset(BaseModel):
    """How a view opens. Every key is optional; what is left out keeps the app's default.

    Attributes:
        camera: a named view (``iso``, ``+x``, ``-x``, ``+y``, ``-y``, ``+z``,
            ``-z``) or a :class:`CameraPose`.
        field: the point field to colour and contour by.
        colormap: a matplotlib colormap name (``viridis``, ``coolwarm``, ...).
        range: ``[min, max]`` of the colour scale (default: the field's range).
        contours: iso-values; the first follows the app's contour slider.
        step: the time step index to open at.

    Example:
        >>> ViewPreset.from_dict({"camera": {"position": [2, 2, 2], "focal_point": [0, 0, 0]}}).camera.up
        (0.0, 0.0, 1.0)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera: str | CameraPose | None = Field(None, description="a named view (iso, +x, -z, ...) or {position, focal_point, up}")
    field: str | None = Field(None, description="a field name, e.g. pressure")
    colormap: str | None = Field(None, description="a colormap name, e.g. coolwarm")
    range: tuple[float, float] | None = Field(None, description="[min, max] of the colour scale")
    contours: tuple[float, ...] | None = Field(None, description="a list of iso-values, e.g. [0.3, 0.7]")
    step: int | None = Field(None, ge=0, description="a time step index (0 or more)")

    @field_validator("camera")
    @classmethod
    def _known_view(cls, camera: Any) -> Any:
        if isinstance(camera, str) and camera not in NAMED_VIEWS:
            raise ValueError(f"{camera!r} is not a named view (use one of {', '.join(NAMED_VIEWS)})")
        return camera

    @field_validator("colormap")
    @classmethod
    def _known_colormap(cls, colormap: str | None) -> str | None:
        if colormap is not None:
            from matplotlib import colormaps

            if colormap not in colormaps:
                raise ValueError(f"{colormap!r} is not a colormap (e.g. viridis, plasma, coolwarm, turbo, gray)")
        return colormap

    @field_validator("range")
    @classmethod
    def _increasing(cls, values: tuple[float, float] | None) -> tuple[float, float] | None:
        if values is not None and not values[0] < values[1]:
            raise ValueError(f"[{values[0]:g}, {values[1]:g}] is not increasing (write [min, max])")
        return values

    @field_validator("contours")
    @classmethod
    def _some_contours(cls, values: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if values is not None and not values:
            raise ValueError("is empty (leave it out, or give at least one value)")
        return values

    # -- building ------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "view", key_prefix: str = "") -> ViewPreset:
        """Validate a preset given as a mapping; InputError naming the key.

        Example:
            >>> ViewPreset.from_dict({"colormap": "nope"}, source="catalog.yaml entry 1", key_prefix="view.")
            Traceback (most recent call last):
            ...
            prefect_hpcviz.viz.errors.InputError: catalog.yaml entry 1 key 'view.colormap': ...
        """
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InputError(f"{source} key {key_prefix.rstrip('.')!r}" if key_prefix else source,
                             f"must be a mapping of camera, field, colormap, range, contours, step; got {data!r}",
                             "write e.g. {camera: iso, field: pressure}")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise preset_error(error, source, key_prefix) from None

    @classmethod
    def from_json(cls, text: str | None, *, source: str = VIEW_ENV) -> ViewPreset:
        """Parse the JSON the gateway passes in ``HPCVIZ_VIEW`` (empty: the default view).

        Example:
            >>> ViewPreset.from_json('{"camera": "-z"}').camera
            '-z'
        """
        if not text or not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except ValueError as error:
            raise InputError(source, f"is not JSON ({error})", 'give a JSON object such as {"camera": "iso"}') from None
        return cls.from_dict(data, source=source)

    # -- using ---------------------------------------------------------------

    @property
    def is_default(self) -> bool:
        """True when the preset changes nothing."""
        return self == ViewPreset()

    def to_dict(self) -> dict[str, Any]:
        """The preset as JSON-able data, keys left out when unset."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): what ``HPCVIZ_VIEW`` carries."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def preset_error(error: ValidationError, source: str, key_prefix: str = "") -> InputError:
    """The first pydantic error as an InputError naming the key, the value and what is allowed."""
    errors = error.errors()
    # A camera given as a mapping failed as a CameraPose: that branch's error is the useful one.
    first = next((e for e in errors if any("CameraPose" in str(part) for part in e["loc"])), errors[0])
    key = ".".join(str(part) for part in first["loc"]
                   if not str(part).startswith(("function-", "tuple[", "str", "CameraPose")))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(CameraPose.model_fields if "." in key else ViewPreset.model_fields)
        return InputError(f"{source} key {key_prefix + key!r}", "unknown key", f"use only {allowed}")
    field = ViewPreset.model_fields.get(key.split(".")[0])
    hint = field.description if field is not None and field.description else "fix the value"
    return InputError(f"{source} key {key_prefix + key!r}", f"{message} (got {first.get('input')!r})", f"give {hint}")


def apply_view(scene: Any, preset: ViewPreset | None, *, render: bool = False) -> None:
    """Show a preset in a ``Scene`` (see ``viz/scene.py``): field, colours, contours, step, camera.

    Raises:
        InputError: the preset names a field or step the data does not have.

    Example:
        >>> scene = build_scene(plotter, reduced)                                 # doctest: +SKIP
        >>> apply_view(scene, ViewPreset(camera="+z", field="velocity", range=(0, 2)))  # doctest: +SKIP
    """
    if preset is None or preset.is_default:
        return
    contours = preset.contours or ()
    scene.update(
        step=preset.step,
        field=preset.field,
        cmap=preset.colormap,
        contour_value=contours[0] if contours else None,
        render=False,
    )
    if preset.range is not None or len(contours) > 1:
        scene.scalar_range = tuple(preset.range) if preset.range is not None else None
        scene.extra_contours = tuple(contours[1:])
        scene.update(render=False)
    place_camera(scene, preset.camera)
    if render:
        scene.plotter.render()


def place_camera(scene: Any, camera: str | CameraPose | None) -> None:
    """Put the scene's camera where a preset says (``None``, ``"iso"``: the app's default view)."""
    if camera is None or camera == "iso":
        scene.reset_camera()
        return
    plotter = scene.plotter
    if isinstance(camera, CameraPose):
        plotter.camera_position = [camera.position, camera.focal_point, camera.up]
        plotter.reset_camera_clipping_range()
        return
    bounds = scene.volume(scene.step).bounds
    direction, up = NAMED_VIEWS[camera]
    centre = [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)]
    plotter.camera_position = [tuple(c + d for c, d in zip(centre, direction)), tuple(centre), up]
    plotter.reset_camera(render=False, bounds=bounds)
    plotter.camera.zoom(0.9)
