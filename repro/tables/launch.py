"""A table's runs as SLURM job arrays, through ``submitit`` (``repro reproduce TABLE --launcher slurm``).

Each job (a (row, seed) run, or a seed ensemble of a row's seeds: ``repro.tables.jobs``) still trains as one
``repro fit`` subprocess, started and collected by the same code as the local pool (``repro.tables.execute``),
now inside a SLURM job (one array element per job) on a compute node of a shared file system: the same
``in_progress`` checkpoints, records and resume. Jobs that need the same resources go in one job array. Resources per run: GPUs = the row's ``devices`` (none
when its config trains on the CPU, ``trainer.accelerator: cpu``); time, partition, CPUs and memory from
the spec's ``slurm`` mapping, each overridable on the command line. A job that reaches its time limit
or is preempted gets a signal from SLURM before the kill (submitit's ``Checkpointable``): it stops its
``repro fit`` (which writes its checkpoint) and is requeued, continuing from that checkpoint. The runner
waits for every job, then the caller writes the page. ``--launcher local`` uses submitit's local executor
(jobs are processes of this machine): how this module is tested without a cluster.

A ``row.devices = k`` run is one SLURM task with k GPUs; ``repro fit`` starts its k DDP processes itself, so
the child is shown no SLURM task variables (Lightning would otherwise expect one SLURM task per device).
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import submitit
from rich.console import Console

from repro.tables.lock import TableLock
from repro.tables.execute import collect, print_result, resume_label, start
from repro.tables.jobs import Job
from repro.tables.processes import JobProcess
from repro.tables.spec import SpecError, TableSpec

__all__ = ["RunJob", "resources", "submit"]

_HIDDEN = ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_NPROCS", "SLURM_STEP_NUM_TASKS")
DEFAULT_TIME_MIN = 24 * 60


class RunJob(submitit.helpers.Checkpointable):
    """One table job: ``repro fit`` as a subprocess, then its runs' records; requeued on timeout / preemption."""

    def __init__(self, context: dict[str, Any], cpus: int, wandb: bool = False):
        self.context, self.cpus, self.wandb = context, cpus, wandb
        self._proc: JobProcess | None = None

    def __call__(self, job: Job) -> list[dict[str, Any]]:
        env = {k: v for k, v in os.environ.items() if k not in _HIDDEN}
        env.update(OMP_NUM_THREADS=str(self.cpus), MKL_NUM_THREADS=str(self.cpus))
        t0 = time.perf_counter()
        self._proc = start(job, env, job.wandb_args() if self.wandb else [])
        returncode = self._proc.wait()
        return collect(job, returncode, time.perf_counter() - t0, self.context)

    def checkpoint(self, job: Job) -> submitit.helpers.DelayedSubmission:
        """Before SLURM's kill: SIGTERM the training (it writes its checkpoint at the end of the step), then
        requeue this run, which continues from that checkpoint."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
        return submitit.helpers.DelayedSubmission(self, job)

    def __getstate__(self) -> dict[str, Any]:
        return {"context": self.context, "cpus": self.cpus, "wandb": self.wandb, "_proc": None}


def resources(spec: TableSpec, job: Job, config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """submitit parameters of ``job``: GPUs from its row's ``devices`` (none for a CPU config), time,
    partition, CPUs and memory from the spec's ``slurm`` mapping with ``overrides`` (CLI) over it."""
    settings = {**spec.slurm, **{k: v for k, v in overrides.items() if v is not None}}
    on_cpu = str((config.get("trainer") or {}).get("accelerator")) == "cpu"
    params: dict[str, Any] = {
        "name": f"repro-{spec.name}", "nodes": 1, "tasks_per_node": 1,
        "timeout_min": int(settings.get("time_min", DEFAULT_TIME_MIN)),
        "cpus_per_task": int(settings.get("cpus_per_task", job.row.devices if on_cpu else 4 * job.row.devices)),
    }
    if not on_cpu:
        params["gpus_per_node"] = job.row.devices
    if "mem_gb" in settings:
        params["mem_gb"] = int(settings["mem_gb"])
    if "partition" in settings:
        params["slurm_partition"] = str(settings["partition"])
    return params


def submit(spec: TableSpec, todo: list[Job], configs: dict[str, dict[str, Any]], context: dict[str, Any],
           launcher: str, overrides: dict[str, Any], console: Console, lock: TableLock,
           wandb: bool = False) -> list[dict[str, Any]]:
    """Submit ``todo`` as job arrays (one per distinct resource set, an element per job) to ``launcher``
    (``slurm`` or ``local``), wait for all of them, and return their runs' records (each run of a job that died
    without them is reported as such); ``wandb``: each run also logs to W&B."""
    if not todo:
        return []
    folder = spec.runs_dir / "submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if launcher == "slurm" else "local")
    groups: dict[tuple, list[Job]] = {}
    for job in todo:
        params = resources(spec, job, configs[job.row.id], overrides)
        groups.setdefault(tuple(sorted(params.items())), []).append(job)
    jobs: list[tuple[Job, Any]] = []
    try:
        for key, members in groups.items():
            params = dict(key)
            executor.update_parameters(**params)
            for job in members:
                console.print(f"  {job.name}{resume_label(job)}", markup=False)
            submitted = executor.map_array(RunJob(context, params["cpus_per_task"], wandb), members)
            jobs += list(zip(members, submitted))
    except (submitit.core.utils.FailedJobError, FileNotFoundError, RuntimeError) as err:
        raise SpecError(f"--launcher {launcher}: submitting failed: {err}") from None
    lock.add(jobs=[job.job_id for _, job in jobs], submitit_folder=str(folder))
    console.print(f"{spec.name}: submitted {len(jobs)} job(s) as {len(groups)} {launcher} job array(s); logs in "
                  f"{folder}; waiting for them (Ctrl-C stops waiting, the jobs go on)", markup=False)
    written = []
    for handle in submitit.helpers.as_completed([handle for _, handle in jobs], poll_frequency=2):
        job = next(j for j, h in jobs if h is handle)
        try:
            records = handle.result()
        except Exception as err:  # noqa: BLE001 - the job died (killed, node failure): its runs are reported failed
            last = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            records = [{"row": run.row.id, "seed": run.seed, "status": "failed", "wall_seconds": 0.0,
                        "error": f"{launcher} job {handle.job_id}: {last[:300]}"} for run in job.runs]
        written += records
        for record in records:
            print_result(record, console)
    return written

