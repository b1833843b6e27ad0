"""Launcher blocks: where the gateway starts a visualization's server."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field


class LocalLauncher(Block):
    """Start viz servers as processes on the gateway's own machine.

    The gateway runs ``python -m prefect_hpcviz.viz.serve`` when someone opens
    the link, and stops it when the session has been idle for the gateway's
    idle limit (``hpcviz gateway --idle-timeout``).

    Example:
        >>> visualize_simulation("run/output.pvd", launcher=LocalLauncher(workdir="/scratch/viz-logs"))
    """

    _block_type_name = "Local Launcher"
    _description = "Start visualization servers as local processes on the gateway's machine."
    _documentation_url = "https://github.com/prefect-hpcviz/prefect-hpcviz#blocks"

    workdir: str | None = Field(
        default=None, description="Folder for server logs; the gateway's state folder when empty."
    )
    command: list[str] | None = Field(
        default=None,
        description=(
            "Custom server command, a list of words; the gateway fills in {python}, {app}, "
            "{data}, {report_url}, {idle_timeout}, {session_id} and {viz_id}. The session key "
            "is never a placeholder: the server finds it in HPCVIZ_SESSION_KEY."
        ),
    )
    reverse: bool = Field(
        default=False,
        description=(
            "The server dials the gateway instead of listening for it: for nodes that accept no "
            "inbound connections (the gateway's internal URL must be reachable from them)."
        ),
    )

    def launcher_spec(self) -> dict[str, Any]:
        """What the gateway needs to start servers this way (sent at registration)."""
        options = self.model_dump(include={"workdir", "command"})
        options = {k: v for k, v in options.items() if v is not None}
        if self.reverse:
            options["reverse"] = True
        return {"kind": "local", "options": options}


class SlurmLauncher(Block):
    """Start viz servers as Slurm batch jobs, from the gateway's machine or over ssh.

    Opening the link submits one job (``sbatch``); the waiting page shows
    "queued (Resources)", "starting on NODE", then the view. The session key
    reaches the job in a 0600 file, never on a command line or in the job
    script. With ``command_nodes`` the gateway runs sbatch/scontrol/scancel
    over ssh on the first login node that answers.

    Examples:
        Jobs on the gateway's own cluster:

        >>> SlurmLauncher(partition="viz", walltime="02:00:00", memory="8G",
        ...               setup=["module load mesa"]).save("viz-slurm")

        Through two login nodes, with a GPU, inside a container:

        >>> SlurmLauncher(command_nodes=["login1.hpc.example", "login2.hpc.example"],
        ...               ssh_user="vizsvc", ssh_identity_file="/etc/hpcviz/id_ed25519",
        ...               workdir="/home/vizsvc/.hpcviz/slurm-jobs", gpus=1,
        ...               apptainer_image="/apps/hpcviz.sif", python="python3")
    """

    _block_type_name = "Slurm Launcher"
    _description = "Start visualization servers as Slurm batch jobs (sbatch), locally or through login nodes over ssh."
    _documentation_url = "https://github.com/prefect-hpcviz/prefect-hpcviz#slurm"

    partition: str | None = Field(default=None, description="Partition (the cluster's default when empty).")
    account: str | None = Field(default=None, description="Account to charge (sbatch --account).")
    walltime: str = Field(
        default="01:00:00",
        description="Time limit (HH:MM:SS); the user is warned before it and the session ends cleanly.",
    )
    cpus: int = Field(default=1, description="CPU cores per viz server job.")
    memory: str | None = Field(default="2G", description="Memory per job (sbatch --mem), within a node's RealMemory.")
    gpus: int = Field(default=0, description="GPUs per job (sbatch --gres=gpu:N).")
    gpu_type: str | None = Field(default=None, description="GPU model for --gres, e.g. a100.")
    extra_directives: list[str] = Field(default_factory=list, description='More sbatch options, e.g. ["--qos=viz"].')
    setup: list[str] = Field(
        default_factory=list, description='Shell lines run before the server, e.g. ["module load mesa"].'
    )
    apptainer_image: str | None = Field(default=None, description="Run the server inside this Apptainer image.")
    python: str | None = Field(
        default=None, description="Python on the compute nodes with prefect-hpcviz installed (the gateway's when empty)."
    )
    serve_host: str = Field(
        default="0.0.0.0", description="Address the server listens on on the compute node."
    )
    workdir: str | None = Field(
        default=None,
        description="Folder for job logs on a filesystem the compute nodes share (needed with command_nodes).",
    )
    command_nodes: list[str] = Field(
        default_factory=list,
        description="Login nodes to submit from over ssh, tried in order (empty: this machine).",
    )
    ssh_user: str | None = Field(default=None, description="ssh login name on the command nodes.")
    ssh_identity_file: str | None = Field(default=None, description="Private key file for ssh (key authentication).")
    ssh_options: list[str] = Field(default_factory=list, description='Extra ssh -o options, e.g. ["Port=2222"].')
    reverse: bool = Field(
        default=False,
        description=(
            "The server dials the gateway instead of listening for it: for nodes that accept no "
            "inbound connections (the gateway's internal URL must be reachable from them)."
        ),
    )

    def launcher_spec(self) -> dict[str, Any]:
        """What the gateway needs to start servers this way (sent at registration).

        Example:
            >>> SlurmLauncher(partition="viz").launcher_spec()["kind"]
            'slurm'
        """
        settings = set(type(self).model_fields) - {"block_type_slug", "reverse"}
        options = self.model_dump(include=settings)
        options = {k: v for k, v in options.items() if v not in (None, [])}
        if self.reverse:
            options["reverse"] = True
        return {"kind": "slurm", "options": options}
