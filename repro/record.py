"""The run record: ``metrics.json`` in a run folder, the one file that says how a run ended and what it measured.

Its writers are the final evaluation (``finished``), the divergence stop (``diverged``) and the table
runner (``failed`` / ``stopped``, plus the run's command, versions and wall time); each writer adds the
``machine`` the run ran on (``machine``; records written before it lack the block). Its readers are the table
runner (which runs are done) and the pages. A record is read as ``finished`` only when the run reached the
length it was asked for (``steps_asked``): a record that says ``finished`` short of it reads as ``stopped``.
Everything about the file goes through this module: its name, the status values, an atomic write (a
reader never sees half a file) and a read that treats a missing or truncated file as no record. The two
helpers under those (``write_json_atomic``, ``read_json``) serve the other small JSON files of a run folder too
(a resumable run's ``progress.json``).
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from enum import Enum
from pathlib import Path
from typing import Any

from repro.portable import dumps, loads

__all__ = ["RECORD_FILE", "CURVE_TAIL", "CHECKPOINT_NAME", "checkpoint_in", "Status", "DONE", "RECORD_FIELDS", "record_path", "write_record", "read_record", "status_of",
           "steps_asked", "write_json_atomic", "read_json", "source_state", "cpu_model", "kernel_isa", "machine_kind",
           "TIMED_FIELDS", "machine", "process_seconds"]

RECORD_FILE = "metrics.json"
# The last fraction of training whose curve points the tables' convergence rule judges (repro.tables.curves); the
# evaluation's ``tail_points`` fall in it.
CURVE_TAIL = 0.2
CHECKPOINT_NAME = "last.ckpt"  # a resumable run's checkpoint, in its ``in_progress`` folder until it finishes
_IMPORTED = time.monotonic()  # process_seconds' origin where the kernel's start time cannot be read


def checkpoint_in(in_progress: Path) -> Path | None:
    """The resumable checkpoint an unfinished run (or job) left in its ``in_progress`` folder, if any."""
    ckpt = in_progress / CHECKPOINT_NAME
    return ckpt if ckpt.is_file() else None


class Status(str, Enum):
    """How a run ended, as ``record["status"]`` holds it."""

    FINISHED = "finished"  # trained to the end and evaluated
    DIVERGED = "diverged"  # stopped on a non-finite loss or weight: a result, not an error
    FAILED = "failed"  # crashed or was killed; rerun by the next ``repro reproduce``
    STOPPED = "stopped"  # ended short of the length asked for (max_time, interrupt); not done


DONE = (Status.FINISHED, Status.DIVERGED)  # a table skips these runs; a failed, stopped or missing run is run again

# Numeric top-level fields of a record a table column may show beside the registered metrics.
RECORD_FIELDS = ("generator_steps", "train_seconds", "wall_seconds", "seconds_per_generator_step")
# those of them read off the clock: comparable only between runs on one kind of machine
TIMED_FIELDS = ("train_seconds", "wall_seconds", "seconds_per_generator_step")


def record_path(folder: Path) -> Path:
    """The record file of the run whose files are in ``folder``."""
    return Path(folder) / RECORD_FILE


def write_json_atomic(data: dict[str, Any], path: Path) -> Path:
    """Write strict JSON (``repro.portable.dumps``: no bare Infinity / NaN) to a temporary file, then
    rename: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(data))
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if the file is missing, truncated or not an object; non-finite
    values come back as floats, from strict (``"Infinity"``) and older (bare ``Infinity``) files alike."""
    try:
        data = loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(record: dict[str, Any], folder: Path) -> Path:
    """Write ``record`` as the run record of ``folder``, atomically; returns its path."""
    return write_json_atomic(record, record_path(folder))


def read_record(folder: Path) -> dict[str, Any] | None:
    """The run record of ``folder``, or None (missing or truncated)."""
    return read_json(record_path(folder))


def steps_asked(record: dict[str, Any]) -> int | None:
    """The generator steps the run was asked for: the record's ``steps_asked``, else its config's
    ``trainer.max_steps`` when positive; None when the record does not say."""
    asked = record.get("steps_asked")
    if asked is None:
        trainer = (record.get("config") or {}).get("trainer") or {}
        asked = trainer.get("max_steps") if isinstance(trainer, dict) else None
    return asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else None


def status_of(record: dict[str, Any] | None) -> Status | None:
    """The record's status, or None for no record or a status this version does not know; ``finished`` short
    of ``steps_asked`` reads as ``stopped`` (a run is finished only when it reached its length)."""
    try:
        status = Status(record["status"]) if record else None
    except (KeyError, ValueError):
        return None
    if status is Status.FINISHED:
        asked, done = steps_asked(record), record.get("generator_steps")
        if asked is not None and isinstance(done, int) and done < asked:
            return Status.STOPPED
    return status


def source_state(root: Path) -> dict[str, Any]:
    """The git commit of the code that ran, and whether its inputs (repro/, configs/, the table specs) differed
    from it; generated pages, CSVs and figures under paper_tables/ are outputs and do not count."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"git_commit": None}
    dirty = git("diff", "--quiet", "HEAD", "--", "repro", "configs", "paper_tables/*.yaml").returncode != 0
    return {"git_commit": head.stdout.strip(), "git_dirty": dirty}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s "model name", else ``platform.processor()``; "" if neither says)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def kernel_isa(flags: set[str] | None = None) -> str:
    """The vector ISA torch's CPU kernels dispatch to, from the CPU's feature ``flags`` (``/proc/cpuinfo``'s when
    None) by ATen's rule (``compute_cpu_capability``: AVX512 needs avx512vl, bw, dq and fma, AVX2 needs avx2 and fma;
    ``ATEN_CPU_CAPABILITY`` overrides), without importing torch: what ``torch.backends.cpu.get_cpu_capability()``
    says on x86 ("DEFAULT" where neither applies)."""
    forced = os.environ.get("ATEN_CPU_CAPABILITY", "").upper()
    if forced in ("AVX512", "AVX2", "DEFAULT"):
        return forced
    if flags is None:
        try:
            with open("/proc/cpuinfo") as f:
                flags = set(next(ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")))
        except (OSError, StopIteration):
            flags = set()
    if {"avx512vl", "avx512bw", "avx512dq", "fma"} <= flags:
        return "AVX512"
    return "AVX2" if {"avx2", "fma"} <= flags else "DEFAULT"


def machine_kind(block: dict[str, Any] | None = None) -> tuple[str, str] | None:
    """The kind of CPU a record's ``machine`` ``block`` names, (model, kernel ISA), or this machine's (None), read
    without torch; None for a block without both (records before ``cpu_isa``)."""
    if block is None:
        return cpu_model(), kernel_isa()
    cpu, isa = block.get("cpu"), block.get("cpu_isa")
    return (cpu, isa) if isinstance(cpu, str) and isinstance(isa, str) else None


def machine(device: Any = None) -> dict[str, Any]:
    """What a run ran on, for its record's ``machine`` block: the CPU model, the vector instructions torch's CPU
    kernels dispatch to (``cpu_isa``: "AVX512", "AVX2", ...; one "AMD EPYC" name covers VMs whose fp32 throughput
    differs ~2.7x by it), the logical cores this process may use (its CPU affinity: a SLURM allocation's, not the
    whole node's), torch's intra-op threads in it, and the accelerator: the CUDA device's name and the visible count when ``device`` (the module's; None: whatever this
    process sees) is a CUDA device, else ``"cpu"`` and 0. No host name, no path: the kind of machine, not which."""
    import torch  # here, not at the top: the table planner reads records without importing torch

    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return {
        "cpu": cpu_model(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "logical_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "accelerator": torch.cuda.get_device_name(device) if cuda else "cpu",
        "accelerator_count": torch.cuda.device_count() if cuda else 0,
    }


def process_seconds() -> float:
    """Wall seconds since this process started: on Linux from its start time in ``/proc/self/stat`` (clock ticks
    after boot, against ``CLOCK_BOOTTIME``), so interpreter start and imports count, as they do in a parent's timing
    of the process from its launch; elsewhere since this module was imported."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime (fields[0] is field 3)
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, IndexError, ValueError, AttributeError):
        return time.monotonic() - _IMPORTED
