"""lab.pool: the process pool keeps the jobs' order and refuses a bad worker count."""

import pytest


@pytest.mark.slow
def test_in_parallel_keeps_the_jobs_order_and_refuses_a_bad_worker_count(monkeypatch):
    import operator

    from lab.pool import in_parallel, workers

    monkeypatch.setenv("BHRA_WORKERS", "2")
    assert in_parallel(operator.pow, [(2, 3), (3, 2), (5, 1)]) == [8, 9, 5]  # two spawned processes
    monkeypatch.setenv("BHRA_WORKERS", "two")
    with pytest.raises(ValueError, match="BHRA_WORKERS=1"):
        workers()
