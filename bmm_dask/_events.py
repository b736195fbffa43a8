"""The events of a fit (a start begun, a batch iteration, a stepwise step or pass) as plain
JSON values, and as Dask events that the dashboard's page and any client can follow.

Every event is a dict with a "kind":

- "run": a start of a fit begins (or resumes): "run" (an id the start's other events share),
  "start" and "n_init", "n_components", "n_samples", "n_features", "algorithm", "max_iter"
  (batch iterations at most), "passes" (stepwise passes at most; 0 for batch EM),
  "batch_size", "data" and "output" (where known, else None), "resumed";
- "iteration": a batch EM iteration's record, as in ``BernoulliMixture.history_``, and
  "converged" (whether the start stops there, converged);
- "pass": a stepwise pass's record, as in ``history_``;
- "step": a stepwise step: "pass", "passes", "step" (counting the start's steps),
  "step_in_pass", "steps_in_pass", "rows" (rows seen in the pass so far), "objective" (the
  mean log-likelihood of those rows), "seconds" (since the pass began).

To a fit's ``callback`` the events of an iteration, a pass and a step also carry "means" and
"weights", the parameters after it (left out of the Dask events).

A selection's rounds are events of kind "iteration" with "candidates" (one record per model).
"""

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

#: Where the fit running in this context writes its model (the command line's output), for
#: the "run" events; None when the caller keeps the model in memory.
CURRENT_OUTPUT: ContextVar[str | None] = ContextVar("bmm_dask_current_output", default=None)


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


def publish(event: dict[str, Any]) -> None:
    """Log an event of a fit as a Dask event, when a distributed client is in use, and hand it
    to the job running in this context, if any (which may stop the work here).

    Parameters
    ----------
    event : dict
        One event, with its "kind" (see this module's description); arrays in it are left out
        of the Dask event.
    """
    client = current_client()
    if client is not None:
        import numpy as np  # here: the command line imports this module, and needs no NumPy

        plain = {k: v for k, v in event.items() if not isinstance(v, np.ndarray)}
        client.log_event(EVENT_TOPIC, jsonable(plain))
    job = CURRENT_JOB.get()
    if job is not None:
        job.record(event)
