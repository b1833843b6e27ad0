"""Run viz server jobs as local processes (a laptop, a workstation, a login node).

Each job runs in its own session (so its whole process group can be stopped
and Ctrl-C in the gateway's terminal does not reach it), with ``os.environ``
plus the spec's env, and writes stdout and stderr to
``<workdir>/<name>-<job id>.log``.

The job id is ``<pid>.<process start time in 1/100 s>``: it stays valid when
the gateway restarts, and a pid the system has since given to another process
is not mistaken for the job.

Standby servers: a spec with an ``assignment`` (the standard serve command) is
handed to a viz server started ahead of time (``serve --standby``), which has
already imported trame and VTK and made its render window; it reads the
session (arguments, environment with the key, folder) from its stdin pipe.
The job is that process, with the same id and log as any other; a new
standby is started for the next click. Standbys end when the backend is
closed, and by themselves when the backend's process goes (end of stdin).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from prefect_hpcviz.viz.backends.base import JobSpec, JobState, JobStatus
from prefect_hpcviz.viz.errors import InputError, LaunchError

_JOB_ID = re.compile(r"^(\d+)\.(\d+)$")
_JOB_FILE = re.compile(r"-(\d+\.\d+)\.(log|exit)$")
_SERVE_MODULE = "prefect_hpcviz.viz.serve"
_MAX_STANDBY_FAILURES = 3
"""Standbys that die on their own in a row before the backend stops starting them."""

log = logging.getLogger(__name__)


def default_workdir() -> Path:
    """Where LocalBackend keeps logs when no workdir is given (per user, until reboot).

    Example:
        >>> default_workdir().name
        'local-jobs'
    """
    return Path(tempfile.gettempdir()) / f"hpcviz-{os.getuid()}" / "local-jobs"


class LocalBackend:
    """Viz server jobs as local subprocesses.

    Args:
        workdir: folder for the jobs' log and exit files (default
            :func:`default_workdir`). Keep it the same across gateway restarts.
        grace_s: seconds between SIGTERM and SIGKILL when a job is stopped.
        standby: pre-started viz servers kept waiting per app (0: none).
            They start with :meth:`warm_up` and after each launch that used
            one; :meth:`close` stops them.
        standby_delay_s: seconds after a launch before the next standby
            starts, so that its start (about 1.5 s of one core) does not slow
            the session being opened on a small machine.

    Example:
        >>> import asyncio, sys
        >>> from prefect_hpcviz.viz.backends import JobSpec, LocalBackend
        >>> backend = LocalBackend()
        >>> async def hello():
        ...     job = await backend.submit(JobSpec("hello", [sys.executable, "-c", "print('hi')"]))
        ...     while not (await backend.state(job)).state.ended:
        ...         await asyncio.sleep(0.05)
        ...     return await backend.logs(job)
        >>> asyncio.run(hello())
        'hi\\n'
    """

    kind = "local"

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        grace_s: float = 5.0,
        standby: int = 1,
        standby_delay_s: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir) if workdir else default_workdir()
        self.grace_s = float(grace_s)
        self.standby = int(standby)
        if self.standby < 0:
            raise ValueError(f"standby={standby}: give 0 (none) or more")
        self.standby_delay_s = float(standby_delay_s)
        self._standbys: dict[str, list[_Standby]] = {}
        self._standby_failures = 0
        self._timers: set[asyncio.TimerHandle] = set()
        # Jobs this instance started: job id -> (Popen, name). subprocess.Popen,
        # not asyncio's subprocess transport: the latter kills its child when
        # its event loop closes, and viz servers must outlive a gateway restart.
        self._procs: dict[str, tuple[subprocess.Popen, str]] = {}
        self._stopping: set[str] = set()

    def __repr__(self) -> str:
        return f"LocalBackend(workdir={str(self.workdir)!r}, grace_s={self.grace_s}, standby={self.standby})"

    # ------------------------------------------------------------------ submit
    async def submit(self, spec: JobSpec) -> str:
        """Hand the spec to a standby server, or start ``spec.command`` in its own session; return the job id."""
        if not spec.command:
            raise InputError(f"job {spec.name}", "the command is empty", "give the program to run")
        if spec.assignment is not None and self.standby > 0:
            job_id = self._assign_to_standby(spec)
            # Later, not now: on a small machine a standby starting up would
            # slow the session being opened (and a browser on the same machine).
            self._warm_up_later(str(spec.assignment.get("app") or "explorer"))
            if job_id is not None:
                return job_id
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
        name = _safe_name(spec.name)
        starting = self.workdir / f".{name}-{secrets.token_hex(6)}.starting.log"
        fd = os.open(starting, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                [str(part) for part in spec.command],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                cwd=str(spec.workdir),
                env={**os.environ, **{k: str(v) for k, v in spec.env.items()}},
                start_new_session=True,
            )
        except OSError as exc:
            starting.unlink(missing_ok=True)
            raise LaunchError(
                f"{spec.command[0]}: cannot start the viz server ({exc.strerror or exc}). "
                "Check the launcher command and that the program is installed on this machine."
            ) from exc
        finally:
            os.close(fd)
        # Not reaped until we poll(), so the start time is readable even if it already exited.
        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            started = time.time()
        job_id = f"{proc.pid}.{round(started * 100)}"
        os.replace(starting, self._log_path(job_id, name))
        self._procs[job_id] = (proc, name)
        return job_id

    # ----------------------------------------------------------------- standby
    def warm_up(self, app: str = "explorer") -> None:
        """Start standby servers for ``app`` until ``standby`` of them wait (returns at once)."""
        if self.standby <= 0 or self._standby_failures >= _MAX_STANDBY_FAILURES:
            return
        pool = self._standbys.setdefault(app, [])
        for waiting in [w for w in pool if w.proc.poll() is not None]:
            pool.remove(waiting)
            self._standby_ended(waiting)
        while len(pool) < self.standby:
            try:
                pool.append(self._start_standby(app))
            except OSError as exc:
                log.warning("cannot start a standby viz server (%s); launching on demand instead", exc)
                self._standby_failures = _MAX_STANDBY_FAILURES
                return

    def _warm_up_later(self, app: str) -> None:
        handle = asyncio.get_running_loop().call_later(self.standby_delay_s, self._warm_up_timer, app)
        self._timers.add(handle)

    def _warm_up_timer(self, app: str) -> None:
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()}
        self.warm_up(app)

    def standby_pids(self) -> list[int]:
        """Process ids of the standby servers waiting now (for tests and diagnostics)."""
        return [w.proc.pid for pool in self._standbys.values() for w in pool if w.proc.poll() is None]

    async def close(self) -> None:
        """Stop the waiting standby servers (jobs already handed out keep running)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        waiting = [w for pool in self._standbys.values() for w in pool]
        self._standbys.clear()
        for standby in waiting:
            _close_quietly(standby.proc.stdin)  # end of stdin: a prepared standby exits 0
            _killpg(standby.proc.pid, signal.SIGTERM)  # one still importing
        deadline = time.monotonic() + self.grace_s
        while any(w.proc.poll() is None for w in waiting) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for standby in waiting:
            if standby.proc.poll() is None:
                _killpg(standby.proc.pid, signal.SIGKILL)
                standby.proc.wait()
            standby.log.unlink(missing_ok=True)

    def _start_standby(self, app: str) -> _Standby:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.workdir / f".standby-{_safe_name(app)}-{secrets.token_hex(6)}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", _SERVE_MODULE, "--standby", "--app", app],
                stdin=subprocess.PIPE,
                stdout=fd,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
                start_new_session=True,
            )
        finally:
            os.close(fd)
        return _Standby(proc, path, app)

    def _standby_ended(self, standby: _Standby) -> None:
        """A standby that ended before it was used: count it, keep its log for a person."""
        self._standby_failures += 1
        log.warning(
            "a standby viz server ended by itself (exit code %s); see %s%s",
            standby.proc.returncode,
            standby.log,
            "; no more standbys (launching on demand)" if self._standby_failures >= _MAX_STANDBY_FAILURES else "",
        )
        _close_quietly(standby.proc.stdin)

    def _assign_to_standby(self, spec: JobSpec) -> str | None:
        """Give the session to a waiting standby; its job id, or None when none could take it."""
        assert spec.assignment is not None
        pool = self._standbys.get(str(spec.assignment.get("app") or "explorer"), [])
        line = json.dumps(
            {
                "argv": [str(a) for a in spec.assignment["argv"]],
                "env": {k: str(v) for k, v in spec.env.items()},
                "cwd": str(spec.workdir),
            }
        )
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
        while pool:
            standby = pool.pop(0)
            if standby.proc.poll() is not None:
                self._standby_ended(standby)
                continue
            try:
                assert standby.proc.stdin is not None
                standby.proc.stdin.write(line.encode() + b"\n")
                standby.proc.stdin.close()
            except OSError:  # it died just now
                standby.proc.wait()
                self._standby_ended(standby)
                continue
            try:  # not reaped until we poll(), so readable even if it exits right away
                started = psutil.Process(standby.proc.pid).create_time()
            except psutil.Error:
                started = time.time()
            job_id = f"{standby.proc.pid}.{round(started * 100)}"
            name = _safe_name(spec.name)
            os.replace(standby.log, self._log_path(job_id, name))
            self._procs[job_id] = (standby.proc, name)
            self._standby_failures = 0
            return job_id
        return None

    def _poll(self, job_id: str) -> int | None:
        """Exit code of a job this instance started (reaping it), None while it runs.

        The first time it sees the exit it writes the exit file, which answers
        from then on (also for a restarted gateway).
        """
        proc, name = self._procs[job_id]
        returncode = proc.poll()
        if returncode is not None:
            self._write_exit(job_id, returncode, stopped=job_id in self._stopping, name=name)
            del self._procs[job_id]
            self._stopping.discard(job_id)
        return returncode

    # ------------------------------------------------------------------- state
    async def state(self, job_id: str) -> JobStatus:
        """running while the process lives; done (exit 0 or stopped) or failed after."""
        pid, started = _parse(job_id)
        if job_id in self._procs and self._poll(job_id) is None:
            return JobStatus(JobState.RUNNING, node=socket.gethostname())
        record = self._read_exit(job_id)
        if record is not None:
            return _ended(record.get("returncode"), bool(record.get("stopped")))
        if _alive(pid, started):
            return JobStatus(JobState.RUNNING, node=socket.gethostname())
        return JobStatus(
            JobState.FAILED,
            reason="the process ended while no gateway was watching it (exit code unknown)",
        )

    # ------------------------------------------------------------------- list
    async def list_jobs(self) -> dict[str, JobStatus]:
        """Every job started in this workdir that still runs (by any backend instance), id -> status.

        Found from the jobs' log files (``<name>-<job id>.log``), so a
        restarted gateway sees the jobs of the one before; a job with an exit
        file, or whose process is gone, has ended and is left out. Standby
        servers not yet handed a session are not jobs.

        Example:
            >>> import asyncio
            >>> asyncio.run(LocalBackend("/tmp/hpcviz-doc-empty-jobs").list_jobs())
            {}
        """
        try:
            names = [entry.name for entry in os.scandir(self.workdir) if not entry.name.startswith(".")]
        except FileNotFoundError:
            return {}
        logs, exits = set(), set()
        for name in names:
            if match := _JOB_FILE.search(name):
                (exits if match.group(2) == "exit" else logs).add(match.group(1))
        running = {}
        for job_id in logs - exits:
            alive = self._poll(job_id) is None if job_id in self._procs else _alive(*_parse(job_id))
            if alive:
                running[job_id] = JobStatus(JobState.RUNNING, node=socket.gethostname())
        return running

    # -------------------------------------------------------------------- stop
    async def stop(self, job_id: str) -> None:
        """SIGTERM to the job's process group; SIGKILL after ``grace_s``."""
        pid, started = _parse(job_id)
        owned = job_id in self._procs and self._poll(job_id) is None
        if not owned and not _alive(pid, started):
            return
        self._stopping.add(job_id)
        _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while self._group_running(job_id, pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._group_running(job_id, pid):
            _killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self._group_running(job_id, pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if not owned:
            self._write_exit(job_id, None, stopped=True)
            self._stopping.discard(job_id)

    def _group_running(self, job_id: str, pgid: int) -> bool:
        if job_id in self._procs:
            self._poll(job_id)  # reap the leader so that it does not linger as a zombie
        return _group_alive(pgid)

    # -------------------------------------------------------------------- logs
    async def logs(self, job_id: str, tail: int = 100) -> str:
        """The last ``tail`` lines of the job's log ("" when there is none yet)."""
        _parse(job_id)
        path = self._find(job_id, ".log")
        if path is None:
            return ""
        return _tail_lines(path, tail)

    # ----------------------------------------------------------------- helpers
    def _log_path(self, job_id: str, name: str) -> Path:
        return self.workdir / f"{name}-{job_id}.log"

    def _find(self, job_id: str, suffix: str) -> Path | None:
        matches = sorted(self.workdir.glob(f"*-{job_id}{suffix}"))
        return matches[0] if matches else None

    def _write_exit(
        self, job_id: str, returncode: int | None, *, stopped: bool, name: str | None = None
    ) -> None:
        if name is None:
            log = self._find(job_id, ".log")
            name = log.name[: -len(f"-{job_id}.log")] if log else "job"
        path = self.workdir / f"{name}-{job_id}.exit"
        record = {"returncode": returncode, "stopped": stopped, "ended_at": time.time()}
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def _read_exit(self, job_id: str) -> dict | None:
        path = self._find(job_id, ".exit")
        if path is None:
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None


@dataclass
class _Standby:
    proc: subprocess.Popen
    log: Path
    app: str


def _close_quietly(stream) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:
        pass


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")[:64] or "job"


def _parse(job_id: str) -> tuple[int, int]:
    match = _JOB_ID.match(str(job_id))
    if not match:
        raise InputError(
            f"job id {job_id!r}",
            "not a local job id",
            "pass the id LocalBackend.submit returned (<pid>.<start>)",
        )
    return int(match.group(1)), int(match.group(2))


def _alive(pid: int, started: int) -> bool:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() * 100 - started) > 2:
            return False  # the pid now belongs to another process
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> bool:
    """True while a process of the group (not just a zombie) is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # fast path: the leader itself still runs
        if psutil.Process(pgid).status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.Error:
        pass
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _ended(returncode: int | None, stopped: bool) -> JobStatus:
    if stopped:
        return JobStatus(JobState.DONE, reason="stopped on request")
    if returncode == 0:
        return JobStatus(JobState.DONE)
    if returncode is None:
        return JobStatus(JobState.FAILED, reason="exit code unknown")
    if returncode < 0:
        try:
            signame = signal.Signals(-returncode).name
        except ValueError:
            signame = f"signal {-returncode}"
        return JobStatus(JobState.FAILED, reason=f"killed by {signame}")
    return JobStatus(JobState.FAILED, reason=f"exit code {returncode}")


def _tail_lines(path: Path, lines: int, max_bytes: int = 1 << 20) -> str:
    if lines <= 0:
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= lines and end - pos < max_bytes:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    text = data.decode("utf-8", errors="replace")
    kept = text.splitlines(keepends=True)[-lines:]
    return "".join(kept)
