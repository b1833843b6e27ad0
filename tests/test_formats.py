"""Formats beyond single VTK XML files: partitioned, VTKHDF, Exodus, OpenFOAM, HDF5/Zarr, raw volumes.

Every input is written here by a real writer (VTK, NumPy, xarray, h5py, or a
small OpenFOAM case writer) and read back through ``open_dataset``, the way
a user would. Bad inputs must end in an InputError naming the file and the
problem. Azure Blob (Azurite) cases are in test_formats_azure.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
import xarray as xr

from vtkmodules.util.vtkAlgorithm import VTKPythonAlgorithmBase
from vtkmodules.vtkCommonExecutionModel import vtkAlgorithm, vtkStreamingDemandDrivenPipeline
from vtkmodules.vtkImagingCore import vtkExtractVOI

from prefect_hpcviz.viz.datasets import open_dataset
from prefect_hpcviz.viz.datasets.xarray_volume import STREAM_BLOCK_BYTES
from prefect_hpcviz.viz.errors import InputError

# -- writers ------------------------------------------------------------------


def ramp_image(dims=(12, 10, 8), spacing=(0.5, 1.0, 2.0), origin=(1.0, -2.0, 0.5)) -> pv.ImageData:
    """An image whose point field 'p' and cell field 'c' are distinct everywhere."""
    image = pv.ImageData(dimensions=dims, spacing=spacing, origin=origin)
    image.point_data["p"] = np.arange(image.n_points, dtype=np.float32) * 0.25
    image.point_data["v"] = np.stack([image.points[:, 0], image.points[:, 1], image.points[:, 2]], axis=1)
    image.cell_data["c"] = np.arange(image.n_cells, dtype=np.float64)
    return image


class ExtentSource(VTKPythonAlgorithmBase):
    """Serves sub-extents of an image, so VTK's parallel writer splits it into real pieces."""

    def __init__(self, image: pv.ImageData):
        super().__init__(nInputPorts=0, nOutputPorts=1, outputType="vtkImageData")
        self.image = image

    def RequestInformation(self, request, inInfo, outInfo):
        info = outInfo.GetInformationObject(0)
        info.Set(vtkStreamingDemandDrivenPipeline.WHOLE_EXTENT(), self.image.GetExtent(), 6)
        info.Set(vtkAlgorithm.CAN_PRODUCE_SUB_EXTENT(), 1)
        return 1

    def RequestData(self, request, inInfo, outInfo):
        info = outInfo.GetInformationObject(0)
        voi = vtkExtractVOI()
        voi.SetInputData(self.image)
        voi.SetVOI(*info.Get(vtkStreamingDemandDrivenPipeline.UPDATE_EXTENT()))
        voi.Update()
        self.GetOutputData(outInfo, 0).ShallowCopy(voi.GetOutput())
        return 1


def write_parallel(mesh, path: Path, pieces: int) -> Path:
    """Write ``mesh`` as a partitioned file with VTK's parallel XML writers."""
    from vtkmodules.vtkIOParallelXML import vtkXMLPImageDataWriter, vtkXMLPUnstructuredGridWriter

    if path.suffix == ".pvti":  # a source that answers each piece request with its sub-extent
        source = ExtentSource(mesh)
        writer = vtkXMLPImageDataWriter()
        writer.SetInputConnection(source.GetOutputPort())
    else:  # a mesh source answers every piece request with the whole mesh: split it first
        from vtkmodules.vtkFiltersParallel import vtkExtractUnstructuredGridPiece

        splitter = vtkExtractUnstructuredGridPiece()
        splitter.SetInputData(mesh)
        writer = vtkXMLPUnstructuredGridWriter()
        writer.SetInputConnection(splitter.GetOutputPort())
    writer.SetFileName(str(path))
    writer.SetNumberOfPieces(pieces)
    writer.SetStartPiece(0)
    writer.SetEndPiece(pieces - 1)
    assert writer.Write() == 1
    return path


TEMPORAL_SOURCE = '''
from vtkmodules.util.vtkAlgorithm import VTKPythonAlgorithmBase
from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline as S


class TemporalSource(VTKPythonAlgorithmBase):
    """A VTK source that serves one prepared mesh per time value (feeds temporal writers)."""

    def __init__(self, meshes, times):
        super().__init__(nInputPorts=0, nOutputPorts=1, outputType=meshes[0].GetClassName())
        self.meshes, self.times = meshes, [float(t) for t in times]

    def RequestInformation(self, request, inInfo, outInfo):
        info = outInfo.GetInformationObject(0)
        info.Set(S.TIME_STEPS(), self.times, len(self.times))
        info.Set(S.TIME_RANGE(), [self.times[0], self.times[-1]], 2)
        if self.meshes[0].IsA("vtkImageData"):
            info.Set(S.WHOLE_EXTENT(), self.meshes[0].GetExtent(), 6)
        return 1

    def RequestData(self, request, inInfo, outInfo):
        info = outInfo.GetInformationObject(0)
        t = info.Get(S.UPDATE_TIME_STEP()) if info.Has(S.UPDATE_TIME_STEP()) else self.times[0]
        index = min(range(len(self.times)), key=lambda k: abs(self.times[k] - t))
        self.GetOutputData(outInfo, 0).ShallowCopy(self.meshes[index])
        return 1
'''
namespace: dict = {}
exec(compile(TEMPORAL_SOURCE, "TemporalSource", "exec"), namespace)  # shared with the Exodus subprocess
TemporalSource = namespace["TemporalSource"]


def write_vtkhdf(meshes, path: Path, times=None) -> Path:
    """Write one mesh, or one per time value, with VTK's vtkHDFWriter."""
    from vtkmodules.vtkIOHDF import vtkHDFWriter

    writer = vtkHDFWriter()
    if times is None:
        writer.SetInputData(meshes[0])
    else:
        source = TemporalSource(meshes, times)
        writer.SetInputConnection(source.GetOutputPort())
        writer.SetWriteAllTimeSteps(True)
    writer.SetFileName(str(path))
    assert writer.Write() == 1
    return path


