"""The sbatch job script of a viz server job, rendered from settings.

The script works without a scheduler (tests assert on its ``#SBATCH`` lines
before anything is submitted) and holds no secret: the session key and the
rest of the job's environment are in a separate file (mode 0600, in a 0700
folder) that the script sources and deletes before it starts the server.

Example:
    >>> settings = SlurmJobSettings(partition="debug", walltime="00:30:00", memory="2G",
    ...                             setup=["module load paraview"])
    >>> script = render_job_script(settings, ["python", "-m", "prefect_hpcviz.viz.serve"],
    ...                            job_name="hpcviz-x", workdir="/scratch/viz", env_file="/scratch/viz/.env-1")
    >>> "#SBATCH --partition=debug" in script and "#SBATCH --mem=2048M" in script
    True
    >>> script.rstrip().splitlines()[-1]
    'exec python -m prefect_hpcviz.viz.serve'
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from prefect_hpcviz.viz.errors import InputError

_WALLTIME = re.compile(
    r"^(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)|(?P<mm>\d+):(?P<ss>\d+)|(?P<only>\d+))$"
)
_MEMORY = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)(?:i?B)?$", re.IGNORECASE)
_UNIT_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def walltime_seconds(walltime: str) -> int:
    """Seconds in a Slurm time limit (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``).

    Example:
        >>> walltime_seconds("01:30:00"), walltime_seconds("2-00"), walltime_seconds("45")
        (5400, 172800, 2700)
    """
    match = _WALLTIME.match(str(walltime).strip())
    if not match:
        raise InputError(
            f"walltime {walltime!r}",
            "is not a Slurm time limit",
            'write "HH:MM:SS" (e.g. "01:00:00"), "MM", or "D-HH:MM:SS"',
        )
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if "only" in g:
        return g["only"] * 60
    if "mm" in g:
        return g["mm"] * 60 + g["ss"]
    if "h" in g:
        return g["h"] * 3600 + g["m"] * 60 + g["s"]
    return g["days"] * 86400 + g["dh"] * 3600 + g.get("dm", 0) * 60 + g.get("ds", 0)


def memory_megabytes(memory: str | int) -> int:
    """Megabytes (what ``#SBATCH --mem`` and a node's RealMemory count) in ``memory``.

    Example:
        >>> memory_megabytes("2G"), memory_megabytes("512MB"), memory_megabytes(1024), memory_megabytes("1.5GiB")
        (2048, 512, 1024, 1536)
    """
    match = _MEMORY.match(str(memory).strip())
    if not match or float(match.group("n")) <= 0:
        raise InputError(
            f"memory {memory!r}",
            "is not an amount of memory",
            'write e.g. "2G" or "512M" (per job; at most the node\'s RealMemory, see scontrol show node)',
        )
    return max(1, round(float(match.group("n")) * _UNIT_MB[match.group("unit").upper()]))


@dataclass
class SlurmJobSettings:
    """What a viz server job asks Slurm for, and how its environment is set up.

    Args:
        partition: ``--partition`` (the cluster's default when empty).
        account: ``--account`` to charge.
        walltime: ``--time``; the gateway warns the user before it runs out
            and stops the session cleanly just before.
        cpus: ``--cpus-per-task``.
        memory: ``--mem`` per job, e.g. "2G"; must fit the node's RealMemory.
        gpus: GPUs per job (``--gres=gpu:N``, or ``gpu:TYPE:N`` with ``gpu_type``).
        gpu_type: GPU model for ``--gres`` (e.g. "a100").
        extra_directives: more ``#SBATCH`` options, e.g. ["--qos=interactive"].
        setup: shell lines run before the server, e.g. ["module load mesa"].
        apptainer_image: run the server inside this Apptainer/Singularity image.
        apptainer_args: extra ``apptainer exec`` options, e.g. ["--bind", "/scratch"].
        export: sbatch ``--export``: "NONE" (default) starts the job from the
            user's login environment, not the gateway's (whose own secrets stay
            out of the job); "ALL" passes the submitting environment.

    Example:
        >>> SlurmJobSettings(gpus=1, gpu_type="a100").directives()[-1]
        '--gres=gpu:a100:1'
    """

    partition: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    cpus: int = 1
    memory: str | int | None = "2G"
    gpus: int = 0
    gpu_type: str | None = None
    extra_directives: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    apptainer_image: str | None = None
    apptainer_args: list[str] = field(default_factory=list)
    export: str = "NONE"

    def __post_init__(self) -> None:
        self.walltime_s = walltime_seconds(self.walltime)
        if self.memory is not None:
            memory_megabytes(self.memory)
        if int(self.cpus) < 1:
            raise InputError(f"cpus {self.cpus!r}", "must be at least 1", "give the CPU cores per job")
        if int(self.gpus) < 0:
            raise InputError(f"gpus {self.gpus!r}", "must not be negative", "give 0 or more GPUs")
        for name in ("extra_directives", "setup", "apptainer_args"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise InputError(name, "must be a list of strings", f'give e.g. {name}=["..."]')
        for directive in self.extra_directives:
            if not directive.startswith("-") or "\n" in directive:
                raise InputError(
                    f"extra_directives {directive!r}", "is not an sbatch option", 'write e.g. "--qos=debug"'
                )

    def directives(self) -> list[str]:
        """The sbatch options these settings stand for (without the job's own paths)."""
        out = []
        if self.partition:
            out.append(f"--partition={self.partition}")
        if self.account:
            out.append(f"--account={self.account}")
        out.append(f"--time={self.walltime}")
        out.append("--nodes=1")
        out.append("--ntasks=1")
        out.append(f"--cpus-per-task={int(self.cpus)}")
        if self.memory is not None:
            out.append(f"--mem={memory_megabytes(self.memory)}M")
        if self.gpus:
            kind = f"gpu:{self.gpu_type}" if self.gpu_type else "gpu"
            out.append(f"--gres={kind}:{int(self.gpus)}")
        return out + list(self.extra_directives)


def render_job_script(
    settings: SlurmJobSettings,
    command: Sequence[str],
    *,
    job_name: str,
    workdir: str,
    env_file: str,
    comment: str = "",
) -> str:
    """The batch script: directives, environment, setup lines, then ``exec`` of the server.

    The server replaces the script's shell (``exec``), so it is the job's
    main process: scancel and the time limit signal it directly, its exit
    status is the job's, and nothing is left behind when it ends. Before
    that the script writes ``hpcviz-<job id>.started`` (node, pid, time) next
    to the log, which answers for the job once Slurm has forgotten it.
    """
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}"]
    lines += [f"#SBATCH {d}" for d in settings.directives()]
    lines += [
        f"#SBATCH --chdir={workdir}",
        f"#SBATCH --output={workdir}/hpcviz-%j.log",
        f"#SBATCH --export={settings.export}",
    ]
    if comment:
        lines.append(f"#SBATCH --comment={comment}")
    quoted_env = shlex.quote(env_file)
    lines += [
        "",
        "# The session key and the job's variables: a 0600 file, read once, then removed.",
        f"if [ -f {quoted_env} ]; then set -a; . {quoted_env}; set +a; rm -f {quoted_env}; fi",
        "umask 077",
        'printf \'{"node": "%s", "pid": %d, "started_at": %s}\\n\' "${SLURMD_NODENAME:-$(hostname)}" $$ "$(date +%s.%N)" \\',
        f"  > {shlex.quote(workdir)}/hpcviz-$SLURM_JOB_ID.started",
    ]
    if settings.setup:
        lines += ["", "# Environment setup"]
        lines += list(settings.setup)
    argv = [str(part) for part in command]
    if settings.apptainer_image:
        container = ["apptainer", "exec"]
        if settings.gpus:
            container.append("--nv")
        argv = [*container, *settings.apptainer_args, settings.apptainer_image, *argv]
    lines += ["", "# The viz server, in the job's foreground", "exec " + shlex.join(argv)]
    return "\n".join(lines) + "\n"


def render_env_file(env: dict[str, str]) -> str:
    """Shell assignments for the job's variables (sourced with ``set -a``).

    Example:
        >>> print(render_env_file({"HPCVIZ_SESSION_KEY": "k3y", "HPCVIZ_TITLE": "run 1"}), end="")
        HPCVIZ_SESSION_KEY=k3y
        HPCVIZ_TITLE='run 1'
    """
    out = []
    for name, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"environment variable {name!r}", "is not a valid name", "use letters, digits and _")
        out.append(f"{name}={shlex.quote(str(value))}")
    return "\n".join(out) + "\n"
