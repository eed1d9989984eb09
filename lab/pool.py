"""Runs side by side: thread pinning and a process pool.

The offline results depend on the torch thread count (a reduction split over 1 or 2 threads rounds
differently, and a few hundred steps amplify the difference), so an offline run trains on one thread,
and several such runs go side by side, one per core, in fresh processes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import torch


@contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def threads(n: int | None = 1):
    """Run a block at `n` torch CPU threads (None: leave torch's own count)."""
    return nullcontext() if n is None else _threads(n)


def workers() -> int:
    """How many single-threaded runs go at once: one per CPU core. A run's numbers do not depend on
    this (only on its own thread count); BHRA_WORKERS=1 runs them in this process."""
    n = os.environ.get("BHRA_WORKERS", "")
    if n and not n.isdigit():
        raise ValueError(f"BHRA_WORKERS={n!r}: give a whole number of processes, e.g. BHRA_WORKERS=1")
    return max(1, int(n) if n else os.cpu_count() or 1)


def in_parallel(fn, jobs: list[tuple]) -> list:
    """[fn(*job) for job in jobs], spread over `workers()` fresh processes; results in the jobs' order.
    `fn` must be importable (a module's function), as the processes are spawned, not forked: everything a
    job depends on travels in its arguments (a RunConfig carries its base model and cache folder)."""
    n = min(workers(), len(jobs))
    if n <= 1:
        return [fn(*job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=quiet) as pool:
        return list(pool.map(fn, *zip(*jobs)))


def quiet() -> None:
    """Silence the libraries' progress bars and warnings (notebook outputs stay readable)."""
    import datasets
    import transformers
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