def write_exodus(path: Path, times=(0.0, 0.5, 1.0)) -> Path:
    """Write a hexahedral mesh with a nodal and an element variable per time with vtkExodusIIWriter.

    Runs in a fresh interpreter: once ``vtkmodules.all`` is imported (any test
    may do it) VTK substitutes vtkPExodusIIWriter, which crashes without MPI.
    """
    script = TEMPORAL_SOURCE + textwrap.dedent(f'''
        import numpy as np, pyvista as pv
        from vtkmodules.vtkIOExodus import vtkExodusIIWriter
        meshes = []
        for k in range({len(times)}):
            g = pv.ImageData(dimensions=(5, 4, 3)).cast_to_unstructured_grid()
            g.point_data["temperature"] = np.arange(g.n_points, dtype=np.float64) + 100 * k
            g.cell_data["stress"] = np.arange(g.n_cells, dtype=np.float64) * 2 + k
            meshes.append(g)
        source = TemporalSource(meshes, {list(times)!r})
        writer = vtkExodusIIWriter()
        writer.SetInputConnection(source.GetOutputPort())
        writer.WriteAllTimeStepsOn()
        writer.SetFileName({str(path)!r})
        assert writer.Write() == 1
    ''')
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    return path


def _foam(path: Path, cls: str, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"FoamFile\n{{\n    version 2.0;\n    format ascii;\n    class {cls};\n"
                    f"    object {path.name};\n}}\n{body}")


def write_foam_mesh(case: Path, n: tuple[int, int, int], x0: int = 0) -> tuple[int, list[str]]:
    """A block of n hexahedra (unit cells from x = x0) as an OpenFOAM polyMesh; (cells, patch names)."""
    nx, ny, nz = n

    def P(i, j, k):
        return i + (nx + 1) * (j + (ny + 1) * k)

    def C(i, j, k):
        return i + nx * (j + ny * k)

    points = [(x0 + i, j, k) for k in range(nz + 1) for j in range(ny + 1) for i in range(nx + 1)]
    faces, owner, neighbour = [], [], []
    for k in range(nz):  # internal faces in upper-triangular order, normals owner -> neighbour
        for j in range(ny):
            for i in range(nx):
                if i + 1 < nx:
                    faces.append((P(i + 1, j, k), P(i + 1, j + 1, k), P(i + 1, j + 1, k + 1), P(i + 1, j, k + 1)))
                    owner.append(C(i, j, k)), neighbour.append(C(i + 1, j, k))
                if j + 1 < ny:
                    faces.append((P(i, j + 1, k), P(i, j + 1, k + 1), P(i + 1, j + 1, k + 1), P(i + 1, j + 1, k)))
                    owner.append(C(i, j, k)), neighbour.append(C(i, j + 1, k))
                if k + 1 < nz:
                    faces.append((P(i, j, k + 1), P(i + 1, j, k + 1), P(i + 1, j + 1, k + 1), P(i, j + 1, k + 1)))
                    owner.append(C(i, j, k)), neighbour.append(C(i, j, k + 1))
    boundary = []  # (face, cell), outward normals, one "walls" patch
    for k in range(nz):
        for j in range(ny):
            boundary.append(((P(0, j, k), P(0, j, k + 1), P(0, j + 1, k + 1), P(0, j + 1, k)), C(0, j, k)))
            boundary.append(((P(nx, j, k), P(nx, j + 1, k), P(nx, j + 1, k + 1), P(nx, j, k + 1)), C(nx - 1, j, k)))
        for i in range(nx):
            boundary.append(((P(i, 0, k), P(i + 1, 0, k), P(i + 1, 0, k + 1), P(i, 0, k + 1)), C(i, 0, k)))
            boundary.append(((P(i, ny, k), P(i, ny, k + 1), P(i + 1, ny, k + 1), P(i + 1, ny, k)), C(i, ny - 1, k)))
    for j in range(ny):
        for i in range(nx):
            boundary.append(((P(i, j, 0), P(i, j + 1, 0), P(i + 1, j + 1, 0), P(i + 1, j, 0)), C(i, j, 0)))
            boundary.append(((P(i, j, nz), P(i + 1, j, nz), P(i + 1, j + 1, nz), P(i, j + 1, nz)), C(i, j, nz - 1)))
    start = len(faces)
    faces += [f for f, _ in boundary]
    owner += [c for _, c in boundary]
    mesh = case / "constant" / "polyMesh"

    def listing(items):
        return f"{len(items)}\n(\n" + "\n".join(items) + "\n)\n"

    _foam(mesh / "points", "vectorField", listing([f"({x} {y} {z})" for x, y, z in points]))
    _foam(mesh / "faces", "faceList", listing(["4(" + " ".join(map(str, f)) + ")" for f in faces]))
    _foam(mesh / "owner", "labelList", listing([str(o) for o in owner]))
    _foam(mesh / "neighbour", "labelList", listing([str(o) for o in neighbour]))
    _foam(mesh / "boundary", "polyBoundaryMesh",
          f"1\n(\n    walls\n    {{\n        type wall;\n        nFaces {len(boundary)};\n"
          f"        startFace {start};\n    }}\n)\n")
    return nx * ny * nz, ["walls"]


def write_foam_field(case: Path, time: str, name: str, values, patches) -> None:
    body = ("dimensions [0 2 -2 0 0 0 0];\ninternalField nonuniform List<scalar> "
            f"{len(values)}\n(\n" + "\n".join(f"{v:.9g}" for v in values) + "\n);\nboundaryField\n{\n"
            + "".join(f"    {p} {{ type zeroGradient; }}\n" for p in patches) + "}\n")
    _foam(case / time / name, "volScalarField", body)


