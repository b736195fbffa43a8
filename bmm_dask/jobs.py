"""Jobs: work submitted to a Dask cluster that outlives the process which submitted it.

A job's driver (the loop that a fit runs in the terminal) runs on a worker, as a long-running
task that secedes from the worker's thread pool and submits its E-step tasks from there. The
process that submitted it may exit at once; when the worker running the driver dies, Dask runs
the task again on another worker, and the driver continues from its checkpoint.

Everything about a job lives on the scheduler, so any client of the cluster can follow it:

==========================  ==================================================================
what                        where
==========================  ==================================================================
the job's record            the scheduler's metadata, under ``("bmm-dask-jobs", JOB)``: its
                            command, state, progress, output, times and final message
its log                     Dask events on topic ``bmm-dask-job-JOB``: the lines the command
                            prints in a terminal, with their times
its driver                  the task ``bmm-dask-job-JOB``, kept by ``fire_and_forget``
a request to cancel it      ``cancel`` in its record, and an event on ``bmm-dask-cancel-JOB``
==========================  ==================================================================

A scheduler that restarts forgets all of it: its running jobs stop, and their checkpoints are
what is left (submit again with ``--resume`` to continue one).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from bmm_dask._events import CURRENT_JOB, jsonable
from bmm_dask.errors import BmmDaskError, SettingsError

__all__ = [
    "ACTIVE",
    "STATES",
    "JobCancelled",
    "RunningJob",
    "cancel_job",
    "describe_progress",
    "get_job",
    "job_log",
    "list_jobs",
    "submit_job",
    "wait_job",
]

logger = logging.getLogger("bmm_dask")

#: Metadata key under which the scheduler holds the jobs' records.
METADATA_KEY = "bmm-dask-jobs"
#: A job's driver task is ``PREFIX + id``, its log the events of that topic.
PREFIX = "bmm-dask-job-"
#: States a job passes through, in order; it ends in one of the last three.
STATES = ("queued", "running", "done", "failed", "cancelled")
#: States of a job not yet ended.
ACTIVE = ("queued", "running")
#: Seconds between updates of a job's progress during stepwise steps (each iteration and pass
#: updates it at once).
PROGRESS_SECONDS = 1.0

Runner = Callable[[dict[str, Any], "RunningJob"], str]


class JobCancelled(Exception):
    """Raised in a job's driver at its next step after ``cancel_job``."""


def driver_key(job_id: str) -> str:
    """The key of a job's driver task, which is also the topic of its log."""
    return PREFIX + job_id


def cancel_topic(job_id: str) -> str:
    """The topic on which a request to cancel the job is sent to its driver."""
    return f"bmm-dask-cancel-{job_id}"


# --------------------------------------------------------------------------- on the client


def submit_job(
    client: Any,
    runner: Runner,
    options: dict[str, Any],
    *,
    command: str,
    argv: str,
    output: str | None,
    check: Callable[[dict[str, Any]], Any] | None = None,
) -> str:
    """Start ``runner(options, job)`` on the cluster as a job; return its id at once.

    Parameters
    ----------
    client : distributed.Client
        A client of the cluster.
    runner : callable
        ``runner(options, job) -> str``, run on a worker: does the work and returns the line
        that the command prints at the end; ``job`` is the :class:`RunningJob`. It must be
        importable on the workers (a function of a module, pickled by reference).
    options : dict
        The command's options (plain values).
    command : str
        The command's name (``fit``, ``select``).
    argv : str
        The command line as the user typed it, for ``bmm-dask jobs``.
    output : str or None
        What the job writes; another job still running with the same output is refused.
    check : callable, default=None
        ``check(options)``, run on one worker before the job starts (outside its thread pool,
        so at once on a busy cluster): raises :class:`~bmm_dask.errors.BmmDaskError` when a
        path is not one the workers see, or the data or settings are wrong.

    Returns
    -------
    str
        The job's id.

    Raises
    ------
    SettingsError
        If the cluster has no worker, or another job still running writes ``output``.
    BmmDaskError
        What ``check`` raised, with the worker's address.
    """
    from distributed import fire_and_forget

    if output is not None:
        for other in list_jobs(client):
            if other["state"] in ACTIVE and other.get("output") == output:
                raise SettingsError(
                    f"{output}: job {other['id']} is writing it ({other['state']}); wait for "
                    f"it, or cancel it (bmm-dask cancel {other['id']})"
                )
    if check is not None:
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise SettingsError(f"the cluster at {client.scheduler.address} has no workers")
        try:
            client.run(_check, check, options, workers=workers[:1])
        except BmmDaskError as err:
            raise type(err)(f"{err} (checked on the worker {workers[0]})") from None
    job_id = uuid.uuid4().hex[:8]
    client.set_metadata(
        [METADATA_KEY, job_id],
        {
            "id": job_id,
            "command": command,
            "argv": argv,
            "output": output,
            "state": "queued",
            "submitted": time.time(),
            "started": None,
            "ended": None,
            "attempt": 0,
            "worker": None,
            "progress": {},
            "message": None,
            "cancel": False,
        },
    )
    client.log_event(driver_key(job_id), {"kind": "log", "message": f"submitted: {argv}"})
    future = client.submit(
        _drive, job_id, runner, options, key=driver_key(job_id), pure=False, retries=0
    )
    fire_and_forget(future)
    # The task goes to the scheduler on the client's stream, and the caller may exit as soon
    # as this returns: wait until the scheduler holds it.
    deadline = time.monotonic() + 30
    while client.sync(client.scheduler.get_task_status, keys=[future.key]).get(future.key) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler at {client.scheduler.address} did not take the job")
        time.sleep(0.01)
    return job_id


