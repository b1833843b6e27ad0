"""What a viz server job runs: open the data, serve a trame app, report, stop when idle.

::

    HPCVIZ_SESSION_KEY=... python -m prefect_hpcviz.viz.serve --app explorer \\
        --data out/reduced/3f2a9c0d41b7e8aa --host NODE_ADDR --port 0 \\
        --report-url https://gateway/api/sessions/ID/ready --idle-timeout 300

In order, so that a bad input fails fast and the browser's first image comes
quickly:

1. read the session key from ``$HPCVIZ_SESSION_KEY`` or ``--key-file`` (never
   from the command line, which ``ps`` shows); refuse to start without one
   unless ``--no-auth`` is given (running alone on your own machine);
2. import the app, open the data and render the first frame; a path that
   cannot be opened exits with status 2 and a message naming it, before any
   port is bound;
3. listen on ``--host:--port`` (0: any free port) with the key as the wslink
   authentication secret: a websocket client whose ``wslink.hello`` does not
   carry the key is refused. Behind the gateway the browser never sees the
   key (the gateway writes it into the hello, ``viz/gateway/wslink_auth.py``);
   a browser talking to the server directly passes ``?secret=KEY``;
4. print ``hpcviz-serve: ready on http://HOST:PORT/`` and POST
   ``{"host": HOST, "port": PORT}`` to ``--report-url`` with
   ``Authorization: Bearer KEY``, retrying with backoff for ``--report-timeout``
   seconds (30); a gateway that never answers, or refuses, stops the server
   with status 3;
   With ``--reverse`` (or ``HPCVIZ_REVERSE=1``; for nodes that accept no
   inbound connections) the server listens on 127.0.0.1 only and instead dials
   the gateway (``.../tunnel`` next to the report URL), which reaches the app
   through that connection (``viz/reverse_dial.py``); the gateway hanging up
   stops the server;
5. stay in the foreground; exit 0 once no client has been connected for
   ``--idle-timeout`` seconds (0: never), or on SIGTERM / SIGINT.

Standby (``--standby [--app APP]``, started ahead of time by a backend): do
what does not depend on the session (import the app, trame and VTK; the app's
``prepare()``, e.g. its offscreen render window), then wait for ONE line of
JSON on stdin, ``{"argv": [serve arguments], "env": {...}, "cwd": DIR}``, and
serve exactly as ``serve ARGS`` would with that environment (the session key
travels in ``env``, so through the pipe, never on a command line). End of
stdin before that line (the backend stopped, or died) exits 0 quietly.
"""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect_hpcviz.viz.egl_devices import use_gpu_egl_device  # noqa: E402
from prefect_hpcviz.viz.errors import HpcvizError  # noqa: E402

KEY_ENV = "HPCVIZ_SESSION_KEY"
REVERSE_ENV = "HPCVIZ_REVERSE"
EXIT_USAGE = 2
"""Bad input: no key, unknown app, data that cannot be opened."""
EXIT_REPORT_FAILED = 3
"""The gateway never took the readiness report."""

log = logging.getLogger("hpcviz.serve")


def build_parser() -> argparse.ArgumentParser:
    """The ``hpcviz serve`` / ``python -m prefect_hpcviz.viz.serve`` options."""
    parser = argparse.ArgumentParser(
        prog="hpcviz serve",
        description="Serve a trame app for one dataset; report readiness; exit when idle.",
    )
    parser.add_argument("--app", default="explorer", help="app name (default: explorer)")
    parser.add_argument("--data", default=None, help="reduced directory or dataset path/URL (required)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; on a compute node, one the gateway can reach",
    )
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument(
        "--advertise-host",
        default=None,
        help="host to report (default: --host, or this machine's name for 0.0.0.0 / ::)",
    )
    parser.add_argument("--report-url", default=None, help="POST {host, port} here when ready")
    parser.add_argument(
        "--reverse",
        action="store_true",
        default=os.environ.get(REVERSE_ENV, "") not in ("", "0"),
        help="dial the gateway instead of reporting host:port (nodes that accept no inbound "
        f"connections); listens on 127.0.0.1 only, --host is ignored (default: ${REVERSE_ENV})",
    )
    parser.add_argument(
        "--report-timeout",
        type=float,
        default=30.0,
        help="give up reporting after this many seconds (default: 30)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=int,
        default=300,
        help="exit when no client has been connected this long, seconds (0: never; default 300)",
    )
    parser.add_argument(
        "--key-file", default=None, help=f"file holding the session key (default: ${KEY_ENV})"
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="run without a session key (your own machine only)",
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        help="prepare --app, then read the session's arguments as one JSON line from stdin",
    )
    return parser