def write_foam_case(case: Path, n=(4, 3, 2), times=("0", "0.5", "1"), decomposed=False) -> Path:
    """A tiny OpenFOAM case: field p = cell index + 100 * time (+ 1000 * processor)."""
    _foam(case / "system" / "controlDict", "dictionary",
          "application icoFoam;\nstartFrom startTime;\nstartTime 0;\nstopAt endTime;\nendTime 1;\n"
          "deltaT 0.5;\nwriteControl timeStep;\nwriteInterval 1;\nwriteFormat ascii;\n")
    parts = [(case, n, 0)]
    if decomposed:
        half = n[0] // 2
        parts = [(case / "processor0", (half, n[1], n[2]), 0), (case / "processor1", (n[0] - half, n[1], n[2]), half)]
    for number, (folder, size, x0) in enumerate(parts):
        cells, patches = write_foam_mesh(folder, size, x0)
        for t in times:
            write_foam_field(folder, t, "p", [1000 * number + c + 100 * float(t) for c in range(cells)], patches)
            write_foam_field(folder, t, "T", [float(t)] * cells, patches)
    return case


def write_raw(path: Path, steps=2, dims=(6, 5, 4), header_suffix=".json", **extra) -> tuple[Path, np.ndarray]:
    """``path`` + header: fields rho (scalar) and u (3 components), big-endian float64."""
    nx, ny, nz = dims
    rho = np.arange(steps * nz * ny * nx, dtype=">f8").reshape(steps, nz, ny, nx)
    u = (-np.arange(steps * nz * ny * nx * 3)).astype(">f8").reshape(steps, nz, ny, nx, 3)
    with open(path, "wb") as f:
        f.write(b"HEAD")
        for step in range(steps):
            f.write(rho[step].tobytes())
            f.write(u[step].tobytes())
    header = {"dimensions": list(dims), "dtype": "float64", "byte_order": "big", "spacing": [0.5, 0.5, 1],
              "origin": [0, 0, -1], "fields": ["rho", {"name": "u", "components": 3}],
              "times": [0.0, 0.1, 0.2][:steps], "offset": 4, **extra}
    header_path = path.with_name(path.name + header_suffix)
    if header_suffix == ".json":
        header_path.write_text(json.dumps(header))
    else:
        import yaml

        header_path.write_text(yaml.safe_dump(header))
    return path, rho


# -- partitioned VTK XML ---------------------------------------------------------


def test_a_pvti_with_four_pieces_reads_back_the_whole_image(tmp_path):
    image = ramp_image()
    path = write_parallel(image, tmp_path / "whole.pvti", pieces=4)
    assert len(list(tmp_path.glob("whole_*.vti"))) == 4
    assert pv.read(tmp_path / "whole_3.vti").n_points < image.n_points / 2  # real pieces, not copies

    ds = open_dataset(path)
    assert ds.format == "pvti" and len(ds.pieces) == 4
    grid = ds.read(0)
    assert grid.dimensions == image.dimensions
    assert np.allclose(grid.origin, image.origin) and np.allclose(grid.spacing, image.spacing)
    for name in ("p", "v"):
        np.testing.assert_array_equal(grid.point_data[name], image.point_data[name])
    np.testing.assert_array_equal(grid.cell_data["c"], image.cell_data["c"])
    assert ds.read(0, fields=["p"]).array_names == ["p"]
    volume = ds.volume(0, "v")  # one chunk per piece
    assert volume.data.npartitions == 4 and volume.origin == image.origin
    np.testing.assert_array_equal(volume.data.compute().reshape(-1, 3), image.point_data["v"])
    np.testing.assert_array_equal(ds.volume(0, "p").data[2:7, 1:9, 3].compute(),
                                  image.point_data["p"].reshape(8, 10, 12)[2:7, 1:9, 3])
    summary = ds.summary()
    assert summary.kind == "ImageData" and summary.dimensions == (12, 10, 8)
    assert summary.field("p").range == (0.0, float(image.point_data["p"].max()))


def test_a_pvtu_with_three_pieces_holds_every_cell_once(tmp_path):
    mesh = ramp_image().cast_to_unstructured_grid()
    ds = open_dataset(write_parallel(mesh, tmp_path / "mesh.pvtu", pieces=3))
    assert pv.read(tmp_path / "mesh_2.vtu").n_cells < mesh.n_cells / 2  # real pieces, not copies
    grid = ds.read(0)
    assert ds.format == "pvtu" and grid.n_cells == mesh.n_cells
    np.testing.assert_array_equal(np.sort(grid.cell_data["c"]), mesh.cell_data["c"])
    assert ds.summary().kind == "UnstructuredGrid"


def test_a_missing_piece_of_a_partitioned_file_is_named(tmp_path):
    path = write_parallel(ramp_image(), tmp_path / "whole.pvti", pieces=3)
    (tmp_path / "whole_1.vti").unlink()
    with pytest.raises(InputError) as caught:
        open_dataset(path)
    assert caught.value.input.endswith("whole_1.vti")
    assert "missing piece 2 of 3 listed in whole.pvti" in str(caught.value)


