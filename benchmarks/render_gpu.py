"""Offscreen rendering on an NVIDIA GPU through EGL against Mesa's llvmpipe on the CPU, same machine, same run.

One reduced dataset (a synthetic SIZE^3 simulation reduced with one stored
isosurface and one z-slice) is shown the way the explorer app opens it with a
view preset of six iso-values (a few million triangles at the default size):
``build_scene`` + ``apply_view``, and ``render_thumbnail`` for the thumbnail.
Each OpenGL runs in a child process of its own, pinned to its EGL vendor with
``__EGL_VENDOR_LIBRARY_FILENAMES`` (libglvnd picks the vendor per process):

- window + context: an empty offscreen window's first Render() (the app's ``prepare()``);
- first frame: the scene's geometry uploaded, shaders compiled, drawn, read back;
- interactive frame: camera turned, drawn and read back (what the remote view
  does for each frame it sends), median over ``--frames``;
- full-HD frame: the same at 1920x1080;
- thumbnail: ``render_thumbnail`` end to end at 1920x1080 (new window, read,
  isosurfaces on the CPU, PNG), median over ``--thumbnails``.

Our code does no volume rendering (the views show isosurfaces and slices),
so there is no volume row.

    .venv/bin/python benchmarks/render_gpu.py [--size 320] [--frames 30] [--thumbnails 3] [--workers 4]

The NVIDIA vendor file is looked for in glvnd's folders and in
/usr/local/nvidia/share/glvnd (``--nvidia-vendor FILE`` names another), Mesa's
likewise (``--mesa-vendor FILE``). Without an NVIDIA GPU it says so and prints
the CPU column only. Prints a markdown table for README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

VENDOR_DIRS = (
    "/etc/glvnd/egl_vendor.d",
    "/usr/share/glvnd/egl_vendor.d",
    "/usr/local/share/glvnd/egl_vendor.d",
    "/usr/local/nvidia/share/glvnd/egl_vendor.d",
)
INTERACTIVE = (1024, 768)  # the explorer app's window
FULL_HD = (1920, 1080)
ISO_FRACTIONS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)  # of the pressure range: the preset's six iso-values
RESULT = "render_gpu result: "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320, help="grid points per axis (default 320)")
    parser.add_argument("--frames", type=int, default=30, help="timed interactive frames (default 30)")
    parser.add_argument("--thumbnails", type=int, default=3, help="timed thumbnails (default 3)")
    parser.add_argument("--workers", type=int, default=4, help="Dask worker processes for the reduction (default 4)")
    parser.add_argument("--nvidia-vendor", type=Path, help="NVIDIA's EGL vendor JSON (default: found in glvnd's folders)")
    parser.add_argument("--mesa-vendor", type=Path, help="Mesa's EGL vendor JSON (default: found in glvnd's folders)")
    parser.add_argument("--work", type=Path, help="folder for the data and pictures (default: a new temporary one)")
    parser.add_argument("--child", choices=("cpu", "gpu"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT + json.dumps(measure(args)), flush=True)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="hpcviz-bench-render-"))
    gpu = nvidia_gpu()
    vendors = {
        "cpu": args.mesa_vendor or vendor_file("mesa"),
        "gpu": (args.nvidia_vendor or vendor_file("nvidia")) if gpu else None,
    }
    started = time.perf_counter()
    data = reduced_dataset(work, args.size, args.workers)
    print(f"data: {args.size}^3 synthetic simulation reduced in {time.perf_counter() - started:.1f} s -> {data}", flush=True)

    results = {}
    for name, vendor in vendors.items():
        if vendor is None:
            continue
        child = [sys.executable, __file__, "--child", name, "--data", str(data), "--work", str(work),
                 "--frames", str(args.frames), "--thumbnails", str(args.thumbnails)]  # fmt: skip
        env = {**os.environ, "__EGL_VENDOR_LIBRARY_FILENAMES": str(vendor)}
        run = subprocess.run(child, env=env, capture_output=True, text=True)
        sys.stderr.write(run.stderr[-4000:])
        lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT)]
        if run.returncode != 0 or not lines:
            print(f"{name}: the child failed (exit {run.returncode}); its output:\n{run.stdout[-4000:]}", flush=True)
            continue
        results[name] = json.loads(lines[-1][len(RESULT):])
    print(report(args, gpu, vendors, results, work))


# -- the data ----------------------------------------------------------------------------------


def reduced_dataset(work: Path, size: int, workers: int) -> Path:
    """The synthetic simulation reduced with a stored isosurface and a z-slice (Dask LocalCluster)."""
    from distributed import Client, LocalCluster

    from prefect_hpcviz.viz.datasets import write_synthetic
    from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset

    sim = write_synthetic(work / "sim", shape=(size,) * 3, steps=1)
    recipe = Recipe.from_yaml(
        "fields: [pressure]\nsteps:\n  - contour: {field: pressure, values: [1.2]}\n  - slice: {normal: [0, 0, 1]}\n"
    )
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        return Path(reduce_dataset(sim, recipe, work / "reduced", client=client).path)


# -- one OpenGL, in a child process -----------------------------------------------------------


def measure(args: argparse.Namespace) -> dict:
    """Time the rows of the table with whatever OpenGL this process got; milliseconds."""
    import numpy as np
    import pyvista as pv
    from PIL import Image

    from prefect_hpcviz.viz.opengl_info import opengl_info
    from prefect_hpcviz.viz.scene import build_scene, load_view_data
    from prefect_hpcviz.viz.thumbnail import render_thumbnail
    from prefect_hpcviz.viz.view_preset import ViewPreset, apply_view

    out: dict = {}
    clock = time.perf_counter
    data = load_view_data(args.data)
    lo, hi = next(f.range for f in data.fields if f.name == "pressure")
    preset = ViewPreset(field="pressure", contours=[lo + f * (hi - lo) for f in ISO_FRACTIONS])

    t = clock()
    plotter = pv.Plotter(off_screen=True, window_size=INTERACTIVE)
    plotter.render_window.Render()
    out["context_ms"] = (clock() - t) * 1e3
    info = opengl_info(plotter.render_window)
    window = plotter.render_window
    devices = f"; {window.GetNumberOfDevices()} EGL device(s)" if hasattr(window, "GetNumberOfDevices") else ""
    out["renderer"] = f"{info}{devices}"
    out["software"] = info.software

    t = clock()
    scene = build_scene(plotter, data)
    apply_view(scene, preset)
    out["scene_ms"] = (clock() - t) * 1e3
    out["triangles"] = sum(_cells(actor) for actor in plotter.renderer.actors.values())

    t = clock()
    first = _frame(plotter)
    out["first_frame_ms"] = (clock() - t) * 1e3
    Image.fromarray(first).save(args.work / f"{args.child}-frame.png")
    out["interactive_ms"] = _turning(plotter, args.frames)
    plotter.close()

    t = clock()
    plotter = pv.Plotter(off_screen=True, window_size=FULL_HD)
    plotter.render_window.Render()
    out["context_again_ms"] = (clock() - t) * 1e3
    apply_view(build_scene(plotter, data), preset)
    _frame(plotter)  # first frame: upload and shaders, timed above
    out["full_hd_ms"] = _turning(plotter, args.frames)
    plotter.close()

    times = []
    for _ in range(max(1, args.thumbnails)):
        t = clock()
        png = render_thumbnail(data, size=FULL_HD, view=preset)
        times.append((clock() - t) * 1e3)
    (args.work / f"{args.child}-thumbnail.png").write_bytes(png)
    out["thumbnail_ms"] = statistics.median(times)
    out["frame_png"] = str(args.work / f"{args.child}-frame.png")
    out["picture_std"] = float(np.asarray(first, dtype=np.float32).std())
    return out


def _frame(plotter):
    """Draw one frame and read it back (RGB), as a remote view does per frame."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    window = plotter.render_window
    window.Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ShouldRerenderOff()
    grab.ReadFrontBufferOff()
    grab.SetInputBufferTypeToRGB()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    rgb = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
    return rgb[::-1].copy()


