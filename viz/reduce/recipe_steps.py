"""The steps of a recipe: one small pydantic model per step kind, and ``time``.

In YAML each step is a one-key mapping, ``- coarsen: {factor: 4, how: mean}``;
in Python it is a ``CoarsenStep`` whose ``coarsen`` attribute holds a
``CoarsenSpec``. ``step.kind`` and ``step.spec`` give both without knowing
the kind. Each field's ``description`` is what error messages print as the
allowed values, and each spec's ``example`` is the fix they suggest.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


class StepSpec(BaseModel):
    """Options of one step: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A one-line YAML example, quoted in error messages as the fix.
    example: ClassVar[str] = ""


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CropSpec(StepSpec):
    """Keep the part of the volume inside an axis-aligned box (world coordinates)."""

    example: ClassVar[str] = "- crop: {bounds: [0, 1, 0, 1, 0, 0.5]}"
    bounds: tuple[float, float, float, float, float, float] = Field(
        description="6 numbers [xmin, xmax, ymin, ymax, zmin, zmax] with each min <= max"
    )

    @field_validator("bounds")
    @classmethod
    def _min_before_max(cls, bounds: tuple[float, ...]) -> tuple[float, ...]:
        for lo, hi in zip(bounds[0::2], bounds[1::2]):
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ValueError("min > max")
        return bounds


class CoarsenSpec(StepSpec):
    """Reduce the resolution by whole blocks of points (ImageData, StructuredGrid)."""

    example: ClassVar[str] = "- coarsen: {factor: 4, how: mean}"
    factor: tuple[int, int, int] = Field(
        description="a whole number >= 1, or a list of 3 of them (x, y, z), e.g. 4 or [4, 4, 2]"
    )
    how: Literal["mean", "max"] = Field("mean", description="one of mean, max")

    @field_validator("factor", mode="before")
    @classmethod
    def _three_factors(cls, value: Any) -> Any:
        if _is_whole(value):
            value = [value] * 3
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(_is_whole(v) and v >= 1 for v in value)
        ):
            raise ValueError("bad factor")
        return tuple(value)


class ContourSpec(StepSpec):
    """Add a layer of isosurfaces of one scalar field."""

    example: ClassVar[str] = "- contour: {field: pressure, values: [0.2, 0.8]}"
    field: str = Field(description="the name of a scalar field of the dataset, e.g. pressure")
    values: list[float] = Field(
        min_length=1, description="a non-empty list of numbers, e.g. [0.2, 0.8]"
    )
    name: str | None = Field(
        None,
        pattern=_NAME_PATTERN,
        description="a layer name of letters, digits, '_', '.', '-', e.g. pressure-iso",
    )

    @field_validator("values", mode="before")
    @classmethod
    def _one_value_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("values")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        if not all(math.isfinite(v) for v in values):
            raise ValueError("not finite")
        return values


class SliceSpec(StepSpec):
    """Add a layer: the volume cut by a plane."""

    example: ClassVar[str] = "- slice: {normal: [0, 0, 1], origin: [0, 0, 0.25]}"
    normal: tuple[float, float, float] = Field(
        (0.0, 0.0, 1.0), description="3 numbers, not all zero, or one of x, y, z; e.g. [0, 0, 1]"
    )
    origin: tuple[float, float, float] | None = Field(
        None,
        description="3 numbers, e.g. [0, 0, 0.25]; leave it out for the centre of the volume",
    )
    name: str | None = Field(
        None,
        pattern=_NAME_PATTERN,
        description="a layer name of letters, digits, '_', '.', '-', e.g. midplane",
    )

    @field_validator("normal", mode="before")
    @classmethod
    def _axis_names(cls, value: Any) -> Any:
        return _AXES.get(value.lower(), value) if isinstance(value, str) else value

    @field_validator("normal")
    @classmethod
    def _not_zero(cls, normal: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(v) for v in normal) or not any(normal):
            raise ValueError("zero normal")
        return normal


class DowncastSpec(StepSpec):
    """Store float64 fields in a smaller float type from here on (halves the bytes)."""

    example: ClassVar[str] = "- downcast: {to: float32}"
    to: Literal["float32"] = Field("float32", description="float32 (the only one VTK viewers all read)")


class DecimateSpec(StepSpec):
    """Simplify the layer made by the step before to about ``triangles`` triangles."""

    example: ClassVar[str] = "- decimate: {triangles: 200000}"
    triangles: int = Field(ge=4, strict=True, description="a whole number >= 4, e.g. 200000")


