"""The Dask client of a command: the cluster named or a local one started for it, its
dashboard and progress page, and Dask's performance report."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

logger = logging.getLogger("bmm_dask")


#: The options of where the work runs (:func:`cluster_options`), as :func:`cluster_client`
#: takes them.
CLUSTER_SETTINGS = (
    "scheduler",
    "scheduler_file",
    "workers",
    "threads_per_worker",
    "memory_limit",
    "performance_report",
    "dashboard_address",
)


def cluster_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The options of where the work runs, among all of a command's options.

    Parameters
    ----------
    options : dict
        A command's options by name.

    Returns
    -------
    dict
        Those :func:`cluster_client` takes.
    """
    return {name: options[name] for name in CLUSTER_SETTINGS if name in options}


@contextmanager
def cluster_client(
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    performance_report: str | None = None,
    dashboard_address: str = "127.0.0.1:8787",
    task_bytes: float = 0,
) -> Iterator[Any]:
    """A Dask client (the cluster named, else a local one) for the command.

    Its dashboard link (and that of the progress page) is logged first, and Dask's performance
    report is written when asked for.

    Parameters
    ----------
    scheduler : str, default=None
        Address of a running scheduler.
    scheduler_file : str, default=None
        A scheduler file naming one.
    workers : int, default=None
        Worker processes of the local cluster; None means the number of cores.
    threads_per_worker : int, default=None
        Threads per worker of the local cluster; None means 1.
    memory_limit : str, default=None
        Memory per worker of the local cluster; None means shared out.
    performance_report : str, default=None
        Where to write Dask's performance report of the work; None means nowhere.
    dashboard_address : str, default="127.0.0.1:8787"
        Where the local cluster's dashboard listens.
    task_bytes : float, default=0
        The memory a task needs, which sets the smallest --memory-limit accepted.

    Yields
    ------
    distributed.Client

    Raises
    ------
    SettingsError
        As :func:`bmm_dask.cluster.open_client`.
    """
    from bmm_dask.cluster import open_client

    with open_client(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
        worker_logs=logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.CRITICAL,
        task_bytes=task_bytes,
    ) as client:
        logger.info("Dask dashboard: %s", client.dashboard_link)
        _add_progress_page(client)
        if performance_report is None:
            yield client
            return
        from distributed import performance_report as report

        Path(performance_report).absolute().parent.mkdir(parents=True, exist_ok=True)
        with report(filename=performance_report):
            yield client
        logger.info("Dask performance report: %s", performance_report)


def _add_progress_page(client: Any) -> None:
    """Our page on the dashboard, when the scheduler can import bmm_dask."""
    from bmm_dask.dashboard import PAGE, ProgressPage

    try:
        client.register_plugin(ProgressPage())
    except Exception as err:  # the scheduler may lack bmm_dask: the fit goes on without the page
        logger.debug("no progress page on the dashboard: %s", err)
        return
    logger.info("Progress page: %s", client.dashboard_link.rsplit("/", 1)[0] + PAGE)


def maybe_client(
    scheduler: str | None, scheduler_file: str | None, performance_report: str | None
) -> Any:
    """A cluster when one is named (or a performance report asked for), else this process.

    Parameters
    ----------
    scheduler : str or None
        Address of a running scheduler.
    scheduler_file : str or None
        A scheduler file naming one.
    performance_report : str or None
        Where to write Dask's performance report.

    Returns
    -------
    context manager
        :func:`cluster_client`, or one that does nothing (the work runs on this process's
        threads).
    """
    if (
        scheduler
        or scheduler_file
        or os.environ.get("DASK_SCHEDULER_ADDRESS")
        or performance_report
    ):
        return cluster_client(scheduler, scheduler_file, performance_report=performance_report)
    return nullcontext()


def check_report_path(
    performance_report: str | None,
    inputs: Sequence[str | None],
    *,
    overwrite: bool,
    outputs: Sequence[str | None] = (),
) -> None:
    """Check where a performance report goes, before any work: never over an input, another
    output of the command, or a file that is there (unless ``--overwrite``).

    Dask writes its report over whatever is there, so it must go somewhere it can write
    (missing folders are created when the report is written).

    Parameters
    ----------
    performance_report : str or None
        The report's path; None means no report, nothing to check.
    inputs : sequence of str or None
        What the command reads.
    overwrite : bool
        The command's ``--overwrite``: a file already at the path may be replaced.
    outputs : sequence of str or None, default=()
        What else the command writes (``--out``, ``--json``).

    Raises
    ------
    OutputError
        If the path is or holds an input or an output, exists (without ``overwrite``), or
        cannot be written.
    """
    if performance_report is None:
        return
    from bmm_dask.errors import OutputError
    from bmm_dask.io import check_output

    report = os.path.abspath(performance_report)
    for output, flag in zip(outputs, ("--out", "--json"), strict=False):
        if output is not None and os.path.abspath(output) == report:
            raise OutputError(
                f"{performance_report}: --performance-report and {flag} name the same file"
            )
    check_output(performance_report, overwrite=overwrite, inputs=[*inputs, *outputs])
