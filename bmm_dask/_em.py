"""The EM loop on the driver: E-step over the chunks, M-step, convergence, re-seeding of empty
components, several starts, checkpoints."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
from numpy.typing import NDArray

from bmm_dask import _estep as _estep_module
from bmm_dask._estep import (
    SPLIT_EVERY,
    PackedData,
    estep,
    fits_in_memory,
    task_blocks,
)
from bmm_dask._events import publish
from bmm_dask._init import count_distinct_rows, starting_values
from bmm_dask._kernels import log_prior, mstep, split_components
from bmm_dask._stepwise import (
    MIN_BATCH_SIZE,
    MIN_STEPS_PER_PASS,
    STEPS_IN_FLIGHT,
    auto_batch_size,
    run_stepwise,
)
from bmm_dask.errors import DataError

logger = logging.getLogger(__name__)

#: "auto" leaves its stepwise passes for batch EM after a pass that raised the objective by less
#: than this many times ``tol``: a pass then gains little more than a batch iteration would at
#: convergence. On MNIST a stepwise pass still gains 0.02-0.05 nats per row after 10 passes
#: (it goes on); on millions of rows drawn from a fitted model, far less after 2 or 3.
SWITCH_GAIN = 100

#: A component whose responsibilities sum to less than this (a thousandth of a row) has lost
#: its mass and is re-seeded.
EMPTY_MASS = 1e-3


@dataclass
class EMResult:
    """The outcome of one EM run from one start."""

    means: NDArray[np.float64]
    weights: NDArray[np.float64]
    converged: bool
    n_iter: int
    lower_bound: float
    history: list[dict[str, Any]] = field(default_factory=list)


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


def run_em(
    data: PackedData,
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    *,
    alpha: float,
    max_iter: int,
    tol: float,
    mean_tol: float | None = None,
    dtype: np.typing.DTypeLike = np.float32,
    split_every: int = SPLIT_EVERY,
    callback: Callable[[dict[str, Any]], None] | None = None,
    history: list[dict[str, Any]] | None = None,
    on_iteration: Callable[[NDArray[np.float64], NDArray[np.float64], list[dict[str, Any]]], None]
    | None = None,
    iteration_offset: int = 0,
    threads: int | None = None,
) -> EMResult:
    """EM from the given start: one graph and one ``compute`` per iteration.

    Stops when the objective (mean log-likelihood per sample, plus the log of the smoothing
    prior) changes by less than ``tol``, or the means move less than ``mean_tol`` (L2), or after
    ``max_iter`` iterations. ``tol = 0`` runs exactly ``max_iter`` iterations.

    ``history`` continues a run from a checkpoint: ``means`` and ``weights`` are then the
    parameters after its last iteration. ``on_iteration(means, weights, history)`` is called
    after every iteration with the new parameters (for checkpoints).

    Parameters
    ----------
    data : PackedData
        Packed rows.
    means : ndarray of shape (n_components, n_features)
        Starting Bernoulli means.
    weights : ndarray of shape (n_components,)
        Starting mixing weights.
    alpha : float
        Additive smoothing of the means; 0 for maximum likelihood.
    max_iter : int
        Most iterations, counting those in ``history``.
    tol : float
        Stop when the objective changes by less than this.
    mean_tol : float, default=None
        Also stop when the means move less than this (L2); None means no such test.
    dtype : dtype, default=np.float32
        Type of the E-step's arithmetic.
    split_every : int, default=SPLIT_EVERY
        Statistics of at most this many blocks are added in one task of the tree of sums.
    callback : callable, default=None
        Called with each iteration's record (a dict of ``iteration``, ``objective``,
        ``change``, ``mean_shift``, ``seconds`` and ``reseeded``).
    history : list of dict, default=None
        Records of the iterations already run, when continuing from a checkpoint.
    on_iteration : callable, default=None
        Called as ``on_iteration(means, weights, history)`` after every iteration.
    iteration_offset : int, default=0
        Added to the iteration numbers in the records (the passes of stepwise EM before).
    threads : int, default=None
        Worker threads of the cluster in use (asked once here when None).

    Returns
    -------
    EMResult
        The final parameters, whether the run converged, the number of iterations, the last
        objective and the history.

    Raises
    ------
    DataError
        If the data has fewer distinct rows than components (found when a component is
        re-seeded), or the objective stops being finite.
    """
    run = BatchRun(
        means,
        weights,
        alpha=alpha,
        max_iter=max_iter,
        tol=tol,
        mean_tol=mean_tol,
        history=history,
        iteration_offset=iteration_offset,
    )
    if threads is None:
        threads = _estep_module._cluster_threads()
    while not run.done:
        start = time.perf_counter()
        stats = estep(
            data,
            run.means,
            run.weights,
            dtype=dtype,
            split_every=split_every,
            threads=threads,
        )
        record = run.advance(stats, data, time.perf_counter() - start)
        publish(record)
        if callback is not None:
            callback(record)
        run.check()
        if on_iteration is not None:
            on_iteration(run.means, run.weights, run.history)
    return run.result()


class BatchRun:
    """Batch EM from one start, advanced one iteration at a time by the E-step's statistics:
    the M-step, the re-seeding of empty components, the record, the stopping test. The E-step
    is the caller's (one model's in :func:`run_em`, several models' in one pass when choosing
    the number of components), so that every way of running EM stops and records alike.

    Parameters are those of :func:`run_em`.
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
        Most iterations per start.
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
        Called with each iteration's record.
    checkpoint : callable, default=None
        Called with a :class:`FitState` every ``checkpoint_every`` iterations and between
        starts.
    checkpoint_every : int, default=0
        Iterations between checkpoints; 0 means none.
    resume : FitState, default=None
        A state to continue from.
    algorithm : {"batch", "stepwise", "auto"}, default="auto"
        Batch EM; stepwise EM for ``passes`` passes; or stepwise passes (fewer once a pass
        gains less than ``SWITCH_GAIN * tol``), then batch iterations until ``tol`` (at most
        ``max_iter`` iterations and passes in all); "auto" is batch EM on data of fewer than
        ``MIN_STEPS_PER_PASS * MIN_BATCH_SIZE`` rows.
    passes : int, default=10
        Passes of stepwise EM (see :func:`~bmm_dask._stepwise.run_stepwise`).
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
    if algorithm == "auto" and data.n_samples < MIN_STEPS_PER_PASS * MIN_BATCH_SIZE:
        # too few rows for a pass of many steps of useful size; batch iterations cost little
        algorithm = "batch"
    if algorithm != "batch" and batch_size is None:
        batch_size = auto_batch_size(data.n_samples, n_components, data.n_features, threads)
    if persist is None:
        persist = fits_in_memory(data)
    if persist:
        (bits,) = dask.persist(data.bits)
        data = PackedData(bits, data.n_features, data.source)  # read once: no reader
        logger.info("data persisted in memory (%.1f MB packed)", data.bits.nbytes / 1e6)
    else:
        logger.info(
            "data streamed from its store each iteration (%.1f MB packed)", data.bits.nbytes / 1e6
        )
    best: EMResult | None = resume.best if resume is not None else None
    runs = 1 if means_init is not None else n_init
    first = resume.run if resume is not None else 0
    with single_threaded_blas():
        for run in range(first, runs):
            history: list[dict[str, Any]] = []
            stepwise: list[dict[str, Any]] = []
            resuming = resume is not None and run == resume.run
            snapshot = None  # where the stepwise passes resume, if they do
            stepwise_done = algorithm == "batch"
            if resuming:
                assert resume is not None
                rng.bit_generator.state = resume.rng_state
            if resuming and resume.means is not None:  # in the batch iterations
                means, weights, history = resume.means, resume.weights, resume.history
                stepwise = list((resume.stepwise or {}).get("history", []))
                stepwise_done = True
            elif resuming and resume.stepwise is not None:  # in the stepwise passes
                snapshot = resume.stepwise
                means = weights = np.empty(0)  # the snapshot's statistics give them
            else:
                means, weights = starting_values(
                    data, n_components, init, rng, means_init, weights_init
                )
            if runs > 1:
                logger.info("start %d of %d", run + 1, runs)
            rng_state = rng.bit_generator.state  # after this start's draws: for the next starts

            if not stepwise_done:
                assert batch_size is not None

                def save_step(
                    snap: dict[str, Any],
                    run: int = run,
                    rng_state: dict[str, Any] = rng_state,
                    best: EMResult | None = best,
                ) -> None:
                    if checkpoint is None or not checkpoint_every:
                        return
                    if snap["position"] == 0 or snap["step"] % checkpoint_every == 0:
                        checkpoint(FitState(run, None, None, [], rng_state, best, snap))

                logger.info("stepwise EM: %d passes, mini-batches of %d rows", passes, batch_size)
                means, weights, stepwise = run_stepwise(
                    data,
                    means,
                    weights,
                    rng,
                    alpha=alpha,
                    passes=passes if algorithm == "stepwise" else min(passes, max_iter),
                    batch_size=batch_size,
                    step_exponent=step_exponent,
                    steps_in_flight=steps_in_flight,
                    dtype=dtype,
                    persisted=persist,
                    threads=threads,
                    callback=callback,
                    on_step=save_step,
                    resume=snapshot,
                    min_gain=SWITCH_GAIN * tol if algorithm == "auto" else None,
                )
                rng_state = rng.bit_generator.state  # after the passes' draws

            def save(
                means: NDArray[np.float64],
                weights: NDArray[np.float64],
                history: list[dict[str, Any]],
                run: int = run,
                rng_state: dict[str, Any] = rng_state,
                best: EMResult | None = best,
                done: dict[str, Any] | None = {"history": stepwise} if stepwise else None,
            ) -> None:
                if (
                    checkpoint is not None
                    and checkpoint_every
                    and len(history) % checkpoint_every == 0
                ):
                    checkpoint(FitState(run, means, weights, history, rng_state, best, done))

            if algorithm == "stepwise" or len(stepwise) >= max_iter:
                last = stepwise[-1]
                result = EMResult(means, weights, False, len(stepwise), last["objective"], stepwise)
            else:
                result = run_em(
                    data,
                    means,
                    weights,
                    alpha=alpha,
                    max_iter=max_iter - len(stepwise),
                    tol=tol,
                    mean_tol=mean_tol,
                    dtype=dtype,
                    callback=callback,
                    history=history,
                    on_iteration=save,
                    iteration_offset=len(stepwise),
                    threads=threads,
                )
                if stepwise:
                    result.history[:0] = stepwise
                    result.n_iter = len(result.history)
            if best is None or result.lower_bound > best.lower_bound:
                best = result
            if checkpoint is not None and checkpoint_every and run + 1 < runs:
                checkpoint(FitState(run + 1, None, None, [], rng.bit_generator.state, best))
    assert best is not None
    return best


@dataclass
class FitState:
    """Where a fit stands: enough to continue it exactly.

    ``run`` is the start in progress; ``means``, ``weights`` and ``history`` are its parameters
    after its last iteration (None and [] when it has not begun); ``rng_state`` is the random
    generator's state after its initialisation (and its stepwise passes); ``best`` the best
    finished start so far.
    """

    run: int
    means: NDArray[np.float64] | None
    weights: NDArray[np.float64] | None
    history: list[dict[str, Any]]
    rng_state: dict[str, Any]
    best: EMResult | None
    #: In stepwise passes, the snapshot of :func:`~bmm_dask._stepwise.run_stepwise` to resume
    #: from; in the batch iterations after them, ``{"history": [the passes' records]}``.
    stepwise: dict[str, Any] | None = None