async def _check(check: Callable[[dict[str, Any]], Any], options: dict[str, Any]) -> None:
    """Run a job's checks on a worker, in a thread of their own: ``client.run`` calls this on
    the worker's event loop, which a slow store would otherwise hold up (heartbeats and all).
    A user's mistake comes back as its error alone.

    The error is raised anew, outside the handler: one raised from a library's exception
    carries it along, and the client may not be able to unpickle that one (zarr's
    GroupNotFoundError cannot be), so the message would come back as a plain Exception.
    """
    import asyncio

    try:
        await asyncio.get_running_loop().run_in_executor(None, check, options)
    except BmmDaskError as err:
        error = type(err)(str(err))
    else:
        return
    raise error


def list_jobs(client: Any) -> list[dict[str, Any]]:
    """Every job the cluster's scheduler knows, oldest first.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    list of dict
        Each job's record: ``id``, ``command``, ``argv``, ``output``, ``state`` (one of
        :data:`STATES`), ``submitted``, ``started``, ``ended`` (seconds since the epoch, or
        None), ``elapsed`` (seconds), ``attempt``, ``worker``, ``progress`` (the last
        iteration, pass or step and its objective) and ``message`` (the last line, or the
        error).
    """
    records = client.get_metadata([METADATA_KEY], default={}) or {}
    jobs = sorted(records.values(), key=lambda r: r.get("submitted") or 0)
    active = [driver_key(job["id"]) for job in jobs if job.get("state") in ACTIVE]
    status = client.sync(client.scheduler.get_task_status, keys=active) if active else {}
    now = time.time()
    for job in jobs:
        task = status.get(driver_key(job["id"]), "memory")
        if job.get("state") in ACTIVE and task in (None, "erred", "forgotten", "released"):
            # the driver's task is gone (its workers died too often) or failed outside the
            # driver's own handling: the job will not end by itself
            job["state"] = "failed"
            job["message"] = (
                f"its driver task was lost ({task or 'the scheduler forgot it'}): the workers "
                "running it died, or the scheduler restarted; its checkpoint, if any, is where "
                "a resubmitted job with --resume continues from"
            )
        started = job.get("started")
        job["elapsed"] = (job.get("ended") or now) - started if started else 0.0
    return jobs


def get_job(client: Any, job_id: str) -> dict[str, Any]:
    """One job's record (see :func:`list_jobs`).

    Raises
    ------
    SettingsError
        If the cluster knows no such job.
    """
    for job in list_jobs(client):
        if job["id"] == job_id:
            return job
    raise SettingsError(
        f"no job {job_id} on the cluster at {client.scheduler.address} (bmm-dask jobs lists "
        "them; a scheduler that restarted has forgotten its jobs)"
    )


def job_log(client: Any, job_id: str) -> list[tuple[float, dict[str, Any]]]:
    """A job's log: ``(time, event)`` pairs, oldest first; each event has ``message``.

    Raises
    ------
    SettingsError
        If the cluster knows no such job.
    """
    get_job(client, job_id)
    return [(t, e) for t, e in client.get_events(driver_key(job_id)) if isinstance(e, dict)]


