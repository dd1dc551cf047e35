"""Where jobs run: a local process pool (default) or a Ray cluster.

Both run the same function (``context.entry``, a ``module:function`` reference called as
``fn(job, context) -> summary dict``) with the same number of torch threads per job, so the
same seeds give the same predictions on either. A job's own failures come back as a summary
with ``status = "failed"``; only the infrastructure (a pool that broke, a Ray cluster that
does not answer) raises.

Local: ``--jobs N`` worker processes (spawned, so each has its own torch), each with
``threads = max(1, cores // N)`` torch threads, and tied to the parent's life (Linux
``PR_SET_PDEATHSIG``): killing the study kills its workers.

Ray: each job is a task declaring ``num_cpus = threads`` (and ``num_gpus``), retried on a lost
worker (``max_retries``). ``--address`` (or ``RAY_ADDRESS``) names a running cluster;
without one a local instance is started, bound to 127.0.0.1. Workers must see the study's
data roots and ``--out`` at the same paths (a shared filesystem on a real cluster).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import importlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_mer.convert.experiment.jobs import Job
from edge_mer.errors import EdgeMerError, InputError, MissingDependencyError

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Context:
    """What every job needs besides its own spec (picklable, small)."""

    entry: str  # "module:function" called as fn(job, context)
    out: str  # the study's --out folder
    threads: int = 1  # torch threads per job
    gpus: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_job(n_jobs: int) -> int:
    return max(1, cores() // max(1, n_jobs))


def _resolve(entry: str) -> Callable[[Job, Context], dict[str, Any]]:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def _limit_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    except (ImportError, RuntimeError):  # interop threads can only be set once per process
        pass


def run_one(job: Job, context: Context) -> dict[str, Any]:
    """Run ``job`` in this process with the context's thread count."""
    _limit_threads(context.threads)
    return _resolve(context.entry)(job, context)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - not glibc
        pass


def _pool_init(threads: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _limit_threads(threads)


def _local(jobs: Sequence[Job], context: Context, n_jobs: int) -> Iterator[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(
        max_workers=max(1, min(n_jobs, len(jobs))),
        mp_context=ctx,
        initializer=_pool_init,
        initargs=(context.threads,),
    ) as pool:
        futures = {pool.submit(run_one, j, context): j for j in jobs}
        try:
            for fut in cf.as_completed(futures):
                try:
                    yield fut.result()
                except cf.process.BrokenProcessPool as exc:
                    raise EdgeMerError(
                        f"a worker process died while running {futures[fut].key} ({exc}); "
                        "finished jobs are kept: rerun with --resume"
                    ) from None
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def check_address(address: str, timeout: float = 5.0) -> None:
    """Refuse, in one line, a Ray address where nothing answers (before Ray itself would
    retry for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--address {address!r}: expected HOST:PORT (the head's GCS address)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise EdgeMerError(
            f"Ray cluster at {address} does not answer ({exc.strerror or exc}): start it "
            "(ray start --head) or fix --address / RAY_ADDRESS"
        ) from None


def _ray_init(address: str | None) -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "--backend ray") from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    kw: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "ignore_reinit_error": True,
    }
    if address:
        check_address(address)
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=cores(), _node_ip_address="127.0.0.1", **kw)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeMerError(f"Ray cluster at {address or 'a new local instance'}: {first}") from None
    return ray


def _ray(
    jobs: Sequence[Job], context: Context, address: str | None, retries: int
) -> Iterator[dict[str, Any]]:
    ray = _ray_init(address)
    try:
        task = ray.remote(num_cpus=context.threads, num_gpus=context.gpus, max_retries=retries)(
            run_one
        )
        pending = {task.remote(j, context): j for j in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            job = pending.pop(ref)
            try:
                yield ray.get(ref)
            except ray.exceptions.RayError as exc:
                yield {
                    "key": job.key,
                    "status": "failed",
                    "reason": f"Ray: {str(exc).strip().splitlines()[0]}",
                }
    finally:
        ray.shutdown()


def run_jobs(
    jobs: Sequence[Job],
    context: Context,
    *,
    backend: str = "local",
    n_jobs: int = 1,
    address: str | None = None,
    retries: int = 3,
) -> Iterator[dict[str, Any]]:
    """Run ``jobs``; yield each job's summary as it finishes (in completion order)."""
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if n_jobs < 1:
        raise InputError(f"--jobs {n_jobs} must be at least 1")
    if not jobs:
        return
    started = time.perf_counter()
    if backend == "local":
        yield from _local(jobs, context, n_jobs)
    else:
        yield from _ray(jobs, context, address, retries)
    log.info("%d jobs in %.1f s on %s", len(jobs), time.perf_counter() - started, backend)
