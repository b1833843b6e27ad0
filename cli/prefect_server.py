"""A local Prefect server (API + UI) for the demo and `hpcviz visualize`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from prefect_hpcviz.viz.errors import InputError, LaunchError


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class LocalPrefectServer:
    """``prefect server start`` as a child process, stopped on exit.

    Its database and logs live in ``home`` (PREFECT_HOME), so flow runs,
    artifacts and logs of earlier demos are still there next time.

    Example:
        >>> with LocalPrefectServer(Path("~/.hpcviz/prefect").expanduser()) as server:
        ...     print(server.ui_url)
        http://127.0.0.1:4200
    """

    def __init__(self, home: Path, *, host: str = "127.0.0.1", port: int = 4200, timeout_s: float = 90) -> None:
        self.home = Path(home)
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.process: subprocess.Popen | None = None
        self.log_path = self.home / "server.log"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def start(self) -> LocalPrefectServer:
        if not port_is_free(self.host, self.port):
            raise InputError(
                f"port {self.port}",
                "is in use, so the local Prefect server cannot start there",
                "pass --prefect-port with a free port, stop what listens there, "
                "or set PREFECT_API_URL to use a Prefect server that is already running",
            )
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self) -> None:
        """Block until /api/health answers; raise with the log tail if it never does."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + self.timeout_s
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        self.stop()
        raise LaunchError(f"the local Prefect server did not start (log {self.log_path}):\n{tail}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalPrefectServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
