from __future__ import annotations

import pytest

pytest.importorskip("distributed", reason="distributed is not installed for this Python")

import dask
from dask.distributed import Client, LocalCluster

from manygil.dask import InterpreterPoolPlugin

from . import helpers

# distributed keeps threads and a loop alive for a while after a cluster closes
pytestmark = [pytest.mark.allow_leaks, pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore")]


@pytest.fixture(params=[False, True], ids=["in-process", "worker-process"])
def client(request):
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=request.param, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            c.register_plugin(InterpreterPoolPlugin())
            yield c


def test_results_match_the_default_executor_and_run_in_interpreters(client):
    items = list(range(200))
    default = client.gather(client.map(helpers.collatz_steps, items, key=[f"d{i}" for i in items]))
    with dask.annotate(executor="interpreters"):
        ours = client.gather(client.map(helpers.collatz_steps, items, key=[f"i{i}" for i in items]))
        where = set(client.gather(client.map(helpers.interpreter_id_of, range(8), pure=False)))
    assert ours == default == [helpers.collatz_steps(i) for i in items]
    assert 0 not in where  # not the worker's main interpreter


def test_a_task_that_raises_reaches_the_client_with_its_type(client):
    with dask.annotate(executor="interpreters"):
        future = client.submit(helpers.boom, "from a dask task")
    with pytest.raises(ValueError, match="from a dask task"):
        future.result(timeout=60)


def test_preload_hook_installs_the_executor():
    from manygil.dask import dask_setup

    class FakeState:
        nthreads = 1

    class FakeWorker:
        executors: dict = {}
        state = FakeState()

    worker = FakeWorker()
    dask_setup(worker)
    executor = worker.executors["interpreters"]
    try:
        assert executor.submit(helpers.add, 2, 3).result(timeout=30) == 5
    finally:
        executor.shutdown()
