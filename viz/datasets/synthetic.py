"""A synthetic time-dependent 3-D simulation, written as a .pvd series of .vti files.

The fields are built from separable 1-D and 2-D pieces with numpy (float32
throughout) and written with raw appended binary (``numpy.tofile``), so the
default 192^3 x 6 steps (about 680 MB) takes a few seconds, most of it disk.

- ``pressure`` (scalar): three Gaussian blobs orbiting the z axis plus a
  travelling wave, so isosurfaces move and change shape from step to step.
- ``velocity`` (3-vector): a swirling vortex whose axis orbits the centre,
  with an axial component that pulses along z.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import InputError

GENERATOR = "prefect-hpcviz synthetic/1"
PVD_NAME = "simulation.pvd"
STAMP_NAME = ".simulation.stamp.json"
DT = 0.5  # time between steps
OMEGA = 2 * np.pi / 3.0  # one revolution every 3 time units (6 default steps)
_STEP_FILE = re.compile(r"^simulation_(\d{6})\.vti$")


def write_synthetic(
    out_dir: str | os.PathLike,
    *,
    shape: tuple[int, int, int] = (192, 192, 192),
    steps: int = 6,
    seed: int = 0,
) -> Path:
    """Write a synthetic simulation: ``OUT_DIR/simulation.pvd`` + one .vti per step.

    Idempotent: when ``out_dir`` already holds the output of the same
    parameters (a small stamp file says so), it returns at once. Each file is
    written under a temporary name and renamed, so an interrupted run leaves
    no half-written file behind.

    Args:
        out_dir: folder to write into (created if missing).
        shape: points along x, y, z (each >= 2). The domain is [-1, 1]^3.
        steps: number of time steps (t = 0, 0.5, 1.0, ...).
        seed: chooses the blobs' sizes, amplitudes and orbits.

    Returns:
        The path of ``simulation.pvd``.

    Example:
        >>> pvd = write_synthetic("demo-data", shape=(64, 64, 64), steps=4)  # doctest: +SKIP
        >>> open_dataset(pvd).time_values                                     # doctest: +SKIP
        [0.0, 0.5, 1.0, 1.5]
    """
    shape = _check(shape, steps, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pvd = out / PVD_NAME
    stamp_path = out / STAMP_NAME
    params = {"generator": GENERATOR, "shape": list(shape), "steps": steps, "seed": seed}
    if _is_current(out, stamp_path, params):
        return pvd

    stamp_path.unlink(missing_ok=True)  # from here on the folder is not "done" until the new stamp lands
    names = [f"simulation_{k:06d}.vti" for k in range(steps)]
    for stale in out.iterdir():
        if _STEP_FILE.match(stale.name) and stale.name not in names:
            stale.unlink()
    times = [k * DT for k in range(steps)]
    model = _Model(shape, seed)
    workers = max(1, min(steps, os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(workers, thread_name_prefix="synthetic") as pool:
        list(pool.map(lambda k: _atomic_write(out / names[k], lambda f: model.write_step(f, times[k])),
                      range(steps)))
    _atomic_write(pvd, lambda f: f.write(_pvd_text(names, times).encode()))
    params["files"] = {name: (out / name).stat().st_size for name in [*names, PVD_NAME]}
    _atomic_write(stamp_path, lambda f: f.write(json.dumps(params, indent=1).encode()))
    return pvd


def _check(shape, steps, seed) -> tuple[int, int, int]:
    try:
        dims = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) != 3 or min(dims) < 2:
        raise InputError("shape", f"{shape!r} is not three sizes of at least 2", "use e.g. shape=(64, 64, 64)")
    if int(steps) != steps or steps < 1:
        raise InputError("steps", f"{steps!r} is not a positive integer", "use e.g. steps=6")
    if int(seed) != seed:
        raise InputError("seed", f"{seed!r} is not an integer", "use e.g. seed=0")
    return dims  # type: ignore[return-value]


def _is_current(out: Path, stamp_path: Path, params: dict) -> bool:
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return False
    if any(stamp.get(k) != v for k, v in params.items()):
        return False
    files = stamp.get("files") or {}
    try:
        return bool(files) and all((out / name).stat().st_size == size for name, size in files.items())
    except OSError:
        return False


def _atomic_write(path: Path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Model:
    """The analytic fields, evaluated on the grid at any time t."""

    def __init__(self, shape: tuple[int, int, int], seed: int) -> None:
        self.shape = shape
        nx, ny, nz = shape
        self.x = np.linspace(-1, 1, nx, dtype=np.float32)
        self.y = np.linspace(-1, 1, ny, dtype=np.float32)
        self.z = np.linspace(-1, 1, nz, dtype=np.float32)
        self.spacing = tuple(2.0 / (n - 1) for n in shape)
        rng = np.random.default_rng(seed)
        n_blobs = 3
        self.amplitude = rng.uniform(0.8, 1.2, n_blobs)
        self.sigma = rng.uniform(0.18, 0.3, n_blobs)
        self.radius = rng.uniform(0.3, 0.6, n_blobs)
        self.phase = rng.uniform(0, 2 * np.pi, n_blobs)
        self.height = rng.uniform(-0.4, 0.4, n_blobs)
        self.spin = rng.choice([-1.0, 1.0], n_blobs)
        self.vortex_phase = rng.uniform(0, 2 * np.pi)

    def pressure(self, t: float) -> np.ndarray:
        """(nz, ny, nx) float32: orbiting Gaussian blobs + a travelling wave along x."""
        x, y, z = self.x, self.y, self.z
        p = np.empty((len(z), len(y), len(x)), dtype=np.float32)
        tmp = np.empty_like(p)
        # travelling wave, separable: wave(x - c t) * envelope(z)
        wave = (0.2 * np.sin(2 * np.pi * (0.75 * x - 0.25 * t))).astype(np.float32)
        envelope = np.cos(0.5 * np.pi * z).astype(np.float32)
        np.multiply(envelope[:, None, None], wave[None, None, :], out=p)
        for i in range(len(self.amplitude)):
            angle = self.spin[i] * OMEGA * t + self.phase[i]
            cx = self.radius[i] * np.cos(angle)
            cy = self.radius[i] * np.sin(angle)
            cz = self.height[i] + 0.3 * np.sin(OMEGA * t + self.phase[i])
            s2 = 2 * self.sigma[i] ** 2
            gx = np.exp(-((x - cx) ** 2) / s2).astype(np.float32)
            gy = np.exp(-((y - cy) ** 2) / s2).astype(np.float32)
            gz = np.exp(-((z - cz) ** 2) / s2).astype(np.float32)
            zy = (self.amplitude[i] * np.multiply.outer(gz, gy)).astype(np.float32)
            np.multiply(zy[:, :, None], gx[None, None, :], out=tmp)
            p += tmp
        return p

    def velocity(self, t: float) -> np.ndarray:
        """(nz, ny, nx, 3) float32: a swirling vortex whose axis orbits the centre."""
        x, y, z = self.x, self.y, self.z
        angle = OMEGA * t + self.vortex_phase
        cx, cy = 0.35 * np.cos(angle), 0.35 * np.sin(angle)
        dx = (x - cx).astype(np.float32)[None, :]
        dy = (y - cy).astype(np.float32)[:, None]
        core = np.exp(-(dx**2 + dy**2) / (2 * 0.35**2)).astype(np.float32)  # (ny, nx)
        strength = (1.0 + 0.4 * np.cos(np.pi * z - OMEGA * t)).astype(np.float32)  # (nz,)
        pulse = (0.5 * np.sin(np.pi * z + OMEGA * t)).astype(np.float32)  # (nz,)
        v = np.empty((len(z), len(y), len(x), 3), dtype=np.float32)
        np.multiply(strength[:, None, None], (-dy * core)[None], out=v[..., 0])
        np.multiply(strength[:, None, None], (dx * core)[None], out=v[..., 1])
        np.multiply(pulse[:, None, None], core[None], out=v[..., 2])
        return v

    def write_step(self, f: BinaryIO, t: float) -> None:
        """Write one .vti (raw appended binary, UInt64 headers, little endian)."""
        pressure = self.pressure(t)
        velocity = self.velocity(t)
        nx, ny, nz = self.shape
        extent = f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
        spacing = " ".join(repr(float(s)) for s in self.spacing)
        header = (
            '<?xml version="1.0"?>\n'
            '<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n'
            f'  <ImageData WholeExtent="{extent}" Origin="-1 -1 -1" Spacing="{spacing}" '
            'Direction="1 0 0 0 1 0 0 0 1">\n'
            '    <FieldData>\n'
            '      <DataArray type="Float64" Name="TimeValue" NumberOfTuples="1" format="ascii">'
            f'{t!r}</DataArray>\n'
            '    </FieldData>\n'
            f'    <Piece Extent="{extent}">\n'
            '      <PointData Scalars="pressure" Vectors="velocity">\n'
            '        <DataArray type="Float32" Name="pressure" format="appended" offset="0"/>\n'
            '        <DataArray type="Float32" Name="velocity" NumberOfComponents="3" '
            f'format="appended" offset="{8 + pressure.nbytes}"/>\n'
            '      </PointData>\n'
            '      <CellData/>\n'
            '    </Piece>\n'
            '  </ImageData>\n'
            '  <AppendedData encoding="raw">\n   _'
        )
        f.write(header.encode("ascii"))
        for array in (pressure, velocity):
            array = array.astype("<f4", copy=False)
            f.write(np.uint64(array.nbytes).astype("<u8").tobytes())
            array.tofile(f)
        f.write(b"\n  </AppendedData>\n</VTKFile>\n")


def _pvd_text(names: list[str], times: list[float]) -> str:
    rows = "".join(f'    <DataSet timestep="{t!r}" group="" part="0" file="{name}"/>\n'
                   for name, t in zip(names, times))
    return ('<?xml version="1.0"?>\n'
            '<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">\n'
            f"  <Collection>\n{rows}  </Collection>\n</VTKFile>\n")