def describe_progress(progress: dict[str, Any]) -> str:
    """Where a job is, from its record's ``progress``: 'pass 2 of 10, step 40 of 234' in a
    stepwise pass, else 'iteration 12' ('iteration 12 of at most 100' given ``max_iter``); with
    the K a selection still runs, and the objective. ``bmm-dask jobs``, ``status`` and the
    dashboard's page say it alike.

    Parameters
    ----------
    progress : dict
        As :func:`list_jobs` gives it (or a step's record, or a run's position on the
        dashboard's page, which knows the run's ``max_iter``).

    Returns
    -------
    str
        '-' when there is nothing to say yet.
    """
    parts = []
    if progress.get("pass") is not None:
        of = f" of {progress['passes']}" if progress.get("passes") else ""
        parts.append(f"pass {progress['pass']}{of}")
        if progress.get("step_in_pass") is not None:
            of = f" of {progress['steps_in_pass']}" if progress.get("steps_in_pass") else ""
            parts.append(f"step {progress['step_in_pass']}{of}")
    elif progress.get("iteration") is not None:
        of = f" of at most {progress['max_iter']}" if progress.get("max_iter") else ""
        parts.append(f"iteration {progress['iteration']}{of}")
    if progress.get("candidates"):
        parts.append(f"{progress['candidates']} K still running")
    if isinstance(progress.get("objective"), int | float):
        parts.append(f"objective {progress['objective']:.4f}")
    return ", ".join(parts) or "-"


def cancel_job(client: Any, job_id: str) -> dict[str, Any]:
    """Ask a job to stop; return its record.

    A running job stops at its next step, removes its temporary output (its checkpoint) and
    leaves a model that was in its output before; a queued one never starts. An ended job is
    left as it is.

    Raises
    ------
    SettingsError
        If the cluster knows no such job.
    """
    from distributed import Future

    job = get_job(client, job_id)
    if job["state"] not in ACTIVE:
        return job
    client.set_metadata([METADATA_KEY, job_id, "cancel"], True)
    client.log_event(cancel_topic(job_id), "cancel")
    if job["state"] == "queued":
        # Its driver has not taken a thread: dropping the task is enough. Should it have just
        # started, it sees the request as it starts, and ends cancelled too.
        client.cancel([Future(driver_key(job_id), client)], force=True)
        _ended(client, job_id, "cancelled", "cancelled before it started")
    return get_job(client, job_id)


def wait_job(
    client: Any, job_id: str, *, timeout: float | None = None, interval: float = 0.25
) -> dict[str, Any]:
    """Wait until a job has ended; return its record.

    Parameters
    ----------
    client : distributed.Client
    job_id : str
    timeout : float, default=None
        Seconds to wait at most; None means as long as it takes.
    interval : float, default=0.25
        Seconds between looks at the job's state.

    Raises
    ------
    SettingsError
        If the cluster knows no such job.
    TimeoutError
        If it has not ended within ``timeout``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    said = False
    while True:
        job = get_job(client, job_id)
        if job["state"] not in ACTIVE:
            return job
        if not said:
            logger.info("job %s is %s; waiting for it to end", job_id, job["state"])
            said = True
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout} s")
        time.sleep(interval)


def _ended(client: Any, job_id: str, state: str, message: str) -> None:
    record = client.get_metadata([METADATA_KEY, job_id], default=None)
    if record is None:
        return
    record.update(state=state, message=message, ended=time.time())
    (record.get("progress") or {}).pop("candidates", None)  # none runs once it has ended
    # the last line before the state: whoever sees the job ended finds every line logged
    client.log_event(driver_key(job_id), {"kind": "log", "message": f"{state}: {message}"})
    client.set_metadata([METADATA_KEY, job_id], record)


# --------------------------------------------------------------------------- on the worker


class RunningJob:
    """The job whose driver runs in this thread: its id and attempt, its log, and whether it
    was asked to stop.

    Parameters
    ----------
    client : distributed.Client
        The worker's client.
    job_id : str
    attempt : int
        1 for the first run of the driver, 2 after its worker died once, ...
    """

    def __init__(self, client: Any, job_id: str, attempt: int) -> None:
        self.client, self.id, self.attempt = client, job_id, attempt
        self.cancelled = threading.Event()
        self._progress_at = 0.0
        self._droppers: list[Callable[[], Any]] = []
        self._last: dict[str, Any] = {}

    def log(self, message: str) -> None:
        """Add a line to the job's log."""
        self.client.log_event(driver_key(self.id), {"kind": "log", "message": message})

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was asked to stop."""
        if self.cancelled.is_set():
            raise JobCancelled()

    def record(self, record: dict[str, Any]) -> None:
        """Called with each record the work publishes (an iteration, a pass, a stepwise step,
        a round of a selection): stop if asked to, and keep the job's progress up to date."""
        self.check()
        if record.get("kind") == "run":
            return
        step = record.get("kind") == "step"
        now = time.monotonic()
        if step and now - self._progress_at < PROGRESS_SECONDS:
            return
        self._progress_at = now
        self.client.set_metadata([METADATA_KEY, self.id, "progress"], self._progress(record))

    def _progress(self, record: dict[str, Any]) -> dict[str, Any]:
        """Where the job is, from its latest record: a stepwise pass as pass p of P, step s of
        S (a pass's end record, which lacks P and S, keeps those of its steps); else the
        iteration; with the objective, and the number of K still running in a selection."""
        before = self._last
        if "pass" in record:
            progress = {"pass": record["pass"]}
            for key in ("passes", "steps_in_pass"):
                if record.get(key) is not None or before.get(key) is not None:
                    progress[key] = record.get(key, before.get(key))
            done = progress.get("steps_in_pass") if "step_in_pass" not in record else None
            progress["step_in_pass"] = record.get("step_in_pass", done)
        else:
            progress = {"iteration": record.get("iteration")}
        progress["objective"] = record.get("objective")
        if "candidates" in record:
            progress["candidates"] = len(
                {c.get("n_components") for c in record["candidates"] if isinstance(c, dict)}
            )
        self._last = progress
        return jsonable({k: v for k, v in progress.items() if v is not None})

    @contextlib.contextmanager
    def dropping(self, drop: Callable[[], Any]) -> Iterator[None]:
        """Within, a cancel calls ``drop()`` (in a thread of its own) at once: it cancels the
        work in flight (a stepwise pass's steps), so the workers' threads are freed without
        waiting for the driver's next step."""
        self._droppers.append(drop)
        try:
            yield
        finally:
            self._droppers.remove(drop)

    def _on_cancel(self, event: Any) -> None:
        # on the worker's event loop: the dropping is done by another thread
        self.cancelled.set()
        for drop in list(self._droppers):
            threading.Thread(target=drop, name="bmm-dask-cancel", daemon=True).start()

    def update(self, **fields: Any) -> None:
        """Set fields of the job's record."""
        for name, value in fields.items():
            self.client.set_metadata([METADATA_KEY, self.id, name], value)