def _turning(plotter, frames: int) -> float:
    """Median milliseconds of a frame while the camera turns round the data."""
    camera = plotter.renderer.GetActiveCamera()
    times = []
    for _ in range(max(1, frames)):
        camera.Azimuth(360.0 / max(1, frames))
        t = time.perf_counter()
        _frame(plotter)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _cells(actor) -> int:
    mapper = actor.GetMapper() if hasattr(actor, "GetMapper") else None
    data = mapper.GetInput() if mapper is not None and hasattr(mapper, "GetInput") else None
    return int(data.GetNumberOfCells()) if data is not None else 0


# -- the machine --------------------------------------------------------------------------------


def nvidia_gpu() -> str | None:
    """``NAME, driver VERSION`` of the first NVIDIA GPU, or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    try:
        answer = subprocess.run(query, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not answer:
        return None
    name, _, driver = answer.splitlines()[0].partition(",")
    return f"{name.strip()}, driver {driver.strip()}"


def vendor_file(vendor: str) -> Path | None:
    """The first ``*_<vendor>.json`` EGL vendor file in glvnd's folders."""
    for folder in (*os.environ.get("__EGL_VENDOR_LIBRARY_DIRS", "").split(":"), *VENDOR_DIRS):
        if folder:
            found = sorted(Path(folder).glob(f"*_{vendor}.json"))
            if found:
                return found[0]
    return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


