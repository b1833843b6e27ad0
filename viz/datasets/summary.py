"""What a dataset holds, in a form that fits in a table, a JSON file or a log line."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError


@dataclass
class FieldSummary:
    """One data array: where it lives, its shape and its value range.

    ``range`` is over all time steps; for a vector it is the range of the
    magnitude. NaNs are ignored; a field with no finite value has ``(nan, nan)``.

    Example:
        >>> FieldSummary("pressure", "point", 1, "float32", (0.0, 1.0)).is_vector
        False
    """

    name: str
    association: str  # "point" | "cell"
    components: int
    dtype: str
    range: tuple[float, float]

    @property
    def is_vector(self) -> bool:
        """True when the field has more than one component."""
        return self.components > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (a NaN bound becomes None)."""
        out = asdict(self)
        out["range"] = [None if math.isnan(v) else v for v in self.range]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FieldSummary:
        """Inverse of :meth:`to_dict`."""
        lo, hi = (math.nan if v is None else float(v) for v in data["range"])
        return cls(data["name"], data["association"], int(data["components"]), data["dtype"], (lo, hi))


@dataclass
class DatasetSummary:
    """Format, geometry, fields, time steps and size of a dataset.

    Example:
        >>> from prefect_hpcviz.viz.datasets import summarize  # doctest: +SKIP
        >>> s = summarize("sim/simulation.pvd")                 # doctest: +SKIP
        >>> s.field("pressure").range                          # doctest: +SKIP
        (-0.31, 1.42)
    """

    source: str
    format: str
    kind: str  # "ImageData" | "UnstructuredGrid" | "PolyData" | "StructuredGrid"
    fields: list[FieldSummary]
    bounds: tuple[float, float, float, float, float, float]
    dimensions: tuple[int, int, int] | None
    n_points: int
    n_cells: int
    time_values: list[float] = field(default_factory=lambda: [0.0])
    nbytes: int = 0

    @property
    def field_names(self) -> list[str]:
        """Names of all fields, point fields first."""
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldSummary:
        """The summary of field ``name``; InputError naming the fields there are."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise unknown_field_error(name, self.field_names, self.source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "source": self.source,
            "format": self.format,
            "kind": self.kind,
            "fields": [f.to_dict() for f in self.fields],
            "bounds": list(self.bounds),
            "dimensions": list(self.dimensions) if self.dimensions is not None else None,
            "n_points": self.n_points,
            "n_cells": self.n_cells,
            "time_values": list(self.time_values),
            "nbytes": self.nbytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSummary:
        """Inverse of :meth:`to_dict`."""
        dims = data.get("dimensions")
        return cls(
            source=data["source"],
            format=data["format"],
            kind=data["kind"],
            fields=[FieldSummary.from_dict(f) for f in data["fields"]],
            bounds=tuple(float(b) for b in data["bounds"]),  # type: ignore[arg-type]
            dimensions=tuple(int(d) for d in dims) if dims is not None else None,  # type: ignore[arg-type]
            n_points=int(data["n_points"]),
            n_cells=int(data["n_cells"]),
            time_values=[float(t) for t in data["time_values"]],
            nbytes=int(data["nbytes"]),
        )


def unknown_field_error(name: str, available: list[str], source: str) -> InputError:
    """The InputError for a field that is not there, listing those that are."""
    listed = ", ".join(available) if available else "none"
    return InputError(source, f"no field named {name!r} (available fields: {listed})",
                      "use one of the available field names")