def read_key(key_file: str | None) -> str | None:
    """The session key from ``key_file`` or ``$HPCVIZ_SESSION_KEY``; None when neither is set.

    Example:
        >>> os.environ["HPCVIZ_SESSION_KEY"] = "s3cret"
        >>> read_key(None)
        's3cret'
    """
    if key_file:
        key = Path(key_file).expanduser().read_text().strip()
    else:
        key = os.environ.get(KEY_ENV, "").strip()
    return key or None


def main(argv: list[str] | None = None, *, prepared: tuple[str, dict[str, Any]] | None = None) -> int:
    """Run a viz server in the foreground; the exit status says how it ended.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
        prepared: ``(app name, keyword arguments)`` from that app's
            ``prepare()`` (a standby made them); used when ``--app`` matches.

    Returns:
        0 after an idle exit or a signal, 2 for bad input (no key, unknown app,
        data that cannot be opened), 3 when the gateway never took the report.

    Example:
        >>> main(["--app", "explorer", "--data", "out/reduced/3f2a9c0d41b7e8aa", "--no-auth"])
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    use_gpu_egl_device(log)  # before the app (or a standby's prepare()) makes its render window
    if args.standby:
        if prepared is not None:
            return _fail("a standby's assignment cannot itself ask for --standby.")
        return standby(args.app)
    if not args.data:
        parser.error("the following arguments are required: --data")

    try:
        key = read_key(args.key_file)
    except OSError as exc:
        return _fail(f"{args.key_file}: cannot read the key file ({exc.strerror}). Check the path.")
    if key is None and not args.no_auth:
        return _fail(
            f"no session key: set {KEY_ENV} or pass --key-file FILE "
            "(or --no-auth to run without authentication on your own machine)."
        )
    if key is None:
        log.warning("running WITHOUT authentication (--no-auth): anyone who reaches the port can connect")

    try:
        from prefect_hpcviz.viz.apps import get_app_factory

        extra = prepared[1] if prepared is not None and prepared[0] == args.app else {}
        app = get_app_factory(args.app)(args.data, **extra)
    except HpcvizError as exc:
        return _fail(str(exc))
    except Exception as exc:  # a reader failing in a way we did not foresee
        return _fail(f"{args.data}: cannot open the data ({type(exc).__name__}: {exc}). Check the path.")
    log.info("%s loaded in %.2f s after process start", args.data, _since_process_start())
    _log_renderer(app)

    if args.reverse:
        from prefect_hpcviz.viz.reverse_dial import tunnel_url_for

        try:
            tunnel_url_for(args.report_url or "")
        except ValueError:
            return _fail(
                f"--reverse needs --report-url, the gateway's .../api/sessions/ID/ready URL (got {args.report_url!r})."
            )
        if args.host != "127.0.0.1":
            log.info("reverse mode: listening on 127.0.0.1 only (not --host %s)", args.host)
        args.host = "127.0.0.1"
    runner = _Runner(
        app.server,
        host=args.host,
        port=args.port,
        advertise_host=args.advertise_host or _advertised(args.host),
        key=key,
        report_url=args.report_url,
        report_timeout=args.report_timeout,
        idle_timeout=args.idle_timeout,
        reverse=args.reverse,
    )
    return runner.run()


def standby(app_name: str) -> int:
    """Prepare ``app_name``, then serve the session whose arguments arrive on stdin.

    Returns:
        0 when stdin ends before an assignment (nothing to do), 2 for a bad app
        or assignment, else what :func:`main` returns for the assignment.
    """
    try:
        from prefect_hpcviz.viz.apps import get_app_module

        module = get_app_module(app_name)
        kwargs = module.prepare() if hasattr(module, "prepare") else {}
        _import_server_side()
    except HpcvizError as exc:
        return _fail(str(exc))
    log.info("standby for %s, prepared %.2f s after process start", app_name, _since_process_start())

    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the backend closed the pipe: stopped, or gone
    try:
        assignment = json.loads(line)
        argv = [str(a) for a in assignment["argv"]]
        env = {str(k): str(v) for k, v in (assignment.get("env") or {}).items()}
        cwd = assignment.get("cwd")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return _fail(
            f"standby: the assignment on stdin is not a JSON object with an argv list ({type(exc).__name__}). "
            'Write one line: {"argv": [...], "env": {...}, "cwd": DIR}.'
        )
    sys.stdin.close()
    os.environ.update(env)
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as exc:
            return _fail(f"{cwd}: cannot change into the job's folder ({exc.strerror}). Check that it exists.")
    log.info("standby assigned after %.2f s", _since_process_start())
    return main(argv, prepared=(app_name, kwargs))


def _import_server_side() -> None:
    """Import what serving needs later (the web server, the report client) while idle."""
    import aiohttp  # noqa: F401
    import wslink.backends.aiohttp  # noqa: F401


class _Runner:
    """Owns the port, the readiness report and the exit status of one server."""

    def __init__(
        self,
        server: Any,
        *,
        host: str,
        port: int,
        advertise_host: str,
        key: str | None,
        report_url: str | None,
        report_timeout: float,
        idle_timeout: int,
        reverse: bool = False,
    ) -> None:
        self.server = server
        self.reverse = reverse
        self.host = host
        self.port = port
        self.advertise_host = advertise_host
        self.key = key
        self.report_url = report_url
        self.report_timeout = report_timeout
        self.idle_timeout = idle_timeout
        self.exit_code = 0
        self._tasks: set[asyncio.Task] = set()

    def run(self) -> int:
        # trame parses sys.argv by default; ours (``--app NAME``) would switch it
        # to desktop mode. An empty TRAME_ARGS makes it use only the defaults set here.
        os.environ["TRAME_ARGS"] = ""
        os.environ.setdefault("WSLINK_READY_MSG", "")  # we print our own line
        if self.key is not None:
            self.server.cli.set_defaults(authKey=self.key)
        self.server.controller.on_server_ready.add(self._on_ready)
        try:
            self.server.start(
                port=self.port,
                host=self.host,
                timeout=self.idle_timeout,
                open_browser=False,
                show_connection_info=False,
                disable_logging=False,
            )
        except OSError as exc:  # address in use, unknown host, ...
            return _fail(f"{self.host}:{self.port}: cannot listen ({exc}). Choose another --host or --port.")
        log.info("stopped (exit status %d)", self.exit_code)
        return self.exit_code

    def _on_ready(self, **_: Any) -> None:
        port = self.server.port
        shown = f"[{self.host}]" if ":" in self.host else self.host
        print(f"hpcviz-serve: ready on http://{shown}:{port}/", flush=True)
        log.info("ready %.2f s after process start", _since_process_start())
        if self.idle_timeout:
            log.info("exits after %d s without a client", self.idle_timeout)
        if self.report_url:
            report = self._hold_tunnel(port) if self.reverse else self._report(port)
            task = asyncio.get_event_loop().create_task(report)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _report(self, port: int) -> None:
        import aiohttp

        body = {"host": self.advertise_host, "port": port}
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        deadline = time.monotonic() + self.report_timeout
        delay, attempt, problem = 0.2, 0, ""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                attempt += 1
                try:
                    async with session.post(self.report_url, json=body, headers=headers) as resp:
                        if resp.status < 300:
                            log.info("reported %s:%d to %s", body["host"], port, self.report_url)
                            return
                        text = (await resp.text())[:200]
                        problem = f"HTTP {resp.status} {text}".strip()
                        if 400 <= resp.status < 500 and resp.status not in (408, 429):
                            break  # refused: retrying will not help
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if time.monotonic() + delay > deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.error(
            "%s: the gateway did not take the readiness report after %d attempt(s) (%s). "
            "Check that the gateway runs and that this node can reach it; stopping.",
            self.report_url,
            attempt,
            problem,
        )
        self.exit_code = EXIT_REPORT_FAILED
        await self.server.stop()


    async def _hold_tunnel(self, port: int) -> None:
        """Reverse mode: carry the gateway's streams to the app until it hangs up, then stop."""
        from prefect_hpcviz.viz.reverse_dial import TunnelRefused, hold_tunnel, tunnel_url_for

        url = tunnel_url_for(self.report_url)
        try:
            reason = await hold_tunnel(url, self.key or "", port, connect_timeout=self.report_timeout)
        except TunnelRefused as exc:
            log.error("%s; stopping.", exc)
            self.exit_code = EXIT_REPORT_FAILED
        else:
            log.info("%s; stopping.", reason)
        await self.server.stop()


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("hpcviz-serve: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _advertised(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return socket.getfqdn()
    return host


def _since_process_start() -> float:
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:  # psutil missing or /proc unreadable: not worth failing for
        return float("nan")


def _log_renderer(app: Any) -> None:
    """Say which OpenGL the app draws with, so the job's log shows a GPU node that fell back to the CPU."""
    window = getattr(getattr(app, "plotter", None), "render_window", None)
    if window is None:
        return
    from prefect_hpcviz.viz.opengl_info import opengl_info

    try:
        info = opengl_info(window)
    except HpcvizError:  # no context yet: nothing to say
        return
    if info.software:
        log.info("renders on the CPU: %s (EGL found no GPU driver; fine without a GPU, slow for big scenes)", info)
    else:
        log.info("renders on the GPU: %s", info)


def _fail(message: str) -> int:
    print(f"hpcviz-serve: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
