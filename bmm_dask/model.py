"""``BernoulliMixture``: the scikit-learn style face of the EM driver."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from datetime import UTC, datetime
from numbers import Integral
from pathlib import Path
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils._param_validation import Interval, InvalidParameterError

from bmm_dask._em import EMResult, FitState, count_iterations, count_passes, fit_em
from bmm_dask._estep import SPLIT_EVERY, PackedData, as_packed, predict_log_resp
from bmm_dask._events import jsonable
from bmm_dask._kernels import log_prior
from bmm_dask._progress import FitBar
from bmm_dask._settings import DEFAULTS, EM_SETTINGS, sklearn_constraints
from bmm_dask.errors import DataError, ModelFileError, SettingsError, setting
from bmm_dask.io import Dataset, read_checkpoint, write_checkpoint, write_model
from bmm_dask.io._model import read_model_with_names
from bmm_dask.memory import check_fits

__all__ = ["BernoulliMixture", "InvalidSettingError", "feature_names_of"]

logger = logging.getLogger(__name__)

_SAVED_SETTINGS = (
    "n_components",
    "max_iter",
    "tol",
    "mean_tol",
    "n_init",
    "init",
    "alpha",
    "random_state",
    "dtype",
    "algorithm",
    "passes",
    "batch_size",
    "step_exponent",
    "steps_in_flight",
)

#: The arrays of a stepwise fit's checkpoint (the rest of it is JSON).
STEPWISE_ARRAYS = (
    "resp_sum",
    "resp_x",
    "means",
    "weights",
    "pass_start",
    "in_flight_means",
    "in_flight_weights",
)


class InvalidSettingError(SettingsError, InvalidParameterError):
    """A setting of :class:`BernoulliMixture` outside its ``_parameter_constraints``.

    Both bmm_dask's :class:`~bmm_dask.errors.SettingsError` (so the command line reports it in one
    line and exits with status 2) and scikit-learn's ``InvalidParameterError`` (a ``ValueError``
    and a ``TypeError``, what every scikit-learn estimator raises), with scikit-learn's message.
    """


class BernoulliMixture(ClusterMixin, BaseEstimator):
    """A mixture of multivariate Bernoulli distributions, fitted by EM over Dask chunks.

    ``log p(x) = logsumexp_k [log pi_k + sum_d x_d log mu_kd + (1 - x_d) log(1 - mu_kd)]``

    Parameters
    ----------
    n_components : int, default=1
        The number of components K.
    max_iter : int, default=100
        Batch EM iterations per start at most (stepwise passes are bounded by ``passes``).
    tol : float, default=1e-4
        Stop when the objective (mean log-likelihood per sample plus the smoothing prior's log)
        changes by less than this. 0 runs exactly ``max_iter`` iterations.
    mean_tol : float, default=None
        Also stop when the means move less than this (L2 distance between successive means, the
        original notebook's test). None: only ``tol`` decides.
    n_init : int, default=1
        Starts to run; the one with the highest objective is kept.
    init : {"kmeans++", "random", "random_from_data"}, default="kmeans++"
        How to start, from a sample of rows and its feature rates p: k-means on the sample
        (greedy k-means++ seeding, then 10 k-means steps, both measuring rows by their
        likelihood), p times a random factor in [0.5, 1.5] per component and feature, or
        randomly chosen rows x, each as ``(x + p) / 2``.
    means_init : array-like of shape (n_components, n_features), default=None
        Starting means in (0, 1); then ``init`` and ``n_init`` are not used.
    weights_init : array-like of shape (n_components,), default=None
        Starting weights (positive, summing to 1); uniform when not given.
    alpha : float, default=0.1
        Additive (Lidstone) smoothing of the means, as in BernoulliNB:
        ``mu = (S + alpha) / (N_k + 2 alpha)``. 0 is maximum likelihood, with means clipped to
        [1e-10, 1 - 1e-10]. The default gave the best test log-likelihood on MNIST of the
        values tried (docs/performance.md, "EM on MNIST").
    random_state : int >= 0, numpy Generator or None, default=None
        Seeds every random draw, all made on the driver: the same seed gives the same model on
        any cluster. (A legacy ``numpy.random.RandomState`` is not taken.)
    dtype : {"float32", "float64"}, default="float32"
        Arithmetic of the E-step: float32 for speed, float64 for exactness. Statistics are
        always summed in float64.
    warm_start : bool, default=False
        Start from the fitted means and weights of a previous ``fit``.
    verbose : int, default=0
        1 shows a progress bar of the iterations on stderr; 2 a line per iteration.
    algorithm : {"auto", "batch", "stepwise"}, default="auto"
        Batch EM reads every row once per iteration. Stepwise (online) EM moves the parameters
        after every mini-batch of rows, and gets near batch EM's optimum in a few passes over
        the data (``passes``), but each step costs a round trip to the cluster. "auto" runs 3
        batch iterations; if the third still gained at least 100 x ``tol`` and a stepwise pass
        costs at most 3 batch iterations by the cost model, at most 3 stepwise passes (fewer
        once a pass gains less than 100 x ``tol``); then batch iterations until ``tol``
        (``max_iter`` counts the batch iterations before and after the passes). Elsewhere, and on fewer than 7,680 rows, it is batch
        EM. The rule and why: "Stepwise EM" in the README.
    passes : int, default=10
        Passes over the data of stepwise EM (at most, and at most 3, for "auto"); the
        passes are not counted in ``max_iter``.
    batch_size : int or "auto", default="auto"
        Rows per mini-batch of stepwise EM. "auto": enough for every worker thread to work
        about 60 ms per step, at most a 30th of the rows and at least 256. It follows the
        cluster, and the size used is kept in ``batch_size_``: give it to get the same model
        on another cluster.
    step_exponent : float, default=0.55
        kappa in the step sizes ``(t + 2) ** -kappa`` of stepwise EM, in (0.5, 1]: a larger
        kappa makes the steps shrink faster, so later mini-batches move the parameters less.
    steps_in_flight : int, default=2
        Steps of stepwise EM submitted to the cluster before the oldest one's statistics are
        in: the workers compute the next mini-batch while the driver updates the parameters.
        The j-th mini-batch of a pass is then computed with the parameters from
        ``steps_in_flight`` steps before (the pass's first ones with those it began with).
        1 is stepwise EM as published, and what :meth:`partial_fit` does.

    Attributes
    ----------
    means_ : array of shape (n_components, n_features)
    weights_ : array of shape (n_components,)
    converged_ : bool
    n_iter_ : int
        Batch EM iterations of the best start (after :meth:`partial_fit`, its steps).
    n_passes_ : int
        Stepwise passes over the data of the best start.
    lower_bound_ : float
        The objective of the best start at its last iteration or pass.
    history_ : list of dict
        Per batch iteration and stepwise pass of the best start, in the order they ran:
        objective, change, mean_shift, seconds, reseeded; a batch iteration's record has
        ``iteration`` (counting batch iterations), a pass's has ``pass`` (counting passes),
        ``steps`` and ``batch_size``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,), of str (dtype object)
        The features' names, where the data fitted on had them: a dataset's stored names
        (:attr:`bmm_dask.io.Dataset.feature_names`) or a data frame's column names (when all
        are strings). Data with other names is refused later; data without names (NumPy,
        SciPy, Dask arrays, a dataset stored without names) is taken as it is.
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        max_iter: int = DEFAULTS["max_iter"],
        tol: float = DEFAULTS["tol"],
        mean_tol: float | None = DEFAULTS["mean_tol"],
        n_init: int = DEFAULTS["n_init"],
        init: str = DEFAULTS["init"],
        means_init: NDArray[np.float64] | None = None,
        weights_init: NDArray[np.float64] | None = None,
        alpha: float = DEFAULTS["alpha"],
        random_state: int | np.random.Generator | None = None,
        dtype: str = DEFAULTS["dtype"],
        warm_start: bool = False,
        verbose: int = 0,
        algorithm: str = DEFAULTS["algorithm"],
        passes: int = DEFAULTS["passes"],
        batch_size: int | str = DEFAULTS["batch_size"],
        step_exponent: float = DEFAULTS["step_exponent"],
        steps_in_flight: int = DEFAULTS["steps_in_flight"],
    ) -> None:
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.mean_tol = mean_tol
        self.n_init = n_init
        self.init = init
        self.means_init = means_init
        self.weights_init = weights_init
        self.alpha = alpha
        self.random_state = random_state
        self.dtype = dtype
        self.warm_start = warm_start
        self.verbose = verbose
        self.algorithm = algorithm
        self.passes = passes
        self.batch_size = batch_size
        self.step_exponent = step_exponent
        self.steps_in_flight = steps_in_flight

    # The range of each setting, for scikit-learn's _validate_params, which _check_settings
    # calls first (``[0, inf)`` leaves out infinity as well as NaN). The EM settings' ranges
    # are those of the command line's options: both are made from bmm_dask._settings.
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "means_init": ["array-like", None],
        "weights_init": ["array-like", None],
        "random_state": [Interval(Integral, 0, None, closed="left"), np.random.Generator, None],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        **{setting.name: sklearn_constraints(setting) for setting in EM_SETTINGS},
    }

    # ------------------------------------------------------------------ checks

    def _check_settings(
        self, n_features: int, n_samples: int | None = None, source: str = "the data"
    ) -> None:
        """Check every setting, for data of ``n_features`` features (and ``n_samples`` rows).

        The one place settings are checked, by ``fit`` and by the command line before it starts
        a cluster: each setting's range by scikit-learn's ``_parameter_constraints``, then what
        constraints cannot say (shapes of the starting values, the driver's memory).

        Raises
        ------
        InvalidSettingError
            A setting is outside its range (scikit-learn's message).
        SettingsError
            The settings do not fit each other, the data, or the driver's memory.
        """
        try:
            self._validate_params()
        except InvalidParameterError as err:
            raise InvalidSettingError(str(err)) from err
        K = self.n_components
        # The driver holds the means, the new means and up to SPLIT_EVERY partial sums of the
        # statistics (K x D float64 each) at once.
        check_fits(
            8 * K * n_features * (4 + SPLIT_EVERY),
            f"{K:,} components of {n_features:,} features",
        )
        # The smoothing prior's log is about -2 alpha K D log 2 at its largest: past the float
        # range the objective is -inf from the first iteration, blamed on nothing.
        if not math.isfinite(2 * float(self.alpha) * K * n_features * math.log(2)):
            raise SettingsError(
                f"{setting('--alpha')} {self.alpha:g} is too large: the smoothing prior's log "
                f"overflows for {K:,} components of {n_features:,} features; give at most about "
                f"{1e300 / (K * n_features):.0e}"
            )
        if n_samples is not None and n_samples < K:
            raise SettingsError(
                f"n_components={K} is larger than the number of samples in {source} "
                f"(n_samples={n_samples}); fit fewer components or more rows"
            )
        if self.means_init is not None:
            means = np.asarray(self.means_init, dtype=np.float64)
            if means.shape != (K, n_features):
                raise SettingsError(
                    f"means_init must have shape ({K}, {n_features}); got {means.shape}"
                )
            if not np.all((means > 0) & (means < 1)):
                raise SettingsError("means_init must lie strictly between 0 and 1")
        if self.weights_init is not None:
            weights = np.asarray(self.weights_init, dtype=np.float64)
            if weights.shape != (K,) or np.any(weights <= 0) or not np.isclose(weights.sum(), 1):
                raise SettingsError(
                    f"weights_init must be {K} positive numbers summing to 1; got "
                    f"{np.array2string(weights.ravel(), threshold=6, precision=3)}"
                )
        if self.warm_start and hasattr(self, "means_") and self.means_.shape != (K, n_features):
            raise SettingsError(
                f"warm_start starts from the fitted means, of shape {self.means_.shape}, but got "
                f"n_components={K} and {n_features} features; keep both, or set warm_start=False"
            )

    def _rng(self) -> np.random.Generator:
        if isinstance(self.random_state, np.random.Generator):
            return self.random_state
        return np.random.default_rng(self.random_state)

    def _check_fitted(self) -> None:
        if not hasattr(self, "means_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _check_components(self) -> None:
        """Refuse to go on from, or save, a model whose n_components is not its fitted K (a
        set_params after fitting): the settings would describe another model."""
        fitted = len(self.weights_)
        if self.n_components != fitted:
            raise SettingsError(
                f"n_components is {self.n_components}, but the model was fitted with {fitted} "
                f"components (set_params after fitting?); set n_components={fitted} again, or "
                "fit afresh"
            )

    def _data(self, X: Any) -> tuple[PackedData, bool]:
        """Packed rows, and whether results should be computed (NumPy in, NumPy out)."""
        lazy = isinstance(X, da.Array | Dataset)
        data = as_packed(X)
        if hasattr(self, "n_features_in_"):
            self._check_n_features(data.n_features, data.source)
            self._check_feature_names(X)
        return data, not lazy

    def _check_feature_names(self, X: Any, model_path: str | None = None) -> None:
        """Refuse data whose features' names differ from those the model was fitted on.

        As scikit-learn's ``_check_feature_names`` with ``reset=False``: names that differ (other
        names, some missing, or another order) raise, names given to a model fitted without
        them warn, and data without names given to a model fitted with them warns too (its
        columns may be in another order: the items of a basket file sorted one way, those of a
        Matrix Market file another).

        Parameters
        ----------
        X : any input ``fit`` takes
            The data; only its names are looked at.
        model_path : str, default=None
            Where the model was read from, for the message.

        Raises
        ------
        DataError
            If ``X`` has names and they are not ``feature_names_in_``, in order.
        """
        names = feature_names_of(X)
        source = X.path if isinstance(X, Dataset) else "X"
        fitted = getattr(self, "feature_names_in_", None)
        if names is None:
            if fitted is not None:
                warnings.warn(
                    f"{source} has no feature names, but {type(self).__name__} was fitted with "
                    "feature names: its columns are taken to be in the same order",
                    UserWarning,
                    stacklevel=2,
                )
            return
        if fitted is None:
            warnings.warn(
                f"{source} has feature names, but {type(self).__name__} was fitted without "
                "feature names",
                UserWarning,
                stacklevel=2,
            )
            return
        if len(names) == len(fitted) and np.array_equal(names, fitted):
            return
        unseen = sorted(set(names) - set(fitted))
        missing = sorted(set(fitted) - set(names))
        differences = []
        if unseen:
            differences.append(f"names unseen at fit time: {_some(unseen)}")
        if missing:
            differences.append(f"names seen at fit time, yet now missing: {_some(missing)}")
        if not differences:
            first = next(d for d in range(len(names)) if names[d] != fitted[d])
            differences.append(
                f"the same names in another order (feature {first} is {names[first]!r}, "
                f"was {fitted[first]!r})"
            )
        model = f"the model {model_path}" if model_path else type(self).__name__
        raise DataError(
            f"{source}: the feature names should match those that {model} was fitted on; "
            + "; ".join(differences)
        )

    def _reset_feature_names(self, names: NDArray[np.object_] | None) -> None:
        """Set ``feature_names_in_`` to the names of the data fitted on, or remove it."""
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):  # fitted again, on data without names
            del self.feature_names_in_

    def _check_n_features(
        self, n_features: int, source: str, model_path: str | None = None
    ) -> None:
        """Refuse data of another width than the data the model was fitted on."""
        if n_features != self.n_features_in_:
            model = f"the model {model_path}" if model_path else type(self).__name__
            raise DataError(
                f"{source}: X has {n_features} features, but {model} is expecting "
                f"{self.n_features_in_} features as input (those it was fitted on)"
            )

    # ------------------------------------------------------------------ fitting

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: SciPy sparse matrices and arrays are taken as they are."""
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        callback: Any = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
        checkpoint_attrs: dict[str, Any] | None = None,
        persist: bool | None = None,
    ) -> BernoulliMixture:
        """Fit the mixture by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, a Dask array of the same, or an
            opened dataset (``bmm_dask.open_dataset``)
        y : ignored
        callback : callable, default=None
            Called on the driver with each event of the fit, a dict whose "kind" says what it
            is: "run" (a start begins: K, the data's size, ``max_iter`` and the passes it may
            take, ...), "iteration" and "pass" (a batch iteration's or a stepwise pass's record,
            as in ``history_``), "step" (a stepwise step: where it is in its pass); the last
            three also carry the parameters after them, ``means`` and ``weights``. Every event
            is also logged, less the parameters, as a Dask event on topic "bmm-dask" when a
            distributed client is in use. For progress displays, and to watch a fit (the
            benchmarks do). An exception it raises stops the fit.
        checkpoint : str or path-like, default=None
            Save the state of the fit in this store every ``checkpoint_every`` iterations and
            after each start (a Zarr group marked unfinished; :meth:`save` to the same path
            replaces it with the model).
        resume : bool
            Continue from the state saved in ``checkpoint`` (same settings and data): the
            result equals that of an uninterrupted fit, bit for bit in float64.
        checkpoint_attrs : dict, default=None
            Also recorded in the checkpoint, and on ``resume`` checked against it. For an
            opened dataset, its fingerprint (``data``: path, size, and which writing of the
            store) is recorded and checked when this does not give one.
        persist : bool, default=None
            Hold the packed data in the cluster's memory (True) or read it from its store every
            iteration (False); by default, held when it takes at most half the memory.

        Returns
        -------
        self

        Raises
        ------
        InvalidSettingError
            A setting is outside its range in ``_parameter_constraints``: scikit-learn's
            ``InvalidParameterError`` (a ``ValueError`` and a ``TypeError``) with its message,
            and a :class:`~bmm_dask.errors.SettingsError`.
        SettingsError
            Settings that do not fit the data or each other: more components than rows, starting
            values of the wrong shape, ``warm_start`` from a model of another shape, or
            statistics too large for this machine's memory.
        DataError
            X is not a 2-d array of 0/1 (or booleans), or is empty.
        """
        data = as_packed(X)
        self._check_settings(data.n_features, data.n_samples, data.source)
        # Read before the fit, so that unreadable names stop it before the work, not after.
        feature_names = feature_names_of(X)
        means_init, weights_init = self.means_init, self.weights_init
        if self.warm_start and hasattr(self, "means_"):
            means_init, weights_init = self.means_, self.weights_
        settings = self._settings()
        if isinstance(X, Dataset) and "data" not in (checkpoint_attrs or {}):
            # resuming on other data at the same path would mix two datasets in one model
            checkpoint_attrs = {**(checkpoint_attrs or {}), "data": X.fingerprint()}
        resume_state = None
        if resume:
            if checkpoint is None:
                raise SettingsError("resume needs the checkpoint to continue from")
            resume_state = self._resume_state(
                checkpoint, settings, checkpoint_attrs or {}, data.n_features, data.n_samples
            )
        save = None
        if checkpoint is not None and checkpoint_every:
            if (
                isinstance(checkpoint_every, bool)
                or not isinstance(checkpoint_every, Integral)
                or checkpoint_every < 1
            ):
                raise SettingsError(
                    f"checkpoint_every must be a whole number of at least 1; got {checkpoint_every!r}"
                )
            attrs = {"settings": settings, **(checkpoint_attrs or {})}

            def save(state: FitState) -> None:
                arrays, meta = _state_to_files(state)
                write_checkpoint(checkpoint, arrays, meta, attrs)

        with _progress(self.verbose) as show:
            result = fit_em(
                data,
                n_components=self.n_components,
                rng=self._rng(),
                n_init=self.n_init,
                init=self.init,
                means_init=means_init,
                weights_init=weights_init,
                alpha=float(self.alpha),
                max_iter=self.max_iter,
                tol=float(self.tol),
                mean_tol=self.mean_tol,
                dtype=np.dtype(self.dtype),
                callback=_both(show, callback),
                checkpoint=save,
                checkpoint_every=checkpoint_every if save is not None else 0,
                resume=resume_state,
                persist=persist,
                algorithm=self.algorithm,
                passes=self.passes,
                batch_size=None if self.batch_size == "auto" else self.batch_size,
                step_exponent=float(self.step_exponent),
                steps_in_flight=int(self.steps_in_flight),
            )
        self._set_fitted(result, data.n_features, feature_names)
        stepwise_only = self.algorithm == "stepwise"
        if not (result.converged or stepwise_only) and (self.tol > 0 or self.mean_tol is not None):
            last = result.history[-1]["change"] if result.history else float("nan")
            reseeded = sum(1 for record in result.history[-5:] if record["reseeded"])
            if reseeded:  # more iterations would not help: components keep losing their rows
                advice = (
                    f"components lost all their rows and were re-seeded in {reseeded} of the "
                    "last iterations: try fewer components"
                )
            else:
                advice = (
                    f"try a larger {setting('--max-iter')}, a larger {setting('--tol')}, or "
                    f"more smoothing ({setting('--alpha')})"
                )
            iterations = f"{self.max_iter} iteration{'s' if self.max_iter != 1 else ''}"
            warnings.warn(
                f"EM did not converge in {iterations} (the last change of the objective was "
                f"{last:.2e}, {setting('--tol')} is {self.tol}); {advice}",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _set_fitted(
        self,
        result: EMResult,
        n_features: int,
        feature_names: NDArray[np.object_] | None = None,
    ) -> None:
        """Take the fitted attributes from an EM run's result (and the data's feature names)."""
        self.means_ = result.means
        self.weights_ = result.weights
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.n_passes_ = result.n_passes
        self.lower_bound_ = result.lower_bound
        self.history_ = result.history
        self.n_features_in_ = n_features
        self._reset_feature_names(feature_names)
        self.batch_size_ = _batch_size_used(result.history)
        self._stepwise_state = None  # partial_fit after fit starts from the fitted parameters

    def partial_fit(self, X: Any, y: Any = None) -> BernoulliMixture:
        """One step of stepwise EM on the rows of ``X``, for data that arrives over time.

        The first call starts the model (from ``means_init`` and ``weights_init``, else by
        ``init`` on ``X``); every call then blends the statistics of ``X`` into the running
        ones with the step size ``(t + 2) ** -step_exponent`` and updates the means and
        weights, as :meth:`fit` does with ``algorithm="stepwise"`` for each mini-batch. After
        :meth:`fit`, the steps start from the fitted model. A component whose running weight
        falls below 0.01 / K is re-seeded, as in :meth:`fit`'s stepwise passes (counted in the
        step's record of ``history_``). The smoothing ``alpha`` counts
        against all the rows seen so far. The first call takes the data's feature names (as
        ``fit`` does); later calls refuse data with other names.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, Dask array, or Dataset
            The rows of this step: one mini-batch.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        from bmm_dask._estep import estep, task_blocks
        from bmm_dask._init import starting_values
        from bmm_dask._stepwise import StepwiseState

        data = task_blocks(as_packed(X))
        # Everything is checked, and the step computed, before the model changes at all.
        if data.n_samples == 0:
            raise DataError(f"{data.source}: no rows to take a step on")
        fitted = hasattr(self, "means_")
        feature_names = None
        if fitted:
            self._check_n_features(data.n_features, data.source)
            self._check_feature_names(X)
            self._check_components()
            means, weights = self.means_, self.weights_
        else:
            self._check_settings(data.n_features, data.n_samples, data.source)
            feature_names = feature_names_of(X)
            means, weights = starting_values(
                data, self.n_components, self.init, self._rng(), self.means_init, self.weights_init
            )
        started = time.perf_counter()
        stats = estep(data, means, weights, dtype=np.dtype(self.dtype))
        state = getattr(self, "_stepwise_state", None)
        if state is None:  # the first step, or the first after fit: start from these
            state = self._stepwise_state = StepwiseState.start(means, weights)
            self.history_ = []
        state.update(stats, float(self.step_exponent))
        reseeded = state.reseed()
        self.means_, self.weights_ = state.parameters(state.n_seen, float(self.alpha))
        objective = (stats["loglik"] + log_prior(means, float(self.alpha))) / stats["n_samples"]
        self.history_.append(
            {
                "step": state.step,
                "iteration": state.step,
                "objective": objective,
                "change": None,
                "mean_shift": float(np.linalg.norm(self.means_ - means)),
                "seconds": time.perf_counter() - started,
                "reseeded": reseeded,
            }
        )
        self.n_iter_ = state.step
        self.n_passes_ = 0
        self.lower_bound_ = objective
        self.converged_ = False
        self.n_features_in_ = data.n_features
        if not fitted:  # the first call sets the names; later calls were checked against them
            self._reset_feature_names(feature_names)
        return self

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit, then return the most likely component of each row (as ``fit(X).predict(X)``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, Dask array, or Dataset
            The rows.
        y : None
            Ignored.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self.fit(X).predict(X)

    # ------------------------------------------------------------------ using the model

    def _per_row(self, X: Any, what: str) -> Any:
        self._check_fitted()
        data, eager = self._data(X)
        result = predict_log_resp(data, self.means_, self.weights_, what, np.dtype(self.dtype))  # type: ignore[arg-type]
        if eager:
            (result,) = dask.compute(result)
        return result

    def predict(self, X: Any) -> Any:
        """The most likely component of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, Dask array, or Dataset
            The rows, as ``fit`` takes them.

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
            A Dask array when ``X`` is one (or a dataset), computed when it is NumPy.
        """
        return self._per_row(X, "label")

    def predict_proba(self, X: Any) -> Any:
        """The responsibility of each component for each row (rows sum to 1).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, Dask array, or Dataset
            The rows, as ``fit`` takes them.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
        """
        return self._per_row(X, "proba")

    def score_samples(self, X: Any) -> Any:
        """The log-likelihood of each row, in nats.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, Dask array, or Dataset
            The rows, as ``fit`` takes them.

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
        """
        return self._per_row(X, "score")

    def _log_likelihood(self, X: Any) -> tuple[float, int]:
        """Total log-likelihood of the rows, and their number (the data packed once)."""
        self._check_fitted()
        data, _ = self._data(X)
        scores = predict_log_resp(data, self.means_, self.weights_, "score", np.dtype(self.dtype))
        (total,) = dask.compute(scores.sum())
        return float(total), data.n_samples

    def score(self, X: Any, y: Any = None) -> float:
        """The mean log-likelihood per row, in nats.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, Dask array, or Dataset
            The rows, as ``fit`` takes them.
        y : None
            Ignored.

        Returns
        -------
        float
        """
        total, n = self._log_likelihood(X)
        return total / n

    def _n_parameters(self) -> int:
        K, D = self.means_.shape
        return K * D + K - 1

    def bic(self, X: Any) -> float:
        """Bayesian information criterion, ``-2 log L + p log N``; lower is better.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, Dask array, or Dataset
            The rows, as ``fit`` takes them.

        Returns
        -------
        float
        """
        total, n = self._log_likelihood(X)
        return -2 * total + self._n_parameters() * np.log(n)

    def aic(self, X: Any) -> float:
        """Akaike information criterion, ``-2 log L + 2 p``; lower is better.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) of 0/1, Dask array, or Dataset
            The rows, as ``fit`` takes them.

        Returns
        -------
        float
        """
        total, _ = self._log_likelihood(X)
        return -2 * total + 2 * self._n_parameters()

    def sample(self, n_samples: int = 1) -> tuple[NDArray[np.uint8], NDArray[np.intp]]:
        """Draw rows from the fitted mixture, with the model's random generator.

        Parameters
        ----------
        n_samples : int, default=1
            Rows to draw.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features), uint8
            The rows, 0/1.
        y : ndarray of shape (n_samples,)
            The component each row was drawn from.
        """
        self._check_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise SettingsError(
                f"n_samples must be a whole number of at least 1; got {n_samples!r}"
            )
        rng = self._rng()
        y = rng.choice(len(self.weights_), size=n_samples, p=self.weights_ / self.weights_.sum())
        X = (rng.random((n_samples, self.means_.shape[1])) < self.means_[y]).astype(np.uint8)
        return X, y

    # ------------------------------------------------------------------ files

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
    ) -> Path:
        """Write the fitted model as a Zarr group, whole or not at all.

        Parameters
        ----------
        path : str or path-like
            The group to write: ``means``, ``weights``, ``feature_names`` where the model has
            them, and attributes (settings, history, ...).
        overwrite : bool, default=False
            Replace ``path`` if it exists (a checkpoint of this fit, say).
        attrs : dict, default=None
            Further attributes to record (where the data came from, the fit's time).

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        from bmm_dask import __version__

        self._check_fitted()
        self._check_components()
        meta = {
            "settings": self._settings(),
            "n_iter": int(self.n_iter_),
            "n_passes": count_passes(self.history_ or []),
            "converged": bool(self.converged_),
            "lower_bound": float(self.lower_bound_),
            "history": _jsonable(self.history_),
            "n_features": int(self.n_features_in_),
            "bmm_dask_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **(attrs or {}),
        }
        return write_model(
            path,
            self.means_,
            self.weights_,
            meta,
            overwrite=overwrite,
            feature_names=getattr(self, "feature_names_in_", None),
        )

    def _settings(self) -> dict[str, Any]:
        """The settings a model file records (JSON values)."""
        settings = {name: getattr(self, name) for name in _SAVED_SETTINGS}
        if not isinstance(settings["random_state"], int | type(None)):
            settings["random_state"] = None
        settings["dtype"] = str(settings["dtype"])
        return settings

    def _resume_state(
        self,
        path: str | os.PathLike[str],
        settings: dict[str, Any],
        expected: dict[str, Any],
        n_features: int,
        n_samples: int,
    ) -> FitState:
        arrays, meta, attrs = read_checkpoint(path)
        for name, value in {"settings": settings, **expected}.items():
            then = attrs.get(name)
            if name == "data" and then is None:
                continue  # a checkpoint of the Python API from before it recorded its data
            if then != value:
                if isinstance(then, dict) and isinstance(value, dict):
                    keys = sorted(k for k in {*then, *value} if then.get(k) != value.get(k))
                    differ = "; ".join(
                        f"{k} {then.get(k)!r} then, {value.get(k)!r} now" for k in keys
                    )
                else:
                    differ = f"{then!r} then, {value!r} now"
                raise SettingsError(
                    f"{path}: its checkpoint was made with other {name} ({differ}); resume with "
                    f"the same ones, or fit afresh ({setting('--overwrite')})"
                )
        runs = 1 if self.means_init is not None else self.n_init
        shapes = [a.shape for n, a in arrays.items() if n.endswith("means") and a.ndim == 2]
        if any(shape[1] != n_features for shape in shapes):
            raise ModelFileError(
                f"{path}/checkpoint.npz: its means are not of the data's {n_features} "
                f"features; the checkpoint is damaged, fit afresh ({setting('--overwrite')})"
            )
        K = self.n_components
        expected = {  # the shape of each array of a stepwise snapshot, but its steps in flight
            "stepwise_resp_sum": (K,),
            "stepwise_resp_x": (K, n_features),
            "stepwise_weights": (K,),
            "stepwise_pass_start": (K, n_features),
            "stepwise_in_flight_means": (K, n_features),
            "stepwise_in_flight_weights": (K,),
        }
        for name, shape in expected.items():
            if name in arrays and arrays[name].shape[-len(shape) :] != shape:
                raise ModelFileError(
                    f"{path}/checkpoint.npz: {name} has shape {arrays[name].shape}, not of "
                    f"{K} components of {n_features} features; the checkpoint is damaged, fit "
                    f"afresh ({setting('--overwrite')})"
                )
        if meta.get("stepwise") is not None:
            position = meta["stepwise"].get("position", 0)
            if position > n_samples:  # a pass has at most a step per row
                raise ModelFileError(
                    f"{path}/checkpoint.npz: its stepwise position {position} is past the "
                    f"{n_samples} rows of the data; the checkpoint is damaged, fit afresh "
                    f"({setting('--overwrite')})"
                )
            meta["stepwise"]["checkpoint"] = os.fspath(path)  # for what a pass finds wrong
        shapes = [shape[0] for shape in shapes]
        if meta["run"] >= runs or any(k != self.n_components for k in shapes):
            raise ModelFileError(
                f"{path}/checkpoint.npz: start {meta['run'] + 1} of means of "
                f"{shapes[0] if shapes else '?'} components, for a fit of {runs} start(s) of "
                f"{self.n_components}; the checkpoint is damaged, fit afresh "
                f"({setting('--overwrite')})"
            )
        return _state_from_files(arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BernoulliMixture:
        """Read a model written by :meth:`save` (or ``bmm-dask fit``).

        Parameters
        ----------
        path : str or path-like
            The model's group.

        Returns
        -------
        BernoulliMixture
            Fitted, with its settings; ``attrs_`` holds all the group's attributes.

        Raises
        ------
        ModelFileError
            The path holds no model, a checkpoint, or a model of a newer format.
        """
        means, weights, attrs, names = read_model_with_names(path)
        settings = {k: v for k, v in attrs.get("settings", {}).items() if k in _SAVED_SETTINGS}
        if "step_exponent" in settings and "steps_in_flight" not in settings:
            settings["steps_in_flight"] = 1  # saved before there was a choice: one at a time
        model = cls(**settings)
        model.means_, model.weights_ = means, weights
        model.converged_ = bool(attrs.get("converged", False))
        model.lower_bound_ = float(attrs.get("lower_bound", np.nan))
        model.history_ = list(attrs.get("history", []))
        # models saved before passes were counted apart have both in their n_iter
        model.n_iter_ = (
            count_iterations(model.history_) if model.history_ else int(attrs.get("n_iter", 0))
        )
        model.n_passes_ = count_passes(model.history_)
        model.batch_size_ = _batch_size_used(model.history_)
        model.n_features_in_ = means.shape[1]
        if names is not None:
            model.feature_names_in_ = names
        model.attrs_ = attrs
        return model


def feature_names_of(X: Any) -> NDArray[np.object_] | None:
    """The names of the features of ``X``, where it has them, as scikit-learn keeps them.

    Parameters
    ----------
    X : any input :meth:`BernoulliMixture.fit` takes
        An opened dataset gives its stored names; a data frame (pandas, polars, ... as
        scikit-learn recognises them) its column names when all are strings; anything else
        (NumPy, SciPy and Dask arrays) has none.

    Returns
    -------
    ndarray of shape (n_features,), of str (dtype object), or None

    Raises
    ------
    DataError
        If a dataset's stored names cannot be read.
    TypeError
        If a data frame's column names mix strings and other types (scikit-learn's error).
    """
    if isinstance(X, Dataset):
        return X.feature_names
    # scikit-learn's own reading of a data frame's columns (through narwhals), so that names
    # mean the same here as in every scikit-learn estimator; it needs no data frame library.
    from sklearn.utils.validation import _get_feature_names

    return _get_feature_names(X)  # type: ignore[no-any-return]


def _some(names: list[str], shown: int = 5) -> str:
    """The first few of ``names``, for a one-line message."""
    head = ", ".join(repr(name) for name in names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _batch_size_used(history: list[dict[str, Any]]) -> int | None:
    """The mini-batch size of a fit's stepwise passes (None for batch EM alone)."""
    return next((r["batch_size"] for r in history if "batch_size" in r), None)


