"""The record of each EM iteration as plain JSON values, and as a Dask event that the
dashboard's page and any client can follow."""

from __future__ import annotations

import math
from contextvars import ContextVar
from typing import Any

#: Topic of the Dask events a fit logs on a distributed scheduler, one per iteration; follow
#: them with ``Client.get_events("bmm-dask")`` or ``Client.subscribe_topic("bmm-dask", handler)``.
EVENT_TOPIC = "bmm-dask"

#: The submitted job whose driver runs in this context (a :class:`bmm_dask.jobs.RunningJob`),
#: or None: every record published goes to its ``record`` (which keeps the job's progress and
#: stops the work when the job is cancelled), and work in flight can ask to be dropped at once
#: when it is cancelled (its ``dropping``).
CURRENT_JOB: ContextVar[Any] = ContextVar("bmm_dask_current_job", default=None)


def current_client() -> Any | None:
    """The distributed client this process works with, or None (threads of this process).

    Returns
    -------
    distributed.Client or None
    """
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """The record with infinities and NaN (the first iteration's change) as None.

    Parameters
    ----------
    record : dict
        One iteration's record: objective, change, mean shift, seconds, ...

    Returns
    -------
    dict
        The same keys, every float finite or None, as JSON holds them.
    """
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


def publish(record: dict[str, Any]) -> None:
    """Log an iteration's record as a Dask event, when a distributed client is in use, and
    hand it to the job running in this context, if any (which may stop the work here).

    Parameters
    ----------
    record : dict
        One iteration's record.
    """
    client = current_client()
    if client is not None:
        client.log_event(EVENT_TOPIC, {"kind": "iteration", **jsonable(record)})
    job = CURRENT_JOB.get()
    if job is not None:
        job.record(record)
