"""One stepwise run (:class:`StepwiseRun`: its passes, records and snapshots for checkpoints)
and one pass of one or several runs (:func:`stepwise_pass`)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bmm_dask._estep import PackedData
from bmm_dask._kernels import (
    log_prior,
)
from bmm_dask._settings import STEPS_IN_FLIGHT
from bmm_dask._stepwise.batches import pass_batches, window_chunks
from bmm_dask._stepwise.state import StepwiseState
from bmm_dask._stepwise.steps import distributed_client, pass_steps
from bmm_dask.errors import DataError

logger = logging.getLogger("bmm_dask._stepwise")


class StepwiseRun:
    """Stepwise EM of one model, advanced one mini-batch at a time by the statistics of its
    steps: the blend into the running statistics, the re-seeding of starving components, the
    record of each pass, the stopping test. The steps are the caller's (:func:`stepwise_pass`,
    for one model or several taking the same mini-batches), so that a fit and ``select``'s
    candidates step, re-seed and record alike: the twin of :class:`~bmm_dask._em.BatchRun`.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Starting means.
    weights : ndarray of shape (n_components,)
        Starting weights.
    n_samples : int
        Rows of the data: the running statistics are scaled back to as many for the M-step.
    alpha : float
        Additive smoothing of the means.
    step_exponent : float
        kappa in ``eta_t = (t + t0) ** -kappa``, in (0.5, 1].
    batch_size : int
        Rows per mini-batch (recorded with each pass).
    passes : int
        Passes to run at most.
    min_gain : float, default=None
        Stop after a pass whose objective is less than this above the one before (for the first
        pass, ``previous``): the "auto" algorithm then goes on with batch EM.
    previous : float, default=-inf
        The objective before the first pass (batch EM's, when the passes follow its iterations).
    label : str, default=""
        Put before the lines it logs (one of several models).
    """

    def __init__(
        self,
        means: NDArray[np.float64],
        weights: NDArray[np.float64],
        *,
        n_samples: int,
        alpha: float,
        step_exponent: float,
        batch_size: int,
        passes: int,
        min_gain: float | None = None,
        previous: float = -math.inf,
        label: str = "",
    ) -> None:
        self.state = StepwiseState.start(means, weights)
        self.means = np.array(means, dtype=np.float64)
        self.weights = np.array(weights, dtype=np.float64)
        self.n_samples, self.alpha, self.step_exponent = n_samples, alpha, step_exponent
        self.batch_size, self.passes, self.min_gain = batch_size, passes, min_gain
        self.previous = previous
        self.label = label
        self.history: list[dict[str, Any]] = []
        self.left = False  # left before its passes were run: a pass gained too little
        self.begin_pass()

    @property
    def done(self) -> bool:
        """Whether the run has taken its passes, or left them."""
        return self.left or len(self.history) >= self.passes

    @property
    def objective(self) -> float:
        """The objective of the last pass (or the one before the first)."""
        return self.history[-1]["objective"] if self.history else self.previous

    def begin_pass(self) -> None:
        """Begin a pass: its sums start at nothing, its mean shift from the current means."""
        self.loglik = self.rows = 0.0
        self.reseeded = 0
        self.pass_start = self.means
        self.started = time.perf_counter()

    def advance(self, stats: dict[str, Any]) -> dict[str, Any]:
        """One step from a mini-batch's statistics; return the step's event (for the
        dashboard: the running objective of the pass so far)."""
        self.loglik += stats["loglik"]
        self.rows += stats["n_samples"]
        self.state.update(stats, self.step_exponent)
        reseeded = self.state.reseed()
        self.reseeded += reseeded
        self.means, self.weights = self.state.parameters(self.n_samples, self.alpha)
        return {
            "pass": len(self.history) + 1,
            "step": self.state.step,
            "objective": self.loglik / self.rows,
            "change": None,
            "mean_shift": None,
            "seconds": time.perf_counter() - self.started,
            "reseeded": reseeded,
        }

    def end_pass(self) -> dict[str, Any]:
        """End a pass: its record (and the next pass begun).

        Raises
        ------
        DataError
            If the objective stops being finite.
        """
        objective = self.loglik / self.rows + log_prior(self.means, self.alpha) / self.n_samples
        pass_ = len(self.history) + 1
        record = {
            "pass": pass_,
            "steps": self.state.step,
            "batch_size": self.batch_size,
            "objective": objective,
            "change": objective - self.objective,
            "mean_shift": float(np.linalg.norm(self.means - self.pass_start)),
            "seconds": time.perf_counter() - self.started,
            "reseeded": self.reseeded,
        }
        self.history.append(record)
        logger.log(
            logging.DEBUG if self.label else logging.INFO,
            "%spass %d  steps %d  running objective %.6f  mean shift %.3e  %.3f s%s",
            self.label,
            pass_,
            self.state.step,
            objective,
            record["mean_shift"],
            record["seconds"],
            f"  re-seeded {self.reseeded}" if self.reseeded else "",
        )
        if not math.isfinite(objective):
            raise DataError(
                f"the objective became {objective}; the data or settings give no finite likelihood"
            )
        if self.min_gain is not None and record["change"] < self.min_gain:
            self.left = True
        self.begin_pass()
        return record

    def snapshot(
        self,
        position: int,
        pass_rng_state: dict[str, Any],
        in_flight: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
    ) -> dict[str, Any]:
        """Where the run stands, mid-pass or between passes, for :func:`stepwise_pass` to
        resume from exactly: after ``position`` mini-batches of the pass (0: between passes,
        the next from its beginning), whose draws began at ``pass_rng_state``, with the
        parameters of the steps ``in_flight`` then."""
        shape = (len(in_flight), *self.state.resp_x.shape)
        return {
            "pass": len(self.history) + 1,
            "position": position,
            "pass_rng_state": pass_rng_state,
            "in_flight_means": np.array([m for m, _ in in_flight]).reshape(shape),
            "in_flight_weights": np.array([w for _, w in in_flight]).reshape(shape[:2]),
            "resp_sum": self.state.resp_sum,
            "resp_x": self.state.resp_x,
            "step": self.state.step,
            "n_seen": self.state.n_seen,
            "loglik": self.loglik,
            "rows": self.rows,
            "pass_reseeded": self.reseeded,
            "pass_start": self.pass_start,
            "means": self.means,  # those of the next step (at the start, not the M-step's)
            "weights": self.weights,
            "previous": None if self.previous == -math.inf else self.previous,
            "history": [dict(record) for record in self.history],
            "left": self.left,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Go on from a :meth:`snapshot`."""
        self.state = StepwiseState(
            np.array(snapshot["resp_sum"]),
            np.array(snapshot["resp_x"]),
            snapshot["step"],
            snapshot["n_seen"],
        )
        if "means" in snapshot:
            self.means = np.array(snapshot["means"])
            self.weights = np.array(snapshot["weights"])
        else:  # a snapshot of an earlier version, always after a step: the M-step's
            self.means, self.weights = self.state.parameters(self.n_samples, self.alpha)
        self.loglik, self.rows = snapshot["loglik"], snapshot["rows"]
        self.reseeded = snapshot.get("pass_reseeded", 0)
        self.pass_start = np.array(snapshot["pass_start"])
        previous = snapshot["previous"]
        self.previous = -math.inf if previous is None else previous
        self.history = [dict(record) for record in snapshot["history"]]
        self.left = snapshot.get("left", False)


def stepwise_pass(
    data: PackedData,
    runs: list[StepwiseRun],
    rng: np.random.Generator,
    *,
    batch_size: int,
    dtype: np.typing.DTypeLike = np.float32,
    persisted: bool = False,
    threads: int = 1,
    steps_in_flight: int = STEPS_IN_FLIGHT,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One pass of stepwise EM for one model or several, all taking the same mini-batches
    (several: each step one product of the rows with their parameters stacked); return the
    pass's record of each.

    Each model ends where a pass of its own from the same ``rng`` state ends: its statistics
    come from the same kernel, a model's columns apart.

    Parameters
    ----------
    data : PackedData
        Packed rows, in chunks (those of the store, or of :func:`~bmm_dask._estep.task_blocks`).
    runs : list of StepwiseRun
        The models.
    rng : numpy.random.Generator
        Draws the order of the chunks and the mini-batches.
    batch_size : int
        Rows per mini-batch.
    dtype : dtype, default=np.float32
        Type of the E-step's arithmetic.
    persisted : bool, default=False
        Whether ``data`` is held in memory already; otherwise each window's chunks are read
        once from the store and held while its mini-batches are taken.
    threads : int, default=1
        Worker threads of the cluster in use: the tasks per step (:func:`step_groups`). It
        changes how the work is shared out, never the result.
    steps_in_flight : int, default=STEPS_IN_FLIGHT
        Steps submitted before the oldest is collected: the j-th mini-batch of a pass is
        computed with the parameters after step j - ``steps_in_flight`` of the pass (its
        starting ones for the first). 1 is stepwise EM as published.
    on_step : callable, default=None
        For one model: called after every step with the run's :meth:`StepwiseRun.snapshot`,
        from which ``resume`` continues exactly.
    on_event : callable, default=None
        For one model: called after every step with its event (kind "step", as
        :mod:`bmm_dask._events` describes), for the progress page, a job's record and a
        fit's ``callback``.
    resume : dict, default=None
        Such a snapshot, already restored into the run: the pass goes on from it and ends as
        a pass never interrupted, bit for bit.

    Returns
    -------
    list of dict
        Each run's record of the pass (:meth:`StepwiseRun.end_pass`).
    """
    chunk_sizes = tuple(int(c) for c in data.bits.chunks[0])
    window = window_chunks(batch_size, chunk_sizes[0])
    skip, carried = 0, []
    if resume is not None:
        rng.bit_generator.state = resume["pass_rng_state"]
        skip = resume["position"]
        carried = [  # the parameters of the steps in flight at the snapshot, in order
            (np.array(m), np.array(w))
            for m, w in zip(resume["in_flight_means"], resume["in_flight_weights"], strict=True)
        ]
    pass_rng_state = rng.bit_generator.state  # where this pass's draws begin
    single = len(runs) == 1

    def given() -> tuple[Any, Any]:
        # the steps in flight at the checkpoint resumed from take the parameters they had;
        # every other step the latest
        if carried:
            return carried.pop(0)
        if single:
            return runs[0].means, runs[0].weights
        return [run.means for run in runs], [run.weights for run in runs]

    count, batches = pass_batches(chunk_sizes, batch_size, window, rng)
    if skip > count:
        from bmm_dask.errors import ModelFileError

        raise ModelFileError(
            f"{resume.get('checkpoint', 'the checkpoint') if resume else ''}: its stepwise "
            f"position {skip} is past the {count} steps of the pass; the checkpoint is damaged, "
            "fit afresh"
        )
    steps = pass_steps(
        data,
        batches,
        given,
        dtype=dtype,
        persisted=persisted,
        threads=threads,
        steps_in_flight=steps_in_flight,
        client=distributed_client(),
        skip=skip,
    )
    with contextlib.closing(steps):  # on an error, the steps in flight stop at once
        for stats, position, in_flight in steps:
            for run, part in zip(runs, [stats] if single else stats, strict=True):
                event = run.advance(part)
            if single:
                # where the pass is, for the progress page and a job's record
                run = runs[0]
                event.update(passes=run.passes, step_in_pass=position, steps_in_pass=count)
                event["rows"] = int(run.rows)
                if on_event is not None:
                    on_event({"kind": "step", **event, "means": run.means, "weights": run.weights})
                if on_step is not None:
                    parameters = [(step.means, step.weights) for step in in_flight]
                    on_step(runs[0].snapshot(position, pass_rng_state, parameters))
    return [run.end_pass() for run in runs]