def test_a_truncated_piece_of_a_partitioned_file_is_named(tmp_path):
    path = write_parallel(ramp_image(), tmp_path / "whole.pvti", pieces=2)
    piece = tmp_path / "whole_1.vti"
    piece.write_bytes(piece.read_bytes()[: piece.stat().st_size // 2])
    ds = open_dataset(path)
    with pytest.raises(InputError, match="truncated") as caught:
        ds.read(0)
    assert caught.value.input.endswith("whole_1.vti")


def test_a_pvd_series_of_partitioned_files_reads_each_step_with_its_pieces(tmp_path):
    entries = []
    for k in range(2):
        mesh = ramp_image().cast_to_unstructured_grid()
        mesh.cell_data["c"] = mesh.cell_data["c"] + 1000 * k
        write_parallel(mesh, tmp_path / f"step{k}.pvtu", pieces=2)
        entries.append(f'<DataSet timestep="{k * 0.5}" file="step{k}.pvtu"/>')
    (tmp_path / "run.pvd").write_text('<?xml version="1.0"?>\n<VTKFile type="Collection" version="1.0">'
                                       f'<Collection>{"".join(entries)}</Collection></VTKFile>\n')
    ds = open_dataset(tmp_path / "run.pvd")
    assert ds.time_values == [0.0, 0.5] and ds.field_names() == ["p", "v", "c"]
    assert sorted(ds.read(1).cell_data["c"])[:2] == [1000.0, 1001.0]
    assert len(ds.stamps()) == 1 + 2 * 3  # the .pvd, then each .pvtu and its two pieces


# -- VTKHDF ------------------------------------------------------------------------


def test_vtkhdf_image_data_with_time_steps_reads_each_step_and_by_chunks(tmp_path):
    images = []
    for k in range(3):
        image = ramp_image()
        image.point_data["p"] = image.point_data["p"] + 1000 * k
        images.append(image)
    ds = open_dataset(write_vtkhdf(images, tmp_path / "run.vtkhdf", times=[0.0, 0.5, 1.0]))
    assert ds.format == "vtkhdf" and ds.time_values == [0.0, 0.5, 1.0]
    assert sorted(ds.field_names()) == ["c", "p", "v"]
    grid = ds.read(2)
    assert grid.dimensions == (12, 10, 8)
    np.testing.assert_array_equal(grid.point_data["p"], images[2].point_data["p"])
    volume = ds.volume(1, "p", chunk_bytes=1024)
    assert volume.data.numblocks != (1, 1, 1)  # really split into chunks
    np.testing.assert_array_equal(volume.data.compute().reshape(-1), images[1].point_data["p"])
    assert volume.origin == pytest.approx(images[1].origin) and volume.spacing == pytest.approx((0.5, 1, 2))
    assert ds.summary().field("p").range == (0.0, float(images[2].point_data["p"].max()))


def test_a_compressed_vtkhdf_chunk_that_does_not_decode_is_named(tmp_path):
    import h5py
    from vtkmodules.vtkIOHDF import vtkHDFWriter

    writer = vtkHDFWriter()  # VTK chunks (and so compresses) image data only when it has time steps
    source = TemporalSource([ramp_image(), ramp_image()], [0.0, 1.0])
    writer.SetInputConnection(source.GetOutputPort())
    writer.SetWriteAllTimeSteps(True)
    writer.SetCompressionLevel(4)
    writer.SetFileName(str(tmp_path / "run.vtkhdf"))
    assert writer.Write() == 1
    with h5py.File(tmp_path / "run.vtkhdf") as f:
        chunk = f["VTKHDF/PointData/p"].id.get_chunk_info(0)
    data = bytearray((tmp_path / "run.vtkhdf").read_bytes())
    data[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xff" * chunk.size
    (tmp_path / "run.vtkhdf").write_bytes(bytes(data))

    ds = open_dataset(tmp_path / "run.vtkhdf")
    with pytest.raises(InputError, match=r"field 'p': a chunk in \[z 0:8, y 0:10, x 0:12\] does not decode") as caught:
        ds.volume(0, "p").data.compute()
    assert caught.value.input == str(tmp_path / "run.vtkhdf")
    assert ds.volume(1, "p").data.compute().reshape(-1).tolist() == ramp_image().point_data["p"].tolist()


def test_vtkhdf_unstructured_grid_and_an_h5_extension_are_recognized_by_content(tmp_path):
    mesh = ramp_image().cast_to_unstructured_grid()
    ds = open_dataset(write_vtkhdf([mesh], tmp_path / "mesh.h5"))
    assert ds.format == "vtkhdf" and ds.kind == "UnstructuredGrid" and not ds.is_volume
    grid = ds.read(0)
    assert grid.n_cells == mesh.n_cells
    np.testing.assert_array_equal(grid.cell_data["c"], mesh.cell_data["c"])
    assert ds.summary().n_cells == mesh.n_cells
    sphere = pv.Sphere()
    sphere.point_data["h"] = sphere.points[:, 2]
    ds = open_dataset(write_vtkhdf([sphere], tmp_path / "surface.hdf"))
    assert ds.kind == "PolyData" and ds.read(0).n_cells == sphere.n_cells
    assert ds.summary().field("h").range == pytest.approx((-0.5, 0.5))


def test_a_truncated_vtkhdf_file_is_refused_with_the_file_named(tmp_path):
    path = write_vtkhdf([ramp_image()], tmp_path / "run.vtkhdf")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputError, match="truncated or not an HDF5 file") as caught:
        open_dataset(path)
    assert caught.value.input == str(path)


# -- Exodus II ---------------------------------------------------------------------


def test_an_exodus_file_gives_nodal_and_element_fields_per_time_step(tmp_path):
    ds = open_dataset(write_exodus(tmp_path / "impact.exo"))
    assert ds.format == "exodus" and ds.time_values == [0.0, 0.5, 1.0]
    assert ds.field_names() == ["temperature", "stress"]
    grid = ds.read(2)
    assert grid.n_cells == 24 and grid.n_points == 60
    assert sorted(grid.point_data["temperature"]) == [200.0 + i for i in range(60)]
    assert sorted(grid.cell_data["stress"]) == [2.0 + 2 * i for i in range(24)]
    assert ds.read(0, fields=["stress"]).point_data.keys() == []
    summary = ds.summary()
    assert summary.kind == "UnstructuredGrid"
    assert summary.field("temperature").range == (0.0, 259.0)
    assert summary.field("stress").association == "cell"


def test_a_truncated_exodus_file_is_refused_with_the_file_named(tmp_path):
    path = write_exodus(tmp_path / "impact.e")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="truncated or not an Exodus II file") as caught:
        open_dataset(path)
    assert caught.value.input == str(path)


# -- OpenFOAM ----------------------------------------------------------------------


@pytest.mark.parametrize("decomposed", [False, True], ids=["reconstructed", "decomposed"])
def test_an_openfoam_case_gives_the_internal_mesh_and_cell_fields_per_time(tmp_path, decomposed):
    case = write_foam_case(tmp_path / "cavity", decomposed=decomposed)
    ds = open_dataset(case)
    assert ds.format == "openfoam" and ds.decomposed is decomposed
    assert ds.time_values == [0.0, 0.5, 1.0] and ds.field_names() == ["T", "p"]
    grid = ds.read(1)
    assert grid.n_cells == 24
    assert grid.bounds == pytest.approx((0, 4, 0, 3, 0, 2))
    expected = [c + 50.0 for c in range(24)] if not decomposed else sorted(
        [c + 50.0 for c in range(12)] + [1000 + c + 50.0 for c in range(12)])
    assert sorted(grid.cell_data["p"]) == expected
    np.testing.assert_array_equal(grid.cell_data["T"], 0.5)
    assert ds.summary().field("T").range == (0.0, 1.0)


def test_an_openfoam_case_opens_from_its_foam_file_too(tmp_path):
    case = write_foam_case(tmp_path / "cavity")
    (case / "cavity.foam").write_text("")
    assert open_dataset(case / "cavity.foam").source == str(case)


def test_a_field_absent_from_one_openfoam_time_folder_is_named(tmp_path):
    case = write_foam_case(tmp_path / "cavity")
    (case / "0.5" / "p").unlink()
    ds = open_dataset(case)
    assert ds.read(0).cell_data["p"] is not None
    with pytest.raises(InputError, match="field 'p' is absent at time 0.5") as caught:
        ds.read(1)
    assert caught.value.input == str(case / "0.5" / "p")
    ds.read(1, fields=["T"])  # a field present everywhere still reads


def test_truncated_openfoam_mesh_and_field_files_are_named_with_the_line(tmp_path):
    case = write_foam_case(tmp_path / "cavity")
    field = case / "0.5" / "p"
    field.write_text(field.read_text()[:200])
    with pytest.raises(InputError, match=r"truncated or not an OpenFOAM file \(line \d+: Unexpected EOF\)") as caught:
        open_dataset(case).read(1)
    assert caught.value.input == str(field)
    faces = case / "constant" / "polyMesh" / "faces"
    faces.write_text(faces.read_text()[:500])
    with pytest.raises(InputError, match="truncated or not an OpenFOAM file") as caught:
        open_dataset(case).read(0)
    assert caught.value.input == str(faces)


# -- Zarr, NetCDF, HDF5 through xarray -------------------------------------------------


def volume_dataset(steps=2, shape=(8, 10, 12)) -> xr.Dataset:
    nz, ny, nx = shape
    values = np.arange(steps * nz * ny * nx, dtype=np.float32).reshape(steps, nz, ny, nx)
    return xr.Dataset(
        {"p": (("time", "z", "y", "x"), values), "q": (("time", "z", "y", "x"), -values)},
        coords={"time": np.arange(steps) * 0.5, "z": np.arange(nz) * 2.0, "y": np.arange(ny) * 1.0,
                "x": np.arange(nx) * 0.5},
    )


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_compressed_zarr_v2_and_v3_read_whole_and_by_chunks(tmp_path, zarr_format):
    source = volume_dataset()
    path = tmp_path / f"run-v{zarr_format}.zarr"
    source.to_zarr(path, zarr_format=zarr_format, encoding={"p": {"chunks": (1, 4, 5, 6)}})
    assert (path / ("zarr.json" if zarr_format == 3 else ".zgroup")).exists()
    ds = open_dataset(path)
    np.testing.assert_array_equal(ds.read(1).point_data["p"], source["p"][1].values.reshape(-1))
    volume = ds.volume(1, "p")
    assert volume.data.shape == (8, 10, 12)
    np.testing.assert_array_equal(volume.data.compute(), source["p"][1].values)
    assert volume.data[2:6, :, 3].compute().tolist() == source["p"][1].values[2:6, :, 3].tolist()


def test_a_plain_hdf5_file_and_a_netcdf4_file_open_through_xarray(tmp_path):
    import h5py

    values = np.random.default_rng(0).random((6, 5, 4)).astype(np.float64)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("density", data=values, chunks=(2, 5, 4), compression="gzip")
    ds = open_dataset(tmp_path / "plain.h5")
    assert ds.format == "hdf5" and ds.field_names() == ["density"]
    np.testing.assert_array_equal(ds.read(0).point_data["density"], values.reshape(-1))
    np.testing.assert_array_equal(ds.volume(0, "density").data.compute(), values)
    assert ds.summary().field("density").range == (values.min(), values.max())

    volume_dataset().to_netcdf(tmp_path / "run.nc", engine="netcdf4")
    ds = open_dataset(tmp_path / "run.nc")
    assert ds.format == "netcdf" and ds.n_steps == 2
    np.testing.assert_array_equal(ds.volume(1, "q").data.compute(), -volume_dataset()["p"][1].values)
    assert ds.summary().field("q").range == (-float(volume_dataset()["p"].max()), 0.0)

    data = (tmp_path / "run.nc").read_bytes()
    (tmp_path / "cut.nc").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot be read as netcdf") as caught:
        open_dataset(tmp_path / "cut.nc")
    assert caught.value.input == str(tmp_path / "cut.nc")


def corrupt_one_zarr_chunk(store: Path, zarr_format: int) -> Path:
    """Overwrite the chunk at (time 1, z 0, y 0, x 0) of variable p with bytes that do not decompress."""
    chunk = store / "p" / ("c/1/0/0/0" if zarr_format == 3 else "1.0.0.0")
    assert chunk.exists(), sorted(p.relative_to(store) for p in (store / "p").rglob("*"))
    chunk.write_bytes(b"\x00not-a-blosc-or-zstd-frame" * 4)
    return chunk


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zarr_chunk_that_does_not_decode_is_named_by_store_field_and_region(tmp_path, zarr_format):
    store = tmp_path / "run.zarr"
    volume_dataset().to_zarr(store, zarr_format=zarr_format, encoding={"p": {"chunks": (1, 4, 5, 6)}})
    corrupt_one_zarr_chunk(store, zarr_format)
    ds = open_dataset(store)
    ds.read(0)  # the other time step is intact
    damaged = r"field 'p': a chunk in \[z 0:8, y 0:10, x 0:12\] does not decode \(RuntimeError"
    with pytest.raises(InputError, match=damaged) as caught:
        ds.read(1, fields=["p"])
    assert caught.value.input == str(store)
    volume = ds.volume(1, "p", chunk_bytes=4 * 5 * 6 * 4)  # one dask chunk per stored chunk
    volume.data[4:, 5:, 6:].compute()  # chunks away from the damaged one still read
    with pytest.raises(InputError, match=r"a chunk in \[z 0:4, y 0:5, x 0:6\] does not decode") as caught:
        volume.data[:4, :5, :6].compute()
    assert caught.value.input == str(store)


# -- raw volumes -----------------------------------------------------------------------


@pytest.mark.parametrize("header_suffix", [".json", ".yaml"])
def test_a_raw_volume_with_a_sidecar_header_reads_fields_steps_and_geometry(tmp_path, header_suffix):
    path, rho = write_raw(tmp_path / "density.raw", header_suffix=header_suffix)
    for source in (path, path.with_name(path.name + header_suffix)):  # the data file or its header
        ds = open_dataset(source)
        assert ds.format == "raw" and ds.time_values == [0.0, 0.1] and ds.field_names() == ["rho", "u"]
    grid = ds.read(1)
    assert grid.dimensions == (6, 5, 4) and grid.origin == (0, 0, -1) and grid.spacing == (0.5, 0.5, 1)
    np.testing.assert_array_equal(grid.point_data["rho"], rho[1].reshape(-1))
    assert grid.point_data["u"].shape == (120, 3) and grid.point_data["u"][1].tolist() == [-363, -364, -365]
    volume = ds.volume(1, "rho", chunk_bytes=6 * 5 * 8)  # one z plane per chunk
    assert volume.data.numblocks == (4, 1, 1)
    np.testing.assert_array_equal(volume.data[1:3, 2:4, 1:5].compute(), rho[1, 1:3, 2:4, 1:5])
    assert ds.summary().field("u").components == 3


def test_a_raw_volume_region_reads_only_its_own_bytes(tmp_path):
    """Through fsspec (memory://) every read is a ranged cat_file: count the bytes it returns."""
    import fsspec

    path, rho = write_raw(tmp_path / "big.raw", steps=2, dims=(16, 16, 32))
    fs = fsspec.filesystem("memory")
    fs.pipe("/rawtest/big.raw", path.read_bytes())
    fs.pipe("/rawtest/big.raw.json", (tmp_path / "big.raw.json").read_bytes())
    fetched = []
    original = type(fs).cat_file

    def counting_cat_file(self, path, start=None, end=None, **kwargs):
        data = original(self, path, start=start, end=end, **kwargs)
        fetched.append(len(data))
        return data

    type(fs).cat_file = counting_cat_file
    try:
        ds = open_dataset("memory://rawtest/big.raw")
        region = ds.volume(1, "rho", chunk_bytes=16 * 16 * 8 * 4).data[8:12, 3:5, 3:5].compute()
    finally:
        type(fs).cat_file = original
        fs.rm("/rawtest", recursive=True)
    np.testing.assert_array_equal(region, rho[1, 8:12, 3:5, 3:5])
    assert sum(fetched) == 4 * 16 * 16 * 8  # the 4 z planes asked for, of 2 x (32 + 96) planes stored


def test_a_truncated_raw_volume_says_how_many_bytes_the_header_describes(tmp_path):
    path, _ = write_raw(tmp_path / "density.raw")
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(InputError, match=r"truncated: the header density.raw.json describes 7684 bytes") as caught:
        open_dataset(path)
    assert caught.value.input == str(path)


def test_raw_volume_header_problems_name_the_header_and_the_key(tmp_path):
    path, _ = write_raw(tmp_path / "a.raw", dtype="complex-ish")
    with pytest.raises(InputError, match="'dtype' 'complex-ish' is not a NumPy dtype name"):
        open_dataset(path)
    path, _ = write_raw(tmp_path / "b.raw", spacing=[1, 1])
    with pytest.raises(InputError, match=r"'spacing' must be 3 numbers") as caught:
        open_dataset(path)
    assert caught.value.input == str(tmp_path / "b.raw.json")
    (tmp_path / "c.raw").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="raw volume without a header"):
        open_dataset(tmp_path / "c.raw")


