"""How a table job's ``repro`` process starts: forked from a server that imported torch, Lightning and repro once
(multiprocessing's forkserver), or as a fresh ``python -m repro`` subprocess.

A fresh process spends ~9 CPU-seconds importing before its first step (most of a short run on a CPU); a forked one
starts in milliseconds. Forking is used only where the child is the same program as a fresh one: a CPU job of one
device (no CUDA state, no DDP launcher re-running ``sys.argv``) whose folder does not hold another ``repro`` package
(``python -m`` there would import that one), forked from a server that started under the job's own start-up
environment (``PYTHON*``, ``LD_*``, OpenMP / MKL / torch variables: it is restarted when they change). The child sets
what a fresh process sets at start: working folder, environment, standard streams, ``sys.path`` and ``sys.argv`` as
``-m`` does, and it runs the ``atexit`` hooks a normal exit runs.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
from multiprocessing import forkserver
from pathlib import Path

__all__ = ["ForkedProcess", "JobProcess", "can_fork", "die_with_parent", "end_with", "start_process",
           "startup_variables"]

PRELOAD = ["repro.cli", "repro.fit"]  # what `repro fit` imports before its first step
_PACKAGE = Path(__file__).resolve().parents[1]
_STARTUP = ("PYTHON", "LD_", "OMP_", "GOMP_", "KMP_", "MKL_", "TORCH", "MALLOC_")
_server_startup: dict[str, str] | None = None  # the start-up variables the running server began with


def die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies, so no orphan trains on (a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def end_with(pid: int) -> None:
    """SIGTERM this process when process ``pid`` ends, as ``die_with_parent`` does for a parent: a thread waiting on
    a pidfd (Linux >= 5.3); where there is none, when this process's parent ends."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        os.kill(os.getpid(), signal.SIGTERM)
        return
    except (AttributeError, OSError):
        die_with_parent()
        return

    def watch() -> None:
        select.select([handle], [], [])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-runner", daemon=True).start()


def can_fork(argv: list[str], cwd: Path, env: dict[str, str], devices: int) -> bool:
    """Whether ``argv`` (``python -m repro ...``) can run forked from the preloaded server and be the same run: a
    Linux job of one device that is shown no GPU choice, in a folder whose ``repro`` package, if any, is this one."""
    own = cwd / "repro" / "__init__.py"
    return (sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods()
            and hasattr(forkserver._forkserver, "_stop") and argv[1:3] == ["-m", "repro"] and devices == 1
            and "CUDA_VISIBLE_DEVICES" not in env and (not own.exists() or own.resolve().parent == _PACKAGE))


def startup_variables(env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` that Python, the loader, OpenMP / MKL and torch read when a process starts."""
    return {k: v for k, v in env.items() if k.startswith(_STARTUP)}


def _serve(env: dict[str, str]) -> None:
    """Have the preloaded server running under ``env``'s start-up variables: started (or restarted, when it began
    under others) with them in this process's environment, which it inherits, for the moment it is spawned."""
    global _server_startup
    wanted = startup_variables(env)
    if wanted == _server_startup:
        return
    forkserver._forkserver._stop()  # nothing when none runs; the Python test suite's own way to stop it
    saved = dict(os.environ)
    try:
        for name in startup_variables(saved):
            del os.environ[name]
        os.environ.update(wanted)
        forkserver.set_forkserver_preload(PRELOAD)
        forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    _server_startup = wanted


def _child(args: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str, append: bool,
           runner: int) -> None:
    """The forked process: the start-up state of ``python -m repro ARGS`` in ``cwd``, then the command; it ends
    with the ``runner`` process that asked for it (whose child a fresh process would be), not with the server."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, flags, 0o644)
        os.dup2(target, fd)
        os.close(target)
    end_with(runner)
    sys.path.insert(0, cwd)  # as `python -m` puts the working folder first
    sys.argv = ["-m", *args]
    try:
        runpy.run_module("repro", run_name="__main__", alter_sys=True)  # what `python -m repro` runs
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends its children with os._exit, which skips them


class ForkedProcess:
    """A forked ``repro`` command with the part of ``subprocess.Popen``'s interface the runners use."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], stdout: Path, stderr: Path,
                 append: bool) -> None:
        _serve(env)
        self.args = argv
        child = (argv[3:], str(cwd), env, str(stdout), str(stderr), append, os.getpid())
        self._process = multiprocessing.get_context("forkserver").Process(target=_child, args=child, name="repro")
        self._process.start()

    @property
    def returncode(self) -> int | None:
        """The exit code, or minus the signal that ended it (as ``Popen``); None while it runs."""
        return self._process.exitcode

    def poll(self) -> int | None:
        """``returncode``, as ``Popen.poll``."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self._process.exitcode

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()


JobProcess = subprocess.Popen | ForkedProcess


def start_process(argv: list[str], cwd: Path, env: dict[str, str], stdout: Path, stderr: Path, append: bool,
                  devices: int = 1) -> JobProcess:
    """Start ``argv`` in ``cwd`` with ``env``, its output to ``stdout`` / ``stderr`` (appended to, or new):
    forked from the preloaded server where ``can_fork`` says it is the same run, else a fresh subprocess."""
    if can_fork(argv, cwd, env, devices):
        return ForkedProcess(argv, cwd, env, stdout, stderr, append)
    mode = "a" if append else "w"
    with stdout.open(mode) as out, stderr.open(mode) as err:
        return subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, env=env,
                                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
