"""Clustering against labels: confusion matrix, label matching (Hungarian or majority), NMI, ARI,
and nats; each component's characteristic features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

#: Features shown per component, by mean and by lift (:func:`component_features`).
N_TOP_FEATURES = 10

#: A feature's lift counts for a component only where the component's mean of it is at least
#: this: a feature almost never on is noise however much rarer it is elsewhere (one row of a
#: small component that has it gives a mean of ~1 / N_k, and a lift of thousands).
MIN_MEAN_FOR_LIFT = 0.05

__all__ = [
    "bits_per_dim",
    "clustering_metrics",
    "component_features",
    "confusion_matrix",
    "hungarian_mapping",
    "majority_mapping",
]


def confusion_matrix(
    components: NDArray[np.integer],
    labels: NDArray[np.integer],
    n_components: int,
    classes: NDArray[Any],
) -> NDArray[np.int64]:
    """Counts of rows by component (rows, K of them) and label (columns, one per class).

    Parameters
    ----------
    components : ndarray of shape (n_samples,)
        The component of each row, in 0 .. n_components - 1.
    labels : ndarray of shape (n_samples,)
        The label of each row; every label is one of ``classes``.
    n_components : int
        Number of components K (rows of the matrix).
    classes : ndarray of shape (n_classes,)
        The label values, sorted, in column order.

    Returns
    -------
    ndarray of shape (n_components, n_classes)
        ``matrix[k, j]`` is the number of rows in component ``k`` with label ``classes[j]``.
    """
    column = np.searchsorted(classes, labels)
    matrix = np.zeros((n_components, len(classes)), dtype=np.int64)
    np.add.at(matrix, (components, column), 1)
    return matrix


def hungarian_mapping(confusion: NDArray[np.integer]) -> NDArray[np.intp]:
    """A label (column) for each component that maximises the rows matched, one component per label.

    With more components than labels the unmatched components get -1.

    Parameters
    ----------
    confusion : ndarray of shape (n_components, n_classes)
        Counts of rows by component and label, as from :func:`confusion_matrix`.

    Returns
    -------
    ndarray of shape (n_components,)
        The column matched to each component, or -1 for a component left unmatched.
    """
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    mapping = np.full(confusion.shape[0], -1, dtype=np.intp)
    mapping[rows] = cols
    return mapping


def majority_mapping(confusion: NDArray[np.integer]) -> NDArray[np.intp]:
    """The most frequent label (column) of each component; -1 for a component with no rows.

    Parameters
    ----------
    confusion : ndarray of shape (n_components, n_classes)
        Counts of rows by component and label, as from :func:`confusion_matrix`.

    Returns
    -------
    ndarray of shape (n_components,)
        The column with the most rows for each component (the first on a tie), or -1.
    """
    mapping = np.argmax(confusion, axis=1).astype(np.intp)
    mapping[confusion.sum(axis=1) == 0] = -1
    return mapping


def bits_per_dim(log_likelihood_per_sample: float, n_features: int) -> float:
    """Negative log-likelihood in bits per feature: nats / (D ln 2).

    Parameters
    ----------
    log_likelihood_per_sample : float
        Mean log-likelihood, in nats per sample.
    n_features : int
        Number of features D.

    Returns
    -------
    float
        ``-log_likelihood_per_sample / (n_features * ln 2)``.
    """
    return -log_likelihood_per_sample / (n_features * math.log(2))


def clustering_metrics(
    components: NDArray[np.integer],
    labels: NDArray[np.integer],
    n_components: int,
    mapping: list[Any] | None = None,
) -> dict[str, Any]:
    """How the components line up with the labels.

    Accuracy gives each component a label, by the Hungarian method when there are as many
    components as labels, else the majority label of each component, and counts the rows whose
    component's label is their own. ``mapping`` (a label, or None, for each component, learned
    on other data such as a training set) replaces that choice.

    Parameters
    ----------
    components : ndarray of shape (n_samples,)
        The component of each row, in 0 .. n_components - 1.
    labels : ndarray of shape (n_samples,)
        The label of each row.
    n_components : int
        Number of components K.
    mapping : list of length n_components, default=None
        A label, or None, for each component; None means choose one as above.

    Returns
    -------
    dict
        ``confusion_matrix`` (K rows, one per component; one column per label), ``classes``
        (the labels of the columns), ``accuracy``, ``matching`` ("hungarian", "majority" or
        "given"), ``mapping`` (the label of each component, None where it has none), ``nmi``,
        ``ari``, ``cluster_sizes``, ``label_counts``.

    Raises
    ------
    ValueError
        If ``mapping`` does not have one entry per component.
    """
    labels = np.asarray(labels)
    components = np.asarray(components)
    classes = np.unique(labels)
    confusion = confusion_matrix(components, labels, n_components, classes)
    if mapping is not None:
        matching = "given"
    else:
        if n_components == len(classes):
            columns, matching = hungarian_mapping(confusion), "hungarian"
        else:
            columns, matching = majority_mapping(confusion), "majority"
        mapping = [classes[c].item() if c >= 0 else None for c in columns]
    if len(mapping) != n_components:
        raise ValueError(f"mapping has {len(mapping)} labels for {n_components} components")
    as_label = np.array([np.nan if m is None else m for m in mapping], dtype=np.float64)
    n = len(labels)
    return {
        "confusion_matrix": confusion.tolist(),
        "classes": [c.item() for c in classes],
        "accuracy": float(np.mean(as_label[components] == labels)) if n else float("nan"),
        "matching": matching,
        "mapping": list(mapping),
        "nmi": float(normalized_mutual_info_score(labels, components)),
        "ari": float(adjusted_rand_score(labels, components)),
        "cluster_sizes": confusion.sum(axis=1).tolist(),
        "label_counts": confusion.sum(axis=0).tolist(),
    }


def _top(values: NDArray[np.float64], n: int) -> NDArray[np.intp]:
    """Indices of the ``n`` largest values, largest first (ties by index)."""
    if n < len(values):  # only the few largest are sorted: D may be a vocabulary's size
        part = np.argpartition(-values, n - 1)[:n]
    else:
        part = np.arange(len(values))
    return part[np.lexsort((part, -values[part]))]


def component_features(
    means: NDArray[np.float64],
    weights: NDArray[np.float64],
    feature_names: NDArray[Any] | None = None,
    *,
    n_top: int = N_TOP_FEATURES,
    min_mean: float = MIN_MEAN_FOR_LIFT,
) -> list[dict[str, Any]]:
    """Each component's most characteristic features: its largest means, and its largest lifts.

    The lift of feature d in component k is ``mean_kd / rate_d``, where
    ``rate_d = sum_k weight_k * mean_kd`` is the rate of the feature in the whole mixture (the
    model's own, so no pass over data is needed). A lift of 5 means the feature is on 5 times
    as often in the component's rows as in all rows. Only features whose mean in the component
    is at least ``min_mean`` are ranked by lift (see :data:`MIN_MEAN_FOR_LIFT`); a component
    with none has an empty ``top_lift``.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Bernoulli means.
    weights : ndarray of shape (n_components,)
        Mixing weights.
    feature_names : ndarray of shape (n_features,), default=None
        The features' names; None names each by its column, from 0 ("feature 123").
    n_top : int, default=N_TOP_FEATURES
        Features listed per component, in each ranking.
    min_mean : float, default=MIN_MEAN_FOR_LIFT
        The smallest mean of a feature ranked by lift.

    Returns
    -------
    list of dict
        One per component, in component order: ``component``, ``weight``, ``top_features``
        (``feature`` (its column), ``name`` and ``mean``, largest mean first) and ``top_lift``
        (``feature``, ``name``, ``mean`` and ``lift``, largest lift first).

    >>> means = np.array([[0.9, 0.01, 0.01], [0.01, 0.5, 0.5]])
    >>> first = component_features(means, np.array([0.5, 0.5]), np.array(["a", "b", "c"]))[0]
    >>> [(f["name"], f["mean"]) for f in first["top_features"]]
    [('a', 0.9), ('b', 0.01), ('c', 0.01)]
    >>> [(f["name"], round(f["lift"], 2)) for f in first["top_lift"]]
    [('a', 1.98)]
    """
    means = np.asarray(means, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    rate = weights @ means  # > 0: every mean is
    lift = means / rate

    def name(d: int) -> str:
        return str(feature_names[d]) if feature_names is not None else f"feature {d}"

    components = []
    for k in range(len(weights)):
        by_mean = _top(means[k], n_top)
        eligible = np.flatnonzero(means[k] >= min_mean)
        by_lift = eligible[_top(lift[k, eligible], n_top)]
        components.append(
            {
                "component": k,
                "weight": float(weights[k]),
                "top_features": [
                    {"feature": int(d), "name": name(d), "mean": float(means[k, d])}
                    for d in by_mean
                ],
                "top_lift": [
                    {
                        "feature": int(d),
                        "name": name(d),
                        "mean": float(means[k, d]),
                        "lift": float(lift[k, d]),
                    }
                    for d in by_lift
                ],
            }
        )
    return components