def _state_to_files(state: FitState) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """A fit's state as arrays and JSON, for a checkpoint."""
    arrays: dict[str, NDArray[Any]] = {}
    if state.means is not None and state.weights is not None:
        arrays["means"], arrays["weights"] = state.means, state.weights
    best = None
    if state.best is not None:
        arrays["best_means"], arrays["best_weights"] = state.best.means, state.best.weights
        best = {
            "converged": state.best.converged,
            "n_iter": state.best.n_iter,
            "lower_bound": state.best.lower_bound,
            "history": _jsonable(state.best.history),
        }
    stepwise = None
    if state.stepwise is not None:
        stepwise = dict(state.stepwise)
        for name in STEPWISE_ARRAYS:
            if name in stepwise:
                arrays[f"stepwise_{name}"] = np.asarray(stepwise.pop(name))
        stepwise["history"] = _jsonable(stepwise.get("history", []))
    meta = {
        "run": state.run,
        "history": _jsonable(state.history),
        "rng_state": state.rng_state,
        "best": best,
        "stepwise": stepwise,
    }
    return arrays, meta


def _state_from_files(arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> FitState:
    best = None
    if meta.get("best") is not None:
        b = meta["best"]
        best = EMResult(
            arrays["best_means"],
            arrays["best_weights"],
            b["converged"],
            b["n_iter"],
            b["lower_bound"],
            b["history"],
        )
    stepwise = meta.get("stepwise")
    if stepwise is not None:
        stepwise = dict(stepwise)
        for name in STEPWISE_ARRAYS:
            if f"stepwise_{name}" in arrays:
                stepwise[name] = arrays[f"stepwise_{name}"]
    return FitState(
        run=meta["run"],
        means=arrays.get("means"),
        weights=arrays.get("weights"),
        history=meta["history"],
        rng_state=meta["rng_state"],
        best=best,
        stepwise=stepwise,
    )


def _both(first: Any, second: Any) -> Any:
    if first is None or second is None:
        return first or second
    return lambda record: (first(record), second(record))


def _jsonable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History with plain floats, and infinities (the first change) as None, for JSON."""
    return [jsonable(record) for record in history]


#: The loggers of the EM loop's lines (verbose 2).
_LOOP_LOGGERS = ("bmm_dask._em", "bmm_dask._stepwise")


class _progress:
    """A progress bar (verbose 1) or a line per iteration and pass (verbose 2) on stderr;
    nothing at 0."""

    def __init__(self, verbose: int) -> None:
        self.verbose = verbose
        self.bar = FitBar(self._new_bar)
        self.handler: logging.Handler | None = None

    @staticmethod
    def _new_bar(total: int, unit: str, suffix: str) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc="EM" + suffix, unit=unit, file=sys.stderr)

    def __enter__(self) -> Any:
        if self.verbose >= 2:  # the lines of the batch iterations and the stepwise passes
            self.handler = logging.StreamHandler(sys.stderr)
            self.levels = {}
            for name in _LOOP_LOGGERS:
                loop_logger = logging.getLogger(name)
                loop_logger.addHandler(self.handler)
                self.levels[name] = loop_logger.level
                loop_logger.setLevel(logging.INFO)
            return None
        if self.verbose >= 1:
            return self.bar
        return None

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        if self.handler is not None:
            for name, level in self.levels.items():
                loop_logger = logging.getLogger(name)
                loop_logger.removeHandler(self.handler)
                loop_logger.setLevel(level)