class ClipSpec(StepSpec):
    """Cut away the part of the layer made by the step before that lies on one side of a plane."""

    example: ClassVar[str] = "- clip: {normal: [1, 0, 0], origin: [0, 0, 0]}"
    normal: tuple[float, float, float] = Field(
        (1.0, 0.0, 0.0),
        description="3 numbers, not all zero, or one of x, y, z; the side it points to is removed",
    )
    origin: tuple[float, float, float] | None = Field(
        None, description="3 numbers, e.g. [0, 0, 0]; leave it out for the centre of the volume"
    )
    invert: bool = Field(False, description="true or false; true keeps the side the normal points to")

    _axis_names = field_validator("normal", mode="before")(SliceSpec._axis_names.__func__)
    _not_zero = field_validator("normal")(SliceSpec._not_zero.__func__)


class StatisticsSpec(StepSpec):
    """Record count, min, max, mean, std and a histogram of fields, per time step."""

    example: ClassVar[str] = "- statistics: {bins: 64}"
    bins: int = Field(32, ge=1, le=100000, strict=True, description="a whole number from 1 to 100000, e.g. 64")
    fields: list[str] | None = Field(
        None, min_length=1, description="a list of field names, e.g. [pressure]; leave it out for all"
    )
    range: tuple[float, float] | None = Field(
        None,
        description="2 finite numbers [low, high] with low < high; leave it out for each field's min and max",
    )

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (math.isfinite(value[0]) and math.isfinite(value[1]) and value[0] < value[1]):
            raise ValueError("bad range")
        return value


#: Step kind -> options model, in the order error messages list them.
STEP_SPECS: dict[str, type[StepSpec]] = {
    "crop": CropSpec,
    "coarsen": CoarsenSpec,
    "downcast": DowncastSpec,
    "contour": ContourSpec,
    "slice": SliceSpec,
    "decimate": DecimateSpec,
    "clip": ClipSpec,
    "statistics": StatisticsSpec,
}
#: Steps that change the volume the later steps see.
VOLUME_STEPS = ("crop", "coarsen", "downcast")
#: Steps that add an output layer computed from the volume as it stands.
GEOMETRY_STEPS = ("contour", "slice")
#: Steps that change the layer made by the geometry step before them.
LAYER_STEPS = ("decimate", "clip")


class StepModel(BaseModel):
    """One step of a recipe: a model with a single field named after its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def kind(self) -> str:
        """The step kind: one of :data:`STEP_SPECS` (crop, coarsen, contour, ...)."""
        return next(iter(type(self).model_fields))

    @property
    def spec(self) -> StepSpec:
        """The step's options (a CropSpec, CoarsenSpec, ContourSpec, ...)."""
        return getattr(self, self.kind)

    @property
    def is_geometry(self) -> bool:
        """True for steps that add a layer (contour, slice)."""
        return self.kind in GEOMETRY_STEPS


class CropStep(StepModel):
    crop: CropSpec


class DowncastStep(StepModel):
    downcast: DowncastSpec


class DecimateStep(StepModel):
    decimate: DecimateSpec


class ClipStep(StepModel):
    clip: ClipSpec


class StatisticsStep(StepModel):
    statistics: StatisticsSpec


class CoarsenStep(StepModel):
    coarsen: CoarsenSpec


class ContourStep(StepModel):
    contour: ContourSpec


class SliceStep(StepModel):
    slice: SliceSpec


def _step_kind(value: Any) -> str | None:
    if isinstance(value, StepModel):
        return value.kind
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value))
    return None


Step = Annotated[
    Union[
        Annotated[CropStep, Tag("crop")],
        Annotated[CoarsenStep, Tag("coarsen")],
        Annotated[ContourStep, Tag("contour")],
        Annotated[SliceStep, Tag("slice")],
        Annotated[DowncastStep, Tag("downcast")],
        Annotated[DecimateStep, Tag("decimate")],
        Annotated[ClipStep, Tag("clip")],
        Annotated[StatisticsStep, Tag("statistics")],
    ],
    Discriminator(_step_kind),
]


class TimeSpec(BaseModel):
    """Which time steps to keep."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    example: ClassVar[str] = "time: {stride: 2}"
    stride: int = Field(1, ge=1, strict=True, description="a whole number >= 1, e.g. 2")


class OutputSpec(BaseModel):
    """How the reduced files are written."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    example: ClassVar[str] = "output: {format: vtkhdf, compression: zlib, level: 4}"
    format: Literal["vtk-xml", "vtkhdf"] = Field("vtk-xml", description="one of vtk-xml, vtkhdf")
    compression: Literal["none", "zlib", "lz4", "lzma"] | None = Field(
        None,
        description="one of none, zlib, lz4, lzma (vtkhdf: none or zlib); leave it out for "
        "compressed meshes and raw volumes",
    )
    level: int = Field(1, ge=1, le=9, strict=True, description="a whole number from 1 to 9")