# -- chunked volumes on Dask worker processes ----------------------------------------------


def test_chunked_volumes_of_every_volume_format_compute_on_dask_worker_processes(tmp_path, dask_client):
    """The lazy arrays travel to other processes by pickle and read their own chunks there."""
    import h5py

    source = volume_dataset(steps=2, shape=(8, 10, 12))
    expected = source["p"][1].values
    source.to_zarr(tmp_path / "run.zarr", zarr_format=3, encoding={"p": {"chunks": (1, 4, 5, 6)}})
    source.to_netcdf(tmp_path / "run.nc", engine="netcdf4", encoding={"p": {"chunksizes": (1, 4, 5, 6)}})
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f.create_dataset("p", data=source["p"].values, chunks=(1, 4, 5, 6), compression="gzip")
    image = pv.ImageData(dimensions=(12, 10, 8))
    image.point_data["p"] = expected.reshape(-1)
    write_vtkhdf([ramp_image(), image], tmp_path / "run.vtkhdf", times=[0, 1])
    (tmp_path / "run.raw").write_bytes(source["p"].values.tobytes())
    (tmp_path / "run.raw.json").write_text(json.dumps(
        {"dimensions": [12, 10, 8], "dtype": "float32", "fields": ["p"], "times": [0, 1]}))
    for name in ("run.zarr", "run.nc", "run.h5", "run.vtkhdf", "run.raw"):
        volume = open_dataset(tmp_path / name).volume(1, "p", chunk_bytes=4 * 5 * 12 * 4)
        assert volume.data.npartitions > 1, name
        total = dask_client.compute(volume.data.sum(dtype="float64")).result()
        assert total == pytest.approx(float(expected.sum(dtype="float64"))), name
        assert dask_client.compute(volume.data[3:5, 2, 4:9]).result().tolist() == expected[3:5, 2, 4:9].tolist()


