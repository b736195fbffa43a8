"""The EM loop on the driver: E-step over the chunks, M-step, convergence, re-seeding of empty
components, several starts, checkpoints."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
from numpy.typing import NDArray

from bmm_dask import _estep as _estep_module
from bmm_dask._estep import (
    PackedData,
    data_density,
    estep,
    fits_in_memory,
    task_blocks,
    with_sparse_chunks,
)
from bmm_dask._events import CURRENT_OUTPUT, publish
from bmm_dask._init import count_distinct_rows, starting_values
from bmm_dask._kernels import log_prior, mstep, split_components
from bmm_dask._stepwise import (
    MIN_BATCH_SIZE,
    MIN_STEPS_PER_PASS,
    STEPS_IN_FLIGHT,
    StepwiseRun,
    auto_batch_size,
    pass_cost,
    stepwise_pass,
)
from bmm_dask.errors import DataError

logger = logging.getLogger(__name__)

#: "auto" runs this many batch iterations before it chooses: the first iteration's change is
#: from nothing, the second's includes the climb from the start; the third's is the first that
#: says how far batch EM is from converging.
PROBE_ITERATIONS = 3

#: "auto" goes from batch iterations to stepwise passes when the last of its
#: ``PROBE_ITERATIONS`` still raised the objective by at least this many times ``tol``: at that
#: pace batch EM has far to go, and a stepwise pass, which moves the parameters after every
#: mini-batch, gains more than an iteration. It leaves the passes, for batch iterations to
#: ``tol``, after a pass that gained less than this: then an iteration costs less than a pass
#: and, near an optimum, gains as much. Where batch EM is within this of converging after its
#: probe (data drawn from a model, an easy fit), auto is batch EM, iteration for iteration.
SWITCH_GAIN = 100

#: "auto" runs at most this many stepwise passes.
AUTO_PASSES = 3

#: "auto" runs stepwise passes only where one costs at most this many batch iterations
#: (:func:`~bmm_dask._stepwise.pass_cost`).
MAX_PASS_COST = 3.0

#: A component whose responsibilities sum to less than this (a thousandth of a row) has lost
#: its mass and is re-seeded.
EMPTY_MASS = 1e-3


@dataclass
class EMResult:
    """The outcome of one EM run from one start."""

    means: NDArray[np.float64]
    weights: NDArray[np.float64]
    converged: bool
    #: Batch EM iterations (stepwise passes are not counted: see :attr:`n_passes`).
    n_iter: int
    lower_bound: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_passes(self) -> int:
        """Stepwise passes over the data."""
        return count_passes(self.history)


def count_passes(history: list[dict[str, Any]]) -> int:
    """The stepwise passes among a run's records (a pass's record has a "pass")."""
    return sum(1 for record in history if "pass" in record)


def count_iterations(history: list[dict[str, Any]]) -> int:
    """The batch EM iterations among a run's records."""
    return len(history) - count_passes(history)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread while Dask's threads run the E-steps, so they do not fight over the cores.

    (Dask's worker processes set this themselves through OPENBLAS_NUM_THREADS and friends.)
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _reseed(resp_sum: NDArray[np.float64], resp_x: NDArray[np.float64]) -> int:
    """Re-seed the components that lost their mass by splitting others
    (:func:`~bmm_dask._kernels.split_components`), in the statistics; return how many."""
    empty = np.flatnonzero(resp_sum < EMPTY_MASS)
    if len(empty):
        split_components(resp_sum, resp_x, empty)
    return len(empty)


class BatchRun:
    """Batch EM from one start, advanced one iteration at a time by the E-step's statistics:
    the M-step, the re-seeding of empty components, the record, the stopping test. The E-step
    is the caller's (:class:`EMRun`'s, for one model or several in one pass), so that every
    way of running EM stops and records alike.

    Stops when the objective (mean log-likelihood per sample, plus the log of the smoothing
    prior) changes by less than ``tol``, or the means move less than ``mean_tol`` (L2), or after
    ``max_iter`` iterations; never after an iteration that re-seeded. ``tol = 0`` runs exactly
    ``max_iter`` iterations.

    Parameters
    ----------
    means, weights : ndarray
        The start (or the parameters after the last iteration of ``history``).
    alpha : float
        Additive smoothing of the means; 0 for maximum likelihood.
    max_iter : int
        Most iterations of this phase, counting those in ``history``.
    tol : float
        Stop when the objective changes by less than this.
    mean_tol : float, default=None
        Also stop when the means move less than this (L2); None means no such test.
    history : list of dict, default=None
        Records of the iterations already run, when continuing from a checkpoint.
    iteration_offset : int, default=0
        Added to the iteration numbers in the records (the batch iterations of the phases
        before: stepwise passes are counted apart).
    label : str, default=""
        Put before the lines it logs (one of several runs).
    """

    def __init__(
        self,
        means: NDArray[np.float64],
        weights: NDArray[np.float64],
        *,
        alpha: float,
        max_iter: int,
        tol: float,
        mean_tol: float | None = None,
        history: list[dict[str, Any]] | None = None,
        iteration_offset: int = 0,
        label: str = "",
    ) -> None:
        self.means = np.array(means, dtype=np.float64)
        self.weights = np.array(weights, dtype=np.float64)
        self.alpha, self.max_iter, self.tol, self.mean_tol = alpha, max_iter, tol, mean_tol
        self.history = list(history or [])
        self.iteration_offset = iteration_offset
        self.label = label
        self.objective = self.history[-1]["objective"] if self.history else -math.inf
        self.converged = bool(self.history) and _finished(self.history[-1], tol, mean_tol)
        self._distinct_checked = False

    @property
    def done(self) -> bool:
        """Whether the run has converged or used its iterations."""
        return self.converged or len(self.history) >= self.max_iter

    def advance(self, stats: dict[str, Any], data: PackedData, seconds: float) -> dict[str, Any]:
        """One iteration from the E-step's statistics under the current parameters; return
        its record.

        Raises
        ------
        DataError
            If the data has fewer distinct rows than components (found when a component is
            re-seeded).
        """
        means, n_components = self.means, len(self.weights)
        previous = self.objective
        objective = (stats["loglik"] + log_prior(means, self.alpha)) / stats["n_samples"]
        resp_sum, resp_x = stats["resp_sum"].copy(), stats["resp_x"].copy()
        reseeded = _reseed(resp_sum, resp_x)
        new_means, new_weights = mstep(resp_sum, resp_x, stats["n_samples"], self.alpha)
        if reseeded and not self._distinct_checked:
            # Re-seeding never ends when the data has fewer distinct rows than components.
            self._distinct_checked = True
            n_distinct = count_distinct_rows(data, at_most=n_components)
            if n_distinct < n_components:
                raise DataError(
                    f"{data.source}: has only {n_distinct} distinct "
                    f"row{'s' if n_distinct > 1 else ''}, fewer than the {n_components} "
                    f"components asked for; fit at most {n_distinct}"
                )
        shift = float(np.linalg.norm(new_means - means))
        self.means, self.weights, self.objective = new_means, new_weights, objective
        iteration = len(self.history) + 1 + self.iteration_offset
        record = {
            "iteration": iteration,
            "objective": objective,
            "change": objective - previous,
            "mean_shift": shift,
            "seconds": seconds,
            "reseeded": reseeded,
        }
        self.history.append(record)
        logger.log(
            logging.DEBUG if self.label else logging.INFO,  # labelled: one of several, in a line
            "%siteration %d  objective %.6f  change %.3e  mean shift %.3e  %.3f s%s",
            self.label,
            iteration,
            objective,
            record["change"],
            shift,
            seconds,
            f"  re-seeded {reseeded}" if reseeded else "",
        )
        self.converged = _finished(record, self.tol, self.mean_tol)
        return record

    def check(self) -> None:
        """Raise DataError if the objective is no longer finite (after the iteration's record
        has been shown)."""
        if not math.isfinite(self.objective):
            raise DataError(
                f"the objective became {self.objective}; the data or settings give no finite "
                "likelihood"
            )

    def result(self) -> EMResult:
        """Where the run stands, as an :class:`EMResult`."""
        return EMResult(
            self.means,
            self.weights,
            self.converged,
            len(self.history),
            self.objective,
            self.history,
        )


def _finished(record: dict[str, Any], tol: float, mean_tol: float | None) -> bool:
    """Whether the iteration of this record met the stopping test (never one that re-seeded)."""
    change = record["change"]
    if record["reseeded"] or change is None:
        return False
    return abs(change) < tol or (mean_tol is not None and record["mean_shift"] < mean_tol)


class EMRun:
    """EM from one start with any algorithm: the batch iterations (:class:`BatchRun`) and the
    stepwise passes (:class:`~bmm_dask._stepwise.StepwiseRun`) it runs, when it goes from one
    to the other, and the history of both. The caller runs the E-steps and the passes that
    :attr:`next` asks for, for one run (:func:`fit_em`) or several at once (``select``), and
    hands the results back: every way of fitting follows the one rule.

    "auto": batch iterations; after the ``PROBE_ITERATIONS``-th, if it
    still gained at least ``SWITCH_GAIN * tol`` (batch EM is far from converged), stepwise
    passes until one gains less than that (the first is judged against the last batch
    iteration, so no pass is run to learn what the climb from the start was), at most
    ``passes`` of them; then batch iterations to ``tol``. On fewer than
    ``MIN_STEPS_PER_PASS * MIN_BATCH_SIZE`` rows it is batch EM alone. ``max_iter`` bounds the
    batch iterations alone, ``passes`` the stepwise passes.

    Parameters
    ----------
    means, weights : ndarray
        The start.
    algorithm : {"batch", "stepwise", "auto"}
        As for :func:`fit_em`.
    n_samples : int
        Rows of the data.
    alpha, max_iter, tol, mean_tol, passes, batch_size, step_exponent :
        As for :func:`fit_em` (``batch_size`` None only for batch EM).
    threads : int, default=1
        Worker threads of the cluster, for the cost of a pass.
    density : float, default=None
        The data's share of ones (:func:`~bmm_dask._estep.data_density`), for the cost of a
        pass.
    label : str, default=""
        Put before the lines it logs (one of several runs).
    """

    def __init__(
        self,
        means: NDArray[np.float64],
        weights: NDArray[np.float64],
        *,
        algorithm: str,
        n_samples: int,
        alpha: float,
        max_iter: int,
        tol: float,
        mean_tol: float | None,
        passes: int,
        batch_size: int | None,
        step_exponent: float,
        threads: int = 1,
        density: float | None = None,
        label: str = "",
    ) -> None:
        self.threads, self.density = threads, density
        if algorithm == "auto" and n_samples < MIN_STEPS_PER_PASS * MIN_BATCH_SIZE:
            algorithm = "batch"  # too few rows for a pass of many steps of useful size
        self.algorithm, self.n_samples, self.alpha = algorithm, n_samples, alpha
        self.max_iter, self.tol, self.mean_tol = max_iter, tol, mean_tol
        self.passes, self.batch_size, self.step_exponent = passes, batch_size, step_exponent
        self.label = label
        self.history: list[dict[str, Any]] = []  # the records of the phases finished
        self.batch: BatchRun | None = None
        self.stepwise: StepwiseRun | None = None
        self.finished = False
        if algorithm == "stepwise":
            self._begin_stepwise(means, weights, -math.inf)
        else:
            self._begin_batch(means, weights)

    def _begin_batch(
        self,
        means: NDArray[np.float64],
        weights: NDArray[np.float64],
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.stepwise = None
        self.batch = BatchRun(
            means,
            weights,
            alpha=self.alpha,
            max_iter=self.max_iter - count_iterations(self.history),
            tol=self.tol,
            mean_tol=self.mean_tol,
            history=history,
            iteration_offset=count_iterations(self.history),
            label=self.label,
        )

    def _begin_stepwise(
        self, means: NDArray[np.float64], weights: NDArray[np.float64], previous: float
    ) -> None:
        assert self.batch_size is not None
        self.batch = None
        auto = self.algorithm == "auto"
        self.stepwise = StepwiseRun(
            means,
            weights,
            n_samples=self.n_samples,
            alpha=self.alpha,
            step_exponent=self.step_exponent,
            batch_size=self.batch_size,
            passes=self.pass_bound,
            min_gain=SWITCH_GAIN * self.tol if auto and self.tol > 0 else None,
            previous=previous,
            label=self.label,
        )

    @property
    def pass_bound(self) -> int:
        """Stepwise passes the run takes at most (0: batch EM alone)."""
        if self.algorithm == "batch":
            return 0
        return min(self.passes, AUTO_PASSES) if self.algorithm == "auto" else self.passes

    @property
    def next(self) -> str | None:
        """What the run needs next: "batch" (an E-step over all rows), "stepwise" (a pass),
        or None (it is done)."""
        if self.finished:
            return None
        if self.stepwise is not None:
            return "stepwise"
        assert self.batch is not None
        return None if self.batch.done else "batch"

    @property
    def full_history(self) -> list[dict[str, Any]]:
        """The records of every iteration and pass so far."""
        current = self.batch or self.stepwise
        return self.history + (current.history if current is not None else [])

    @property
    def means(self) -> NDArray[np.float64]:
        """The current means (those the next E-step or step takes)."""
        return (self.batch or self.stepwise).means  # type: ignore[union-attr]

    @property
    def weights(self) -> NDArray[np.float64]:
        """The current weights."""
        return (self.batch or self.stepwise).weights  # type: ignore[union-attr]

    def advance(self, stats: dict[str, Any], data: PackedData, seconds: float) -> dict[str, Any]:
        """One batch iteration from the E-step's statistics (:meth:`BatchRun.advance`); then,
        for "auto", the switch to stepwise passes if batch EM is still far from converged."""
        assert self.batch is not None
        record = self.batch.advance(stats, data, seconds)
        if (
            self.algorithm == "auto"
            and not self.batch.done
            and len(self.full_history) == PROBE_ITERATIONS
            and record["change"] >= SWITCH_GAIN * self.tol
            and self.passes > 0
            and self.pass_cost() <= MAX_PASS_COST
        ):
            self.history += self.batch.history
            self._begin_stepwise(self.batch.means, self.batch.weights, record["objective"])
        return record

    def pass_cost(self) -> float:
        """A stepwise pass's modelled cost in batch iterations
        (:func:`~bmm_dask._stepwise.pass_cost`)."""
        assert self.batch_size is not None
        n_components, n_features = np.shape(self.means)
        return pass_cost(
            self.n_samples, n_components, n_features, self.threads, self.batch_size, self.density
        )

    def after_pass(self) -> None:
        """After a pass (:func:`~bmm_dask._stepwise.stepwise_pass`): once the passes are
        done, batch iterations follow (for "auto"), or the run is done."""
        assert self.stepwise is not None
        if not self.stepwise.done:
            return
        if self.algorithm == "stepwise" or count_iterations(self.history) >= self.max_iter:
            self.finished = True  # ends in its passes: result() takes them as they are
            return
        self.history += self.stepwise.history
        self._begin_batch(self.stepwise.means, self.stepwise.weights)

    def check(self) -> None:
        """Raise DataError if the last batch iteration's objective is not finite."""
        if self.batch is not None and self.batch.history:
            self.batch.check()

    def result(self) -> EMResult:
        """Where the run stands, as an :class:`EMResult`, with the history of every phase."""
        if self.stepwise is not None:  # ended, or stopped, in the passes
            history = self.full_history
            return EMResult(
                self.stepwise.means,
                self.stepwise.weights,
                False,
                count_iterations(history),
                history[-1]["objective"] if history else -math.inf,
                history,
            )
        assert self.batch is not None
        result = self.batch.result()
        result.history = self.history + result.history
        result.n_iter = count_iterations(result.history)
        return result

    def state(
        self, rng_state: dict[str, Any]
    ) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any] | None]:
        """What a checkpoint between iterations or passes holds of the run: the batch phase's
        parameters (None in the passes), the history of the phases finished and the batch
        phase's, and the passes' snapshot (None in a batch phase; the next pass's draws begin
        at ``rng_state``)."""
        if self.stepwise is not None:
            return None, None, list(self.history), self.stepwise.snapshot(0, rng_state, [])
        assert self.batch is not None
        return self.batch.means, self.batch.weights, self.full_history, None

    def restore(
        self,
        means: NDArray[np.float64] | None,
        weights: NDArray[np.float64] | None,
        history: list[dict[str, Any]],
        stepwise: dict[str, Any] | None,
    ) -> None:
        """Go on from what :meth:`state` returned (the run made afresh with the same settings)."""
        if means is not None and stepwise is not None and "resp_sum" not in stepwise:
            # a checkpoint of an earlier version, in the batch iterations after the passes:
            # the passes' records were kept apart
            history, stepwise = [*stepwise.get("history", []), *history], None
        if stepwise is not None:
            self.history = [dict(r) for r in history]
            self._begin_stepwise(np.zeros((1, 1)), np.ones(1), -math.inf)
            assert self.stepwise is not None
            self.stepwise.restore(stepwise)
            return
        assert means is not None and weights is not None
        last_pass = max((i + 1 for i, r in enumerate(history) if "pass" in r), default=0)
        self.history = [dict(r) for r in history[:last_pass]]
        self._begin_batch(means, weights, [dict(r) for r in history[last_pass:]])