class _LogLines(logging.Handler):
    """The package's log lines from one thread (the driver's), into the job's log."""

    def __init__(self, job: RunningJob, thread: int) -> None:
        super().__init__(logging.INFO)
        self.job, self.thread = job, thread
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            self.job.log(self.format(record))
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _running(job: RunningJob) -> Iterator[None]:
    """Within, the package's log lines of this thread go to the job's log, and the records
    the work publishes to :meth:`RunningJob.record`."""
    handler = _LogLines(job, threading.get_ident())
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    token = CURRENT_JOB.set(job)
    try:
        yield
    finally:
        CURRENT_JOB.reset(token)
        logger.removeHandler(handler)


def _one_line(err: BaseException) -> str:
    if isinstance(err, BmmDaskError):
        return str(err)
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _drive(job_id: str, runner: Runner, options: dict[str, Any]) -> str:
    """A job's driver task: secede, run the work, record how it ended."""
    from distributed import get_client, get_worker, secede

    secede()  # the driver waits on its tasks: it must not hold one of the threads they need
    client = get_client()
    record = client.get_metadata([METADATA_KEY, job_id], default=None)
    if record is None or record.get("state") not in ACTIVE:
        return "forgotten" if record is None else record["state"]
    job = RunningJob(client, job_id, int(record.get("attempt") or 0) + 1)
    client.subscribe_topic(cancel_topic(job_id), job._on_cancel)
    try:
        if client.get_metadata([METADATA_KEY, job_id, "cancel"], default=False):
            raise JobCancelled()
        address = get_worker().address
        job.update(
            state="running",
            attempt=job.attempt,
            worker=address,
            started=record.get("started") or time.time(),
        )
        again = f" (attempt {job.attempt}: the worker of the last one died)"
        job.log(f"started on {address}" + (again if job.attempt > 1 else ""))
        with _running(job):
            message = runner(options, job)
        state = "done"
    except Exception as err:  # a job's failure is its result: state and message say it
        if isinstance(err, JobCancelled) or job.cancelled.is_set():  # its steps dropped, say
            state, message = "cancelled", "stopped at its next step; its temporary output removed"
        else:
            state, message = "failed", _one_line(err)
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(cancel_topic(job_id))
    _ended(client, job_id, state, message)
    return state
