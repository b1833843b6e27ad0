"""A reduced dataset on disk: its manifest, volume files and geometry layers.

Layout of a reduced directory (``out_dir/<key>/``)::

    manifest.json              format "hpcviz-reduced/1" (written last)
    volume.pvd                 the reduced volume as a time series
    volume_000000.vti ...      one file per kept time step
    <layer>.pvd                one series per geometry step (contour, slice)
    <layer>_000000.vtp ...
    <layer>_000000.pvtp        (a big isosurface of a volume: written in pieces,
    <layer>_000000_p0000.vtp    one file per block of chunks, listed by the .pvtp)

A partitioned layer holds a point on a plane shared by two pieces once in
each of them (bit-for-bit equal coordinates) and nowhere else: read whole
with :func:`read_layer`; merge those points with ``vtkCleanPolyData``
(tolerance 0) or :func:`~.chunked_contour.merge_pieces` when a watertight
mesh is needed (the triangles are those of a whole-volume contour).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyvista as pv

from ..datasets.summary import FieldSummary
from ..errors import InputError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "hpcviz-reduced/1"


@dataclass
class Layer:
    """One geometry layer: a contour or a slice, one .vtp file per kept time step.

    Example:
        >>> Layer("contour_pressure", "contour", [Path("contour_pressure_000000.vtp")]).kind
        'contour'
    """

    name: str
    kind: str  # "contour" | "slice"
    files: list[Path]
    series: Path | None = None


@dataclass
class ReducedDataset:
    """The result of :func:`reduce_dataset`, read from its directory.

    Attributes:
        path: the reduced directory (``out_dir/<key>``).
        manifest: manifest.json as a dict.
        cached: True when the result came from an earlier run (or from a
            concurrent run that published first) rather than from this call.
        time_values: the kept time values.
        volume_files: the reduced volume, one file per kept time step (.vti for
            ImageData input; .vtu/.vts/.vtp for other meshes).
        layers: the geometry layers in recipe order.
        fields: fields of the reduced volume, ranges over all kept steps.
        bytes_in, bytes_out, seconds: input bytes of the kept steps, bytes
            written, wall time of the reduction.
        remote_url: where :func:`~.remote_copy.copy_reduced` copied it
            (``az://container/prefix/<key>/``), if it was copied.

    Example:
        >>> data = ReducedDataset.load("reduced/3f2a9c0d1b7e4a55")  # doctest: +SKIP
        >>> [layer.name for layer in data.layers]                    # doctest: +SKIP
        ['contour_pressure', 'slice_z']
    """

    path: Path
    manifest: dict[str, Any]
    cached: bool = False
    time_values: list[float] = field(default_factory=list)
    volume_files: list[Path] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    fields: list[FieldSummary] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    remote_url: str | None = None

    @property
    def key(self) -> str:
        """The cache key (the directory's name)."""
        return str(self.manifest.get("key", self.path.name))

    @property
    def volume_series(self) -> Path:
        """volume.pvd, the time series ParaView opens."""
        return self.path / self.manifest["volume"]["series"]

    def layer(self, name: str) -> Layer:
        """The layer called ``name``; InputError listing the layers there are."""
        for candidate in self.layers:
            if candidate.name == name:
                return candidate
        listed = ", ".join(x.name for x in self.layers) or "none"
        raise InputError(str(self.path), f"no layer named {name!r} (layers: {listed})",
                         "use one of the listed layer names")

    @classmethod
    def load(cls, path: str | Path, *, cached: bool = False) -> ReducedDataset:
        """Read a reduced directory.

        Raises:
            InputError: ``path`` is not a reduced directory (no or a foreign
                manifest.json) or a file it lists is missing.

        Example:
            >>> ReducedDataset.load("reduced/3f2a9c0d1b7e4a55").time_values  # doctest: +SKIP
            [0.0, 2.0, 4.0]
        """
        path = Path(path)
        manifest = _read_manifest(path)
        try:
            volume = manifest["volume"]
            data = cls(
                path=path,
                manifest=manifest,
                cached=cached,
                time_values=[float(t) for t in manifest["time_values"]],
                volume_files=[path / f for f in volume["files"]],
                layers=[
                    Layer(x["name"], x["kind"], [path / f for f in x["files"]], path / x["series"])
                    for x in manifest["layers"]
                ],
                fields=[FieldSummary.from_dict(f) for f in manifest["fields"]],
                bytes_in=int(manifest["bytes_in"]),
                bytes_out=int(manifest["bytes_out"]),
                seconds=float(manifest["seconds"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(str(path), f"manifest.json is incomplete ({error!r})",
                             "reduce the dataset again into an empty directory") from None
        layer_files = [p for x in data.layers for f in x.files for p in ([f] + layer_pieces(f) if f.is_file() else [f])]
        missing = [p for p in data.volume_files + layer_files if not p.is_file()]
        if missing:
            raise InputError(str(path), f"{len(missing)} listed file(s) are missing, e.g. {missing[0].name}",
                             "delete the directory and reduce the dataset again")
        return data


def read_layer(path: str | Path) -> pv.DataSet:
    """One time step of a layer as a mesh: a .vtp/.vtkhdf file, or a .pvtp with its pieces appended.

    Example:
        >>> read_layer(data.layer("contour_f").files[0]).n_cells   # doctest: +SKIP
        8612344
    """
    import pyvista as pv
    from vtkmodules.vtkIOXML import vtkXMLPPolyDataReader

    path = Path(path)
    if path.suffix != ".pvtp":
        return pv.read(path)

    reader = vtkXMLPPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    return pv.wrap(reader.GetOutput())


def layer_pieces(path: str | Path) -> list[Path]:
    """The piece files of a .pvtp layer (``[path]`` for a one-file layer).

    Example:
        >>> [p.name for p in layer_pieces("reduced/3f2a/contour_f_000000.pvtp")]  # doctest: +SKIP
        ['contour_f_000000_p0000.vtp', 'contour_f_000000_p0001.vtp']
    """
    path = Path(path)
    if path.suffix != ".pvtp":
        return [path]
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(path).getroot()
    return [path.parent / piece.attrib["Source"] for piece in root.iter("Piece")]


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_NAME
    if not path.is_dir():
        raise InputError(str(path), "no such directory", "pass the directory reduce_dataset returned")
    if not manifest_path.is_file():
        raise InputError(str(path), f"not a reduced dataset (no {MANIFEST_NAME})",
                         "pass the directory reduce_dataset returned")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(str(manifest_path), f"cannot read it ({error})",
                         "delete the directory and reduce the dataset again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(str(manifest_path), f"not a {MANIFEST_FORMAT} manifest",
                         "pass the directory reduce_dataset returned")
    return manifest


def is_reduced_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a reduced-dataset manifest.

    Cheap (reads manifest.json only); use :meth:`ReducedDataset.load` for the full check.

    Example:
        >>> is_reduced_dir("/tmp")
        False
    """
    try:
        _read_manifest(Path(path))
    except InputError:
        return False
    return True


__all__ = ["Layer", "ReducedDataset", "is_reduced_dir", "layer_pieces", "read_layer"]