# -- the table ----------------------------------------------------------------------------------


def report(args, gpu: str | None, vendors: dict, results: dict, work: Path) -> str:
    cpu, gpu_run = results.get("cpu"), results.get("gpu")
    any_run = gpu_run or cpu
    lines = [
        "",
        f"command: {' '.join(['python', 'benchmarks/render_gpu.py', *sys.argv[1:]])}",
        f"machine: {cpu_name()}; GPU: {gpu or 'none (nvidia-smi lists no NVIDIA GPU)'}"
        f"; llvmpipe threads: {os.environ.get('LP_NUM_THREADS', 'Mesa default (one per CPU)')}",
    ]
    for name, label in (("cpu", "CPU column"), ("gpu", "GPU column")):
        if name in results:
            lines.append(f"{label}: {results[name]['renderer']} [vendor file {vendors[name]}]")
    if not gpu:
        lines.append("No NVIDIA GPU here: CPU column only.")
    elif vendors["gpu"] is None:
        lines.append("NVIDIA GPU present but no NVIDIA EGL vendor file found (give --nvidia-vendor): CPU column only.")
    if vendors["cpu"] is None:
        lines.append("Mesa's EGL vendor file not found (give --mesa-vendor): no CPU baseline.")
    if gpu_run and gpu_run["software"]:
        lines.append("WARNING: the GPU column rendered in software.")
    if not any_run:
        return "\n".join([*lines, "nothing was measured (see the errors above)"])
    lines.append(
        f"scene: {args.size}^3 reduced volume, {any_run['triangles'] / 1e6:.2f} M triangles "
        f"(6 live isosurfaces, a stored isosurface at opacity 0.35, a slice, the outline)"
    )
    if cpu and gpu_run:
        lines.append(f"pictures: mean |GPU - CPU| = {picture_difference(cpu, gpu_run):.2f} of 255 per channel")
    lines += ["", "| scene | size | CPU llvmpipe ms | GPU ms | speed-up |", "| --- | --- | ---: | ---: | ---: |"]
    rows = [
        ("window + OpenGL context, first in the process (empty)", INTERACTIVE, "context_ms"),
        ("window + OpenGL context, another one (empty)", FULL_HD, "context_again_ms"),
        ("first frame: upload, shaders, draw, read back", INTERACTIVE, "first_frame_ms"),
        (f"interactive frame: turn, draw, read back (median of {args.frames})", INTERACTIVE, "interactive_ms"),
        (f"full-HD frame (median of {args.frames})", FULL_HD, "full_hd_ms"),
        (f"thumbnail: render_thumbnail to PNG (median of {args.thumbnails})", FULL_HD, "thumbnail_ms"),
        ("scene build: read, 6 isosurfaces on the CPU (no GL)", INTERACTIVE, "scene_ms"),
    ]
    for label, (w, h), key in rows:
        c = cpu[key] if cpu else None
        g = gpu_run[key] if gpu_run else None
        ratio = f"{c / g:.1f}x" if c and g else "—"
        lines.append(f"| {label} | {w}x{h} | {_ms(c)} | {_ms(g)} | {ratio} |")
    lines.append(f"\npictures and data: {work}")
    return "\n".join(lines)


def picture_difference(cpu: dict, gpu: dict) -> float:
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(cpu["frame_png"]).convert("RGB"), dtype=np.float32)
    b = np.asarray(Image.open(gpu["frame_png"]).convert("RGB"), dtype=np.float32)
    return float(np.abs(a - b).mean())


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


if __name__ == "__main__":
    main()