# -- series: a field absent in some time steps ----------------------------------------------


def test_a_series_step_without_a_field_the_first_step_has_is_named(tmp_path):
    from prefect_hpcviz.viz.datasets import write_synthetic

    pvd = write_synthetic(tmp_path / "sim", shape=(8, 8, 8), steps=3)
    step_files = sorted((tmp_path / "sim").glob("*.vti"))
    damaged = pv.read(step_files[1])
    del damaged.point_data["pressure"]
    damaged.save(step_files[1])
    ds = open_dataset(pvd)
    ds.read(0)
    with pytest.raises(InputError, match="has no point field 'pressure', which the first time step") as caught:
        ds.summary()
    assert caught.value.input == str(step_files[1])


# -- Azure Blob (Azurite) through adlfs ---------------------------------------------------


class BlobTraffic:
    """Counts the bytes adlfs downloads (whole objects, ranges and whole-file gets) while active.

    It wraps adlfs' three download paths and passes every call through to
    the real implementation, so the data still comes from Azurite.
    """

    def __init__(self, monkeypatch):
        import adlfs
        import adlfs.spec

        self.bytes = 0
        self.requests = 0
        counter = self
        cat_file, fetch_range = adlfs.AzureBlobFileSystem._cat_file, adlfs.spec.AzureBlobFile._fetch_range
        get_file = adlfs.AzureBlobFileSystem.get_file

        async def counted_cat_file(self, path, *args, **kwargs):
            data = await cat_file(self, path, *args, **kwargs)
            counter.add(len(data))
            return data

        def counted_fetch_range(self, start, end=None, **kwargs):  # what open() files read through
            data = fetch_range(self, start, end, **kwargs)
            counter.add(len(data))
            return data

        def counted_get_file(self, rpath, lpath, *args, **kwargs):  # whole-file downloads
            result = get_file(self, rpath, lpath, *args, **kwargs)
            counter.add(os.path.getsize(lpath))
            return result

        monkeypatch.setattr(adlfs.AzureBlobFileSystem, "_cat_file", counted_cat_file)
        monkeypatch.setattr(adlfs.spec.AzureBlobFile, "_fetch_range", counted_fetch_range)
        monkeypatch.setattr(adlfs.AzureBlobFileSystem, "get_file", counted_get_file)

    def add(self, n: int) -> None:
        self.bytes += n
        self.requests += 1


