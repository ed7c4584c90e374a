"""Where ingest tasks run: in this process, on a local dask cluster, or on an existing one.

Tasks are submitted with a bounded number in flight (four per worker thread), so a large archive
never queues all its tasks at once; results come back as they finish.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from dinogeo.data.ingest_copy import run_task
from dinogeo.data.ingest_plan import IngestTask

__all__ = ["execute_tasks"]

log = logging.getLogger(__name__)


def execute_tasks(
    tasks: Sequence[IngestTask], scheduler: Any, workers: int
) -> Iterator[tuple[IngestTask, int | str]]:
    """Run tasks, yielding ``(task, chunks written)`` or ``(task, error message)``.

    Args:
        tasks: the tasks to run.
        scheduler: ``"synchronous"`` (this process), None (a LocalCluster of ``workers``
            processes), a scheduler address or a ``distributed.Client``.
        workers: LocalCluster worker processes.

    Raises:
        ValueError: ``scheduler`` is none of these.
    """
    if scheduler == "synchronous":
        for task in tasks:
            yield task, run_task(task)
        return
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    elif isinstance(scheduler, Client):
        client = scheduler
    elif isinstance(scheduler, str):
        client = Client(scheduler)
    else:
        raise ValueError(
            f"scheduler={scheduler!r}: pass None (local cluster), 'synchronous', a scheduler "
            "address such as 'tcp://host:8786', or a distributed.Client"
        )
    try:
        nthreads = max(1, sum(client.nthreads().values()))
        log.info("ingest on %s (%d threads)", client, nthreads)
        it = iter(tasks)
        futures = {client.submit(run_task, t, pure=False): t for t in islice(it, 4 * nthreads)}
        queue = as_completed(list(futures))
        for fut in queue:
            task = futures.pop(fut)
            yield task, fut.result()
            nxt = next(it, None)
            if nxt is not None:
                new = client.submit(run_task, nxt, pure=False)
                futures[new] = nxt
                queue.add(new)
    finally:
        if client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()
