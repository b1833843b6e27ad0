"""Run viz server jobs on Slurm: sbatch, scontrol, scancel, here or on a login node over ssh.

::

    backend = SlurmBackend(partition="viz", walltime="02:00:00", memory="8G",
                           setup=["module load mesa"], workdir="/home/me/.hpcviz/slurm-jobs",
                           command_nodes=["login1.hpc.example", "login2.hpc.example"])
    job_id = await backend.submit(spec)          # sbatch --parsable, the script on stdin
    await backend.state(job_id)                  # JobStatus(QUEUED, reason="Resources")
    await backend.stop(job_id)                   # scancel, then wait until it is gone

How the session key travels: the gateway writes the job's environment to
``<workdir>/.env-<random>`` (mode 0600, folder 0700; over ssh through the
connection's stdin), the script sources and deletes it before the server
starts. It is never on a command line (``ps`` shows those to everyone), in
the job script (``scontrol write batch_script`` shows that to the owner and
admins, and sites often archive scripts), or in sbatch's own environment.
``--export=NONE`` (the default) also keeps the gateway's environment out of
the job.

State: ``scontrol show job`` answers for queued, running and recently ended
jobs (exit code, node, time left). Accounting (sacct) may be off, and Slurm
forgets an ended job after MinJobAge, so the first time the backend sees a
job end it writes ``hpcviz-<id>.exit`` next to the job's log; the job script
itself writes ``hpcviz-<id>.started``. Those answer from then on, also after a
gateway restart. A failure to reach Slurm (squeue/scontrol timing out, every
command node down) is retried with backoff and then answered with the last
known state: it never ends a session.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from prefect_hpcviz.viz.backends.base import JobSpec, JobState, JobStatus
from prefect_hpcviz.viz.backends.command_nodes import (
    CommandRunner,
    LocalCommands,
    NodesUnavailable,
    SshCommandNodes,
)
from prefect_hpcviz.viz.backends.commands import CommandError
from prefect_hpcviz.viz.backends.slurm_script import (
    SlurmJobSettings,
    render_env_file,
    render_job_script,
    walltime_seconds,
)
from prefect_hpcviz.viz.errors import InputError, LaunchError

log = logging.getLogger(__name__)

_SERVE_MODULE = "prefect_hpcviz.viz.serve"
_JOB_ID = re.compile(r"^\d+(_\d+)?$")
_FIELD = re.compile(r"(?:^|\s)(JobState|Reason|NodeList|ExitCode|RunTime|TimeLimit|BatchHost)=(\S*)")

QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED", "STOPPED"}
STARTING_STATES = {"CONFIGURING"}
RUNNING_STATES = {"RUNNING", "SIGNALING", "STAGE_OUT", "RESIZING", "COMPLETING"}
# COMPLETING: the job's processes are being ended; whether it was cancelled, failed or
# completed is known a moment later, so until then it counts as still running.

PENDING_REASONS = {
    "Resources": "waiting for free CPUs, memory or GPUs",
    "Priority": "other jobs are ahead in the queue",
    "BeginTime": "its start time has not come yet",
    "Dependency": "waiting for another job",
    "JobHeldUser": "held by its owner (scontrol release)",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "the nodes it may use are not available now",
    "PartitionDown": "the partition is down",
    "Reservation": "waiting for its reservation",
    "QOSMaxJobsPerUserLimit": "you have as many jobs running as your QOS allows",
    "AssocMaxJobsLimit": "you have as many jobs running as your account allows",
    "PartitionConfig": "the request does not fit the partition (too many CPUs, nodes, GPUs or memory)",
    "BadConstraints": "no node can satisfy the request",
    "PartitionNodeLimit": "the request asks for more nodes than the partition allows",
    "PartitionTimeLimit": "the walltime is longer than the partition allows",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
}
NEVER_STARTS = ("PartitionConfig", "BadConstraints", "PartitionNodeLimit", "PartitionTimeLimit", "InvalidAccount", "InvalidQOS")
"""Pending reasons that mean the job as written will not start: the session fails at once."""

_ENDED_REASONS = {
    "TIMEOUT": "the Slurm time limit (walltime) was reached",
    "OUT_OF_MEMORY": "the job ran out of memory; ask for more (memory)",
    "NODE_FAIL": "the node running it failed",
    "PREEMPTED": "a higher-priority job preempted it",
    "BOOT_FAIL": "the node failed to boot",
    "DEADLINE": "its deadline passed",
}


def default_workdir() -> Path:
    """Where SlurmBackend keeps job logs when no workdir is given (per user; must be on a
    filesystem the compute nodes see, so sites set it).

    Example:
        >>> default_workdir().name
        'slurm-jobs'
    """
    from prefect_hpcviz.viz.paths import hpcviz_home

    return hpcviz_home() / "slurm-jobs"


class SlurmBackend:
    """Viz server jobs as Slurm batch jobs, submitted here or over ssh to command nodes.

    Args:
        workdir: folder for job logs and state files, on a filesystem shared
            with the compute nodes (required with ``command_nodes``: a path
            on the cluster). Default :func:`default_workdir`.
        partition, account, walltime, cpus, memory, gpus, gpu_type,
        extra_directives, setup, apptainer_image, apptainer_args, export:
            the job's resources and environment, see
            :class:`~prefect_hpcviz.viz.backends.slurm_script.SlurmJobSettings`.
        python: the interpreter on the compute nodes for the standard server
            command (default: the gateway's own, right when they share a
            filesystem and an install).
        serve_host: address the server listens on on the compute node (it
            reports the node's name to the gateway); "127.0.0.1" only when the
            gateway runs on that node.
        command_nodes: login nodes to run sbatch & co. on over ssh, tried in
            order; empty: run them on this machine.
        ssh_user, ssh_identity_file, ssh_options, ssh_config, connect_timeout_s:
            see :class:`~prefect_hpcviz.viz.backends.command_nodes.SshCommandNodes`.
        command_timeout_s: seconds a Slurm command may take before it counts
            as not answering.
        retries: attempts for a Slurm query that does not answer, with backoff.
        stop_timeout_s: how long :meth:`stop` waits for the job to leave the queue.
        gateway_id: the gateway that owns the jobs (it passes its own): jobs are
            tagged with it and the workdir, and :meth:`list_jobs` lists only
            those, so gateways sharing a folder never reap each other's jobs.

    Example:
        >>> backend = SlurmBackend(partition="debug", walltime="00:30:00", workdir="/tmp/viz-jobs")
        >>> "#SBATCH --time=00:30:00" in backend.job_script(JobSpec("viz", ["python", "app.py"]), "/tmp/x.env")
        True
    """

    kind = "slurm"

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        partition: str | None = None,
        account: str | None = None,
        walltime: str = "01:00:00",
        cpus: int = 1,
        memory: str | int | None = "2G",
        gpus: int = 0,
        gpu_type: str | None = None,
        extra_directives: Sequence[str] = (),
        setup: Sequence[str] = (),
        apptainer_image: str | None = None,
        apptainer_args: Sequence[str] = (),
        export: str = "NONE",
        python: str | None = None,
        serve_host: str = "0.0.0.0",
        command_nodes: Sequence[str] | None = None,
        ssh_user: str | None = None,
        ssh_identity_file: str | None = None,
        ssh_options: Sequence[str] = (),
        ssh_config: str | None = None,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 30.0,
        retries: int = 3,
        stop_timeout_s: float = 40.0,
        gateway_id: str | None = None,
    ) -> None:
        self.settings = SlurmJobSettings(
            partition=partition,
            account=account,
            walltime=walltime,
            cpus=cpus,
            memory=memory,
            gpus=gpus,
            gpu_type=gpu_type,
            extra_directives=list(extra_directives),
            setup=list(setup),
            apptainer_image=apptainer_image,
            apptainer_args=list(apptainer_args),
            export=export,
        )
        self.runner: CommandRunner
        if command_nodes:
            if not workdir or not str(workdir).startswith("/"):
                raise InputError(
                    "workdir",
                    "is needed as an absolute path on the cluster when command_nodes are given",
                    "give a folder on the cluster's shared filesystem, e.g. /home/me/.hpcviz/slurm-jobs",
                )
            self.runner = SshCommandNodes(
                list(command_nodes),
                user=ssh_user,
                identity_file=ssh_identity_file,
                connect_timeout_s=connect_timeout_s,
                ssh_options=list(ssh_options),
                ssh_config=ssh_config,
            )
        else:
            self.runner = LocalCommands()
        self.workdir = str(workdir) if workdir else str(default_workdir())
        self.python = python
        self.serve_host = serve_host
        self.command_timeout_s = float(command_timeout_s)
        self.retries = max(1, int(retries))
        self.stop_timeout_s = float(stop_timeout_s)
        # The job comment: which gateway (and folder) a job belongs to, so a reaper lists only its own.
        owner = self.workdir if not gateway_id else f"{self.workdir}\0{gateway_id}"
        self.tag = "hpcviz:" + hashlib.sha256(owner.encode()).hexdigest()[:12]
        self._last: dict[str, JobStatus] = {}
        self._ended: dict[str, JobStatus] = {}
        self._env_files: dict[str, str] = {}
        self._stopping: set[str] = set()
        self._never_starts: set[str] = set()

    def __repr__(self) -> str:
        return f"SlurmBackend(workdir={self.workdir!r}, runner={self.runner!r})"

    @property
    def walltime_s(self) -> int:
        """The jobs' time limit in seconds."""
        return self.settings.walltime_s

    # ------------------------------------------------------------------ submit
    def server_command(self, spec: JobSpec) -> list[str]:
        """The command the job runs: the standard server with this site's python and host."""
        if spec.assignment is None:
            return [str(part) for part in spec.command]
        python = self.python or str(spec.command[0])
        return [python, "-m", _SERVE_MODULE, *map(str, spec.assignment["argv"]), "--host", self.serve_host]

    def job_script(self, spec: JobSpec, env_file: str) -> str:
        """The batch script for ``spec`` (no secret in it; see the module docstring)."""
        return render_job_script(
            self.settings,
            self.server_command(spec),
            job_name=_safe_name(spec.name),
            workdir=self.workdir,
            env_file=env_file,
            comment=self.tag,
        )

    async def submit(self, spec: JobSpec) -> str:
        """Write the job's environment file, sbatch the script; the Slurm job id."""
        if not spec.command:
            raise InputError(f"job {spec.name}", "the command is empty", "give the program to run")
        if isinstance(self.runner, LocalCommands):
            Path(self.workdir).mkdir(parents=True, exist_ok=True, mode=0o700)
        env_file = f"{self.workdir}/.env-{secrets.token_hex(8)}"
        await self._with_retries(lambda: self.runner.write_file(env_file, render_env_file(spec.env)))
        script = self.job_script(spec, env_file)
        try:
            result = await self._with_retries(
                lambda: self.runner.run(["sbatch", "--parsable"], input=script, timeout=self.command_timeout_s),
                unanswered_only=True,
            )
        except CommandError as exc:
            await _quietly(self.runner.run(["rm", "-f", env_file], timeout=self.command_timeout_s))
            message = _sbatch_problem(exc)
            raise LaunchError(
                f"sbatch refused the viz server job: {message}. Check the launcher's partition, "
                f"memory, cpus, gpus and walltime against the cluster (sinfo; scontrol show node)."
            ) from exc
        job_id = result.stdout.strip().split(";")[0]
        if not _JOB_ID.match(job_id):
            raise LaunchError(f"sbatch answered {result.stdout.strip()!r}, not a job id")
        self._env_files[job_id] = env_file
        self._last[job_id] = JobStatus(JobState.QUEUED)
        return job_id

    # ------------------------------------------------------------------- state
    async def state(self, job_id: str) -> JobStatus:
        """queued (with Slurm's reason), starting, running (node, end time), done or failed."""
        _check(job_id)
        if job_id in self._ended:
            return self._ended[job_id]
        try:
            status = await self._with_retries(lambda: self._query(job_id))
        except CommandError as exc:
            last = self._last.get(job_id, JobStatus(JobState.QUEUED, reason="waiting for Slurm to answer"))
            log.warning("Slurm did not answer about job %s (%s); keeping its last state %s", job_id, exc, last.state.value)
            return last
        if status.state.ended:
            self._ended[job_id] = status
            self._last.pop(job_id, None)
        else:
            self._last[job_id] = status
        if status.state in (JobState.STARTING, JobState.RUNNING):
            self._env_files.pop(job_id, None)  # the job script reads and removes it
        elif status.state.ended and job_id not in self._never_starts:
            await self._remove_env_file(job_id)  # ended without running (e.g. cancelled while queued)
        return status

    async def _remove_env_file(self, job_id: str) -> None:
        env_file = self._env_files.pop(job_id, None)
        if env_file:
            await _quietly(self.runner.run(["rm", "-f", env_file], timeout=self.command_timeout_s))

    async def _query(self, job_id: str) -> JobStatus:
        result = await self.runner.run(
            ["scontrol", "show", "job", "-o", job_id], timeout=self.command_timeout_s, check=False
        )
        if result.returncode != 0:
            if "Invalid job id" in result.stderr + result.stdout:
                return await self._forgotten(job_id)
            raise CommandError(result, "failed", "Slurm may be busy; retrying")
        fields = dict(_FIELD.findall(result.stdout))
        slurm_state = fields.get("JobState", "").split("+")[0]
        if not slurm_state:
            raise CommandError(result, "answered without a JobState", "Slurm may be busy; retrying")
        node = _node(fields.get("NodeList") or fields.get("BatchHost"))
        if slurm_state in QUEUED_STATES:
            reason = fields.get("Reason", "")
            reason = "" if reason == "None" else reason
            if reason.split(",")[0] in NEVER_STARTS:
                self._never_starts.add(job_id)  # failed for the gateway, still pending for Slurm
                return JobStatus(
                    JobState.FAILED,
                    reason=f"Slurm will not start the job as requested: {reason} "
                    f"({PENDING_REASONS.get(reason.split(',')[0], '')}). Change the launcher's settings",
                )
            return JobStatus(JobState.QUEUED, reason=reason)
        if slurm_state in STARTING_STATES:
            return JobStatus(JobState.STARTING, node=node)
        if slurm_state in RUNNING_STATES:
            return JobStatus(JobState.RUNNING, node=node, ends_at=_ends_at(fields))
        status = self._ended_status(job_id, slurm_state, fields.get("ExitCode", ""), node)
        await self._remember(job_id, status)
        return status

    def _ended_status(self, job_id: str, slurm_state: str, exit_code: str, node: str | None) -> JobStatus:
        code, _, signal = exit_code.partition(":")
        if job_id in self._stopping:
            return JobStatus(JobState.DONE, reason="stopped on request", node=node)
        if slurm_state == "COMPLETED" and code in ("0", ""):
            return JobStatus(JobState.DONE, node=node)
        if slurm_state == "CANCELLED":
            return JobStatus(JobState.FAILED, reason="the Slurm job was cancelled (scancel)", node=node)
        if slurm_state in _ENDED_REASONS:
            return JobStatus(JobState.FAILED, reason=_ENDED_REASONS[slurm_state], node=node)
        if code not in ("", "0"):
            return JobStatus(JobState.FAILED, reason=f"exit code {code}", node=node)
        if signal not in ("", "0"):
            return JobStatus(JobState.FAILED, reason=f"killed by signal {signal}", node=node)
        return JobStatus(JobState.FAILED, reason=f"Slurm job state {slurm_state}", node=node)

    async def _remember(self, job_id: str, status: JobStatus) -> None:
        record = {"state": status.state.value, "reason": status.reason, "node": status.node, "at": time.time()}
        await _quietly(self.runner.write_file(self._path(job_id, "exit"), json.dumps(record) + "\n"))

    async def _forgotten(self, job_id: str) -> JobStatus:
        """Slurm no longer lists the job: answer from what was written down."""
        record = _json(await self.runner.tail(self._path(job_id, "exit"), 1))
        if record.get("state") in ("done", "failed"):
            return JobStatus(JobState(record["state"]), reason=record.get("reason", ""), node=record.get("node"))
        if job_id in self._stopping:
            return JobStatus(JobState.DONE, reason="stopped on request")
        started = (await self.runner.tail(self._path(job_id, "started"), 1)).strip()
        if started:
            node = _json(started).get("node", "its node")
            return JobStatus(
                JobState.FAILED,
                reason=f"the job ended on {node} while no gateway watched it (exit status unknown: "
                "Slurm no longer lists it and accounting is off)",
                node=node,
            )
        return JobStatus(JobState.FAILED, reason="Slurm no longer knows the job, and it never started")

    # -------------------------------------------------------------------- stop
    async def stop(self, job_id: str) -> None:
        """scancel the job (SIGTERM, then SIGKILL after Slurm's KillWait); wait until it left the queue."""
        _check(job_id)
        status = await self.state(job_id)
        if status.state.ended and job_id not in self._never_starts:
            return  # it ended by itself: keep its own reason
        self._stopping.add(job_id)
        await self._with_retries(lambda: self.runner.run(["scancel", job_id], timeout=self.command_timeout_s))
        deadline = time.monotonic() + self.stop_timeout_s
        delay = 0.1
        while time.monotonic() < deadline:
            result = await _quietly(
                self.runner.run(["squeue", "-h", "-j", job_id, "-o", "%T"], timeout=self.command_timeout_s, check=False)
            )
            if result is not None and result.returncode == 0 and not result.stdout.strip():
                break  # not pending, running or completing any more: its processes are gone
            if result is not None and "Invalid job id" in result.stderr:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        else:
            log.warning("job %s is still in the queue %g s after scancel", job_id, self.stop_timeout_s)
        self._ended.pop(job_id, None)
        self._last.pop(job_id, None)
        self._never_starts.discard(job_id)
        await self.state(job_id)
        await self._remove_env_file(job_id)  # cancelled before it started: the key must not stay on disk

    # -------------------------------------------------------------------- logs
    async def logs(self, job_id: str, tail: int = 100) -> str:
        """The last ``tail`` lines of the job's output (stdout and stderr), "" before it starts."""
        _check(job_id)
        if tail <= 0:
            return ""
        return await self._with_retries(lambda: self.runner.tail(self._path(job_id, "log"), tail))

    async def list_jobs(self) -> dict[str, JobStatus]:
        """This backend's jobs that have not ended (those with its tag in the job comment)."""
        result = await self._with_retries(
            lambda: self.runner.run(["squeue", "-h", "--me", "-o", "%i|%T|%r|%N|%k"], timeout=self.command_timeout_s)
        )
        jobs = {}
        for line in result.stdout.splitlines():
            job_id, state, reason, nodes, comment = (line.split("|", 4) + [""] * 5)[:5]
            if comment.strip() != self.tag:
                continue
            if state in QUEUED_STATES:
                jobs[job_id] = JobStatus(JobState.QUEUED, reason="" if reason == "None" else reason)
            elif state in STARTING_STATES or state in RUNNING_STATES:
                jobs[job_id] = JobStatus(JobState.RUNNING, node=_node(nodes))
        return jobs

    # ----------------------------------------------------------------- helpers
    def _path(self, job_id: str, suffix: str) -> str:
        return f"{self.workdir}/hpcviz-{job_id}.{suffix}"

    async def _with_retries(self, call, *, unanswered_only: bool = False):
        """``await call()``, retrying a Slurm or command node that does not answer, with backoff.

        ``unanswered_only``: retry only when the command never ran (no node
        answered), e.g. for sbatch, where a retry after a timeout could submit twice.
        """
        delay = 0.25
        for attempt in range(1, self.retries + 1):
            try:
                return await call()
            except NodesUnavailable:
                if attempt == self.retries:
                    raise
            except CommandError as exc:
                if unanswered_only or not _transient(exc) or attempt == self.retries:
                    raise
            log.info("Slurm did not answer (attempt %d of %d); retrying in %.2f s", attempt, self.retries, delay)
            await asyncio.sleep(delay)
            delay *= 2


def _transient(exc: CommandError) -> bool:
    """True unless the command answered with a definite refusal."""
    text = exc.result.stderr + exc.result.stdout
    if exc.result.returncode == 127:
        return False  # the program is missing: retrying will not help
    return "Invalid job id" not in text and "Batch job submission failed" not in text


def _sbatch_problem(exc: CommandError) -> str:
    text = (exc.result.stderr or exc.result.stdout).strip()
    lines = [line.removeprefix("sbatch: error: ") for line in text.splitlines() if line.strip()]
    return "; ".join(lines[-3:]) or str(exc)


def _ends_at(fields: dict[str, str]) -> float | None:
    limit, run = fields.get("TimeLimit", ""), fields.get("RunTime", "")
    try:
        return time.time() + walltime_seconds(limit) - walltime_seconds(run)
    except InputError:  # UNLIMITED, NOT_SET
        return None


def _json(text: str) -> dict:
    """A one-line JSON record written by the job script or the backend ({} when unreadable)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _node(nodelist: str | None) -> str | None:
    if not nodelist or nodelist in ("(null)", "None"):
        return None
    return nodelist


def _check(job_id: str) -> None:
    if not _JOB_ID.match(str(job_id)):
        raise InputError(f"job id {job_id!r}", "is not a Slurm job id", "pass the id SlurmBackend.submit returned")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "hpcviz"


async def _quietly(awaitable):
    try:
        return await awaitable
    except (CommandError, OSError) as exc:
        log.warning("%s", exc)
        return None


__all__ = ["NEVER_STARTS", "PENDING_REASONS", "SlurmBackend", "default_workdir"]