def fit_em(
    data: PackedData,
    *,
    n_components: int,
    rng: np.random.Generator,
    n_init: int = 1,
    init: str = "kmeans++",
    means_init: NDArray[np.float64] | None = None,
    weights_init: NDArray[np.float64] | None = None,
    alpha: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-4,
    mean_tol: float | None = None,
    dtype: np.typing.DTypeLike = np.float32,
    persist: bool | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    checkpoint_every: int = 0,
    resume: FitState | None = None,
    algorithm: str = "auto",
    passes: int = 10,
    batch_size: int | None = None,
    step_exponent: float = 0.55,
    steps_in_flight: int = STEPS_IN_FLIGHT,
) -> EMResult:
    """Run EM ``n_init`` times (once when starting values are given) and keep the best run.

    The data is persisted in the cluster's memory when it takes at most half of it (``persist``
    forces the choice either way); otherwise every iteration streams it from its store.

    ``checkpoint(state)`` is called every ``checkpoint_every`` iterations and when a start
    ends; ``resume`` continues from such a state and ends with the same model as a run that was
    never interrupted (bit for bit in float64: the state holds the parameters, the history and
    the random generator's state for the starts still to run).

    Parameters
    ----------
    data : PackedData
        Packed rows.
    n_components : int
        Number of components K.
    rng : numpy.random.Generator
        Source of the random starts.
    n_init : int, default=1
        Number of starts; the best run (highest objective) is kept.
    init : str, default="kmeans++"
        How starting means are chosen (see :func:`~bmm_dask._init.initialize`).
    means_init : ndarray of shape (n_components, n_features), default=None
        Starting means; given, EM runs once from them.
    weights_init : ndarray of shape (n_components,), default=None
        Starting weights; None means equal weights (with ``means_init``) or those of the
        initialisation.
    alpha : float, default=0.1
        Additive smoothing of the means; 0 for maximum likelihood.
    max_iter : int, default=100
        Most batch iterations per start (stepwise passes are counted apart).
    tol : float, default=1e-4
        Stop when the objective changes by less than this.
    mean_tol : float, default=None
        Also stop when the means move less than this (L2); None means no such test.
    dtype : dtype, default=np.float32
        Type of the E-step's arithmetic.
    persist : bool, default=None
        Whether to hold the data in the cluster's memory; None means when it takes at most
        half of it.
    callback : callable, default=None
        Called with each event of the fit: a start begun, a batch iteration, a stepwise pass
        and step (:mod:`bmm_dask._events`).
    checkpoint : callable, default=None
        Called with a :class:`FitState` every ``checkpoint_every`` iterations and between
        starts.
    checkpoint_every : int, default=0
        Iterations between checkpoints; 0 means none.
    resume : FitState, default=None
        A state to continue from.
    algorithm : {"batch", "stepwise", "auto"}, default="auto"
        Batch EM; stepwise EM for ``passes`` passes; or auto's rule (:class:`EMRun`).
    passes : int, default=10
        Passes of stepwise EM (see :func:`~bmm_dask._stepwise.stepwise_pass`).
    batch_size : int, default=None
        Rows per mini-batch; None means :func:`~bmm_dask._stepwise.auto_batch_size`.
    step_exponent : float, default=0.55
        kappa of the stepwise step sizes ``(t + 2) ** -kappa``.
    steps_in_flight : int, default=STEPS_IN_FLIGHT
        Stepwise steps submitted before the oldest is collected.

    Returns
    -------
    EMResult
        The best run.

    Raises
    ------
    DataError
        As :func:`run_em`.
    """
    data = task_blocks(data)
    threads = _estep_module._cluster_threads()  # once per fit: asking is a round trip
    if persist is None:
        persist = fits_in_memory(data)
    hold = persist and algorithm != "stepwise"  # batch E-steps on sparse chunks skip unpacking
    density = data_density(data) if algorithm != "batch" or hold else None
    if algorithm != "batch" and batch_size is None:
        batch_size = auto_batch_size(
            data.n_samples, n_components, data.n_features, threads, density
        )
    if persist:
        (bits,) = dask.persist(data.bits)
        # read once, whole (no reader from here on), by the first E-step, checked after it
        data = PackedData(bits, data.n_features, data.source, unchanged=data.unchanged).held()
        if hold:
            assert density is not None
            data = with_sparse_chunks(data, n_components, dtype, density)
        logger.info("data persisted in memory (%.1f MB packed)", data.bits.nbytes / 1e6)
    else:
        logger.info(
            "data streamed from its store each iteration (%.1f MB packed)", data.bits.nbytes / 1e6
        )
    settings = {
        "algorithm": algorithm,
        "n_samples": data.n_samples,
        "alpha": alpha,
        "max_iter": max_iter,
        "tol": tol,
        "mean_tol": mean_tol,
        "passes": passes,
        "batch_size": batch_size,
        "step_exponent": step_exponent,
        "threads": threads,
        "density": density,
    }
    best: EMResult | None = resume.best if resume is not None else None
    runs = 1 if means_init is not None else n_init
    first = resume.run if resume is not None else 0
    with single_threaded_blas():
        for start in range(first, runs):
            resuming = resume is not None and start == resume.run
            if resuming:
                assert resume is not None
                rng.bit_generator.state = resume.rng_state
            begun = resuming and (resume.means is not None or resume.stepwise is not None)
            if begun:
                assert resume is not None
                run = EMRun(np.zeros((1, 1)), np.ones(1), **settings)
                run.restore(resume.means, resume.weights, resume.history, resume.stepwise)
            else:
                means, weights = starting_values(
                    data, n_components, init, rng, means_init, weights_init
                )
                run = EMRun(means, weights, **settings)
            if runs > 1:
                logger.info("start %d of %d", start + 1, runs)
            pending = resume.stepwise if begun and resume is not None else None
            run_id = uuid.uuid4().hex[:12]  # not the fit's generator: the model is the same

            def emit(event: dict[str, Any], run_id: str = run_id) -> None:
                event = {**event, "run": run_id}
                publish(event)
                if callback is not None:
                    callback(event)

            emit(
                {
                    "kind": "run",
                    "start": start + 1,
                    "n_init": runs,
                    "n_components": n_components,
                    "n_samples": data.n_samples,
                    "n_features": data.n_features,
                    "algorithm": run.algorithm,
                    "max_iter": max_iter,
                    "passes": run.pass_bound,
                    "batch_size": batch_size if run.algorithm != "batch" else None,
                    "data": data.source,
                    "output": CURRENT_OUTPUT.get(),
                    "resumed": begun,
                }
            )

            def save(
                snapshot: dict[str, Any] | None = None,
                run: EMRun = run,
                start: int = start,
                best: EMResult | None = best,
            ) -> None:
                if checkpoint is None:
                    return
                state = rng.bit_generator.state  # mid-pass, the snapshot has the pass's
                means, weights, history, stepwise = run.state(state)
                if snapshot is not None:
                    stepwise = snapshot
                checkpoint(FitState(start, means, weights, history, state, best, stepwise))

            def save_step(snapshot: dict[str, Any], save: Callable[..., None] = save) -> None:
                if checkpoint_every and snapshot["step"] % checkpoint_every == 0:
                    save(snapshot)

            if run.next == "stepwise":
                logger.info("stepwise EM: %d passes, mini-batches of %d rows", passes, batch_size)
            try:
                while run.next is not None:
                    if run.next == "stepwise":
                        assert run.stepwise is not None and batch_size is not None
                        (record,) = stepwise_pass(
                            data,
                            [run.stepwise],
                            rng,
                            batch_size=batch_size,
                            dtype=dtype,
                            persisted=persist,
                            threads=threads,
                            steps_in_flight=steps_in_flight,
                            on_step=save_step if checkpoint_every else None,
                            on_event=emit,
                            resume=pending,
                        )
                        pending = None
                        data.check_unchanged()  # before the pass's parameters are taken
                        run.after_pass()
                        emit({"kind": "pass", **record, **parameters(run)})
                    else:
                        began = time.perf_counter()
                        stats = estep(
                            data,
                            run.means,
                            run.weights,
                            dtype=dtype,
                            threads=threads,
                        )
                        data.check_unchanged()  # before the E-step's statistics are taken
                        record = run.advance(stats, data, time.perf_counter() - began)
                        converged = run.batch is not None and run.batch.converged
                        emit(
                            {
                                "kind": "iteration",
                                **record,
                                "converged": converged,
                                **parameters(run),
                            }
                        )
                        if run.next == "stepwise":  # auto: batch EM is far from converged
                            logger.info(
                                "stepwise EM: at most %d passes, mini-batches of %d rows",
                                run.stepwise.passes,
                                batch_size,
                            )
                    run.check()
                    if checkpoint_every and (
                        len(run.full_history) % checkpoint_every == 0 or run.next == "stepwise"
                    ):
                        save()
            except Exception:
                data.check_unchanged()  # a store replaced mid-read says so, whatever broke
                raise
            result = run.result()
            if best is None or result.lower_bound > best.lower_bound:
                best = result
            if checkpoint is not None and checkpoint_every and start + 1 < runs:
                checkpoint(FitState(start + 1, None, None, [], rng.bit_generator.state, best))
    assert best is not None
    return best


def parameters(run: EMRun) -> dict[str, NDArray[np.float64]]:
    """The run's means and weights now, for the events a ``callback`` gets."""
    return {"means": run.means, "weights": run.weights}


@dataclass
class FitState:
    """Where a fit stands: enough to continue it exactly.

    ``run`` is the start in progress; ``history`` the records of its iterations and passes so
    far (of the phases before, in stepwise passes); ``means`` and ``weights`` its parameters
    after its last batch iteration (None in stepwise passes, and when it has not begun);
    ``rng_state`` the random generator's state now (after the start's draws and its passes';
    in a pass, its snapshot says where the pass's draws began); ``best`` the best finished
    start so far (:meth:`EMRun.state`).
    """

    run: int
    means: NDArray[np.float64] | None
    weights: NDArray[np.float64] | None
    history: list[dict[str, Any]]
    rng_state: dict[str, Any]
    best: EMResult | None
    #: In stepwise passes, the snapshot of :meth:`~bmm_dask._stepwise.StepwiseRun.snapshot`
    #: and where the pass stands (:func:`~bmm_dask._stepwise.stepwise_pass`) to resume from.
    stepwise: dict[str, Any] | None = None