@pytest.fixture
def blob(azurite, tmp_path, monkeypatch):
    """(fs, container, options, cache dir): an empty container and an empty local cache for this test."""
    import fsspec

    cache = tmp_path / "cache"
    monkeypatch.setenv("HPCVIZ_CACHE_DIR", str(cache))
    fs = fsspec.filesystem("az", **azurite.storage_options)
    return fs, azurite.new_container("formats"), azurite.storage_options, cache


def cached_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


@pytest.mark.azurite
def test_zarr_on_azure_streams_only_the_chunks_a_region_needs(blob, tmp_path, monkeypatch):
    fs, container, options, cache = blob
    source = volume_dataset(steps=3, shape=(32, 32, 32))
    source.to_zarr(tmp_path / "run.zarr", zarr_format=3, encoding={"p": {"chunks": (1, 8, 8, 8)}})
    fs.put(str(tmp_path / "run.zarr"), f"{container}/run.zarr", recursive=True)
    url = f"az://{container}/run.zarr"
    stored = sum(fs.du(f"{container}/run.zarr", total=False).values())

    ds = open_dataset(url, storage_options=options)
    volume = ds.volume(2, "p", chunk_bytes=8 * 8 * 8 * 4)  # reads metadata only
    traffic = BlobTraffic(monkeypatch)
    region = volume.data[8:16, 0:8, 24:32].compute(scheduler="sync")  # in this process, where traffic counts

    np.testing.assert_array_equal(region, source["p"][2].values[8:16, 0:8, 24:32])
    assert traffic.requests == 1  # exactly the one stored chunk asked for
    assert 0 < traffic.bytes <= 8 * 8 * 8 * 4 + 64
    assert traffic.bytes < stored / 50
    assert cached_files(cache) == []  # nothing went through the whole-file cache


@pytest.mark.azurite
def test_netcdf4_on_azure_streams_one_field_of_one_step_without_downloading_the_file(blob, tmp_path, monkeypatch):
    fs, container, options, cache = blob
    source = volume_dataset(steps=8, shape=(64, 64, 64))
    local = tmp_path / "run.nc"
    source.to_netcdf(local, engine="netcdf4", encoding={v: {"chunksizes": (1, 64, 64, 64)} for v in ("p", "q")})
    fs.put_file(str(local), f"{container}/run.nc")

    ds = open_dataset(f"az://{container}/run.nc", storage_options=options)
    traffic = BlobTraffic(monkeypatch)
    grid = ds.read(7, fields=["q"])

    np.testing.assert_array_equal(grid.point_data["q"], source["q"][7].values.reshape(-1))
    field_bytes = 64 ** 3 * 4
    # 1 MB asked of 16 MB stored: fetched are its blocks and the header's, in STREAM_BLOCK_BYTES blocks
    assert field_bytes <= traffic.bytes <= field_bytes + 3 * STREAM_BLOCK_BYTES < local.stat().st_size / 2
    assert cached_files(cache) == []


