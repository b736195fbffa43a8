"""scikit-learn's estimator checks (``parametrize_with_checks``) on ``BernoulliMixture``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask
import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

from bmm_dask import BernoulliMixture

#: Small and fast: tol=0 runs exactly max_iter iterations, so no ConvergenceWarning either.
SETTINGS: dict[str, Any] = {"n_components": 2, "max_iter": 5, "tol": 0, "random_state": 0}


def _binary(X: Any) -> Any:
    """``X > 0.5`` for numbers (of any dtype, in lists too), so that the checks' continuous data
    become the 0/1 data a Bernoulli mixture takes; anything else (NaN, infinity, complex numbers,
    strings, 1-d arrays) is passed on as it is; sparse matrices stay sparse, for the estimator to refuse."""
    if scipy.sparse.issparse(X):  # kept sparse, as the estimator takes it
        if X.dtype.kind not in "biuf" or not np.isfinite(X.data).all():
            return X
        return (X > 0.5).astype(np.uint8)
    if not isinstance(X, np.ndarray | list) or np.iscomplexobj(X):
        return X
    try:
        values = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        return X
    if values.ndim != 2 or not np.isfinite(values).all():
        return X
    return (values > 0.5).astype(np.uint8)  # 0.5 splits both uniform [0, 3) and scaled blobs


class BinarizingBernoulliMixture(BernoulliMixture):
    """``BernoulliMixture`` on ``X > 0.5``: the checks that fit data then run on the real fit."""

    def fit(self, X: Any, y: Any = None, **kwargs: Any) -> BinarizingBernoulliMixture:
        return super().fit(_binary(X), y, **kwargs)  # type: ignore[return-value]

    def partial_fit(self, X: Any, y: Any = None) -> BinarizingBernoulliMixture:
        return super().partial_fit(_binary(X), y)  # type: ignore[return-value]

    def predict(self, X: Any) -> Any:
        return super().predict(_binary(X))

    def predict_proba(self, X: Any) -> Any:
        return super().predict_proba(_binary(X))

    def score_samples(self, X: Any) -> Any:
        return super().score_samples(_binary(X))

    def score(self, X: Any, y: Any = None) -> float:
        return super().score(_binary(X), y)


#: Checks that fail on purpose, with why. But for check_clustering, their errors are all
#: bmm_dask.DataError (a ValueError) in bmm_dask's words, where the check looks for scikit-learn's.
BY_DESIGN = {
    "check_clustering": (
        "no labels_ after fit: like GaussianMixture, labels come from predict, as storing "
        "them would cost a pass over data that may not fit in memory"
    ),
    "check_estimators_nan_inf": (
        "NaN and infinity are refused as values other than 0 and 1; the message says "
        "'only 0 and 1', not 'NaN' or 'inf'"
    ),
    "check_complex_data": (
        "complex numbers are refused as values other than 0 and 1; the message says "
        "'only 0 and 1', not 'Complex data not supported'"
    ),
    "check_dtype_object": (
        "an object array holding a dict is refused as values other than 0 and 1 (DataError), "
        "not with the TypeError of float(dict)"
    ),
    "check_estimators_empty_data_messages": (
        "data of 0 features is refused with 'at least one sample and one feature', not "
        "scikit-learn's '0 feature(s) (shape=...) while a minimum of 1 is required'"
    ),
    "check_fit2d_predict1d": (
        "1-d X is refused with 'X must be 2-dimensional', not scikit-learn's 'Reshape your data'"
    ),
    "check_estimator_sparse_array": (
        "fit and predict take the sparse rows; the check then reads predict_proba's shape from "
        "classifier tags, which a clusterer has none of"
    ),
    "check_estimator_sparse_matrix": (
        "fit and predict take the sparse rows; the check then reads predict_proba's shape from "
        "classifier tags, which a clusterer has none of"
    ),
}

#: What the plain estimator fails instead: these checks fit continuous data, which it refuses
#: by design (DataError "X must hold only 0 and 1"); BinarizingBernoulliMixture passes all but
#: the first three, which it fails as above.
NON_BINARY = "fits continuous data, and the data must be 0/1 (DataError by design)"
FITS_CONTINUOUS_DATA = [
    "check_clustering",
    "check_dtype_object",
    "check_fit2d_predict1d",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_overwrite_params",
    "check_estimators_partial_fit_n_features",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_non_transformer_estimators_n_iter",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_estimator_sparse_tag",
    "check_estimator_sparse_array",
    "check_estimator_sparse_matrix",
]


def expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    if isinstance(estimator, BinarizingBernoulliMixture):
        return BY_DESIGN
    return {**BY_DESIGN, **dict.fromkeys(FITS_CONTINUOUS_DATA, NON_BINARY)}


@parametrize_with_checks(
    [BernoulliMixture(**SETTINGS), BinarizingBernoulliMixture(**SETTINGS)],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(
    estimator: BaseEstimator, check: Callable[[BaseEstimator], None]
) -> None:
    # In-memory NumPy input runs on Dask's threaded scheduler, no cluster; named here so that a
    # distributed client left by another test is not used.
    with dask.config.set(scheduler="threads"):
        check(estimator)