@pytest.mark.azurite
def test_whole_file_formats_on_azure_are_cached_locally_within_the_bound(blob, tmp_path, monkeypatch):
    fs, container, options, cache = blob
    files = []
    for k in range(3):
        mesh = ramp_image(dims=(20, 20, 20)).cast_to_unstructured_grid()
        mesh.cell_data["c"] = mesh.cell_data["c"] + k
        mesh.save(tmp_path / f"step{k}.vtu")
        fs.put_file(str(tmp_path / f"step{k}.vtu"), f"{container}/step{k}.vtu")
        files.append(f"az://{container}/step{k}.vtu")
    size = (tmp_path / "step0.vtu").stat().st_size
    monkeypatch.setenv("HPCVIZ_CACHE_MAX_BYTES", str(int(2.5 * size)))  # room for two files

    traffic = BlobTraffic(monkeypatch)
    first = open_dataset(files[0], storage_options=options)
    assert first.read(0).cell_data["c"][0] == 0
    assert traffic.bytes == size and len(cached_files(cache)) == 1
    first.read(0)
    assert traffic.bytes == size  # the second read is a cache hit
    for k in (1, 2):
        assert open_dataset(files[k], storage_options=options).read(0).cell_data["c"][0] == k
        held = cached_files(cache)
        assert sum(p.stat().st_size for p in held) <= 2.5 * size
    assert sorted(p.name for p in held) == ["step1.vtu", "step2.vtu"]  # the oldest was evicted
    assert first.read(0).cell_data["c"][0] == 0  # and is fetched again when needed
    assert sorted(p.name for p in cached_files(cache)) == ["step0.vtu", "step2.vtu"]


@pytest.mark.azurite
def test_every_format_opens_from_azure_like_from_disk(blob, tmp_path):
    fs, container, options, _cache = blob
    local = tmp_path / "data"
    local.mkdir()
    write_parallel(ramp_image(), local / "whole.pvti", pieces=2)
    write_vtkhdf([ramp_image()], local / "image.vtkhdf")
    write_exodus(local / "impact.exo")
    write_foam_case(local / "cavity", decomposed=True)
    write_raw(local / "density.raw")
    volume_dataset().to_netcdf(local / "plain.nc", engine="netcdf4")
    fs.put(str(local), f"{container}/data", recursive=True)

    for name in ("whole.pvti", "image.vtkhdf", "impact.exo", "cavity", "density.raw", "plain.nc"):
        here = open_dataset(local / name)
        there = open_dataset(f"az://{container}/data/{name}", storage_options=options)
        assert there.format == here.format and there.time_values == here.time_values, name
        assert there.field_names() == here.field_names(), name
        step = here.n_steps - 1
        a, b = here.read(step), there.read(step)
        assert (a.n_points, a.n_cells) == (b.n_points, b.n_cells), name
        for field in here.field_names():
            values = a.point_data[field] if field in a.point_data else a.cell_data[field]
            remote = b.point_data[field] if field in b.point_data else b.cell_data[field]
            np.testing.assert_array_equal(np.sort(values, axis=0), np.sort(remote, axis=0), err_msg=name)
        assert there.summary().to_dict() | {"source": ""} == here.summary().to_dict() | {"source": ""}, name
    raw = open_dataset(f"az://{container}/data/density.raw", storage_options=options)
    np.testing.assert_array_equal(raw.volume(1, "rho").data.compute(), open_dataset(local / "density.raw").volume(
        1, "rho").data.compute())
    hdf = open_dataset(f"az://{container}/data/image.vtkhdf", storage_options=options)
    np.testing.assert_array_equal(hdf.volume(0, "p").data.compute().reshape(-1), ramp_image().point_data["p"])


# -- the bounded whole-file cache ----------------------------------------------------------


def test_the_whole_file_cache_evicts_least_recently_used_entries_beyond_its_bound(tmp_path):
    from prefect_hpcviz.viz.datasets.cache import WholeFileCache, parse_size

    cache = WholeFileCache(tmp_path / "cache", max_bytes=250)

    def fetch(name: str) -> str:
        return cache.fetch_file((name, "100", "v1"), name, 100, lambda tmp: Path(tmp).write_bytes(b"x" * 100))

    a, b = fetch("a"), fetch("b")
    assert fetch("a") == a  # a hit, and a is now the most recently used
    c = fetch("c")
    assert not Path(b).exists() and Path(a).exists() and Path(c).exists()
    assert cache.size() == 200
    huge = WholeFileCache(tmp_path / "cache", max_bytes=50)
    path = huge.fetch_file(("d", "100", "v1"), "d", 100, lambda tmp: Path(tmp).write_bytes(b"y" * 100))
    assert Path(path).read_bytes() == b"y" * 100  # larger than the bound: kept, everything else evicted
    assert huge.size() == 100
    assert parse_size("1.5G") == 1610612736 and parse_size("512MiB") == 512 << 20
    with pytest.raises(InputError, match="is not a size"):
        parse_size("lots")


def test_browsing_a_folder_lists_partitioned_files_cases_and_raw_volumes_once(tmp_path):
    from prefect_hpcviz.viz.browse import list_datasets

    write_parallel(ramp_image(), tmp_path / "whole.pvti", pieces=3)
    write_foam_case(tmp_path / "cavity", decomposed=True)
    write_raw(tmp_path / "density.raw")
    listed = {item.name: item for item in list_datasets(tmp_path)}
    assert sorted(listed) == ["cavity", "density.raw", "whole.pvti"]
    assert listed["cavity"].format == "openfoam" and listed["cavity"].time_steps == 3
    assert listed["whole.pvti"].nbytes == sum(p.stat().st_size for p in tmp_path.glob("whole*"))
    assert all(item.readable for item in listed.values())
