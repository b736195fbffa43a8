"""Matching components to labels: Hungarian against brute force, majority, and the metrics' shapes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bmm_dask.metrics import bits_per_dim, clustering_metrics, confusion_matrix


def brute_force_accuracy(components: np.ndarray, labels: np.ndarray, k: int) -> float:
    classes = np.unique(labels)
    best = 0
    for permutation in itertools.permutations(classes, k):
        hits = sum(int(np.sum((components == c) & (labels == permutation[c]))) for c in range(k))
        best = max(best, hits)
    return best / len(labels)


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_accuracy_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    labels = rng.integers(0, k, size=200) * 3 + 1  # label values that are not 0..k-1
    components = np.where(rng.random(200) < 0.6, (labels - 1) // 3, rng.integers(0, k, size=200))
    components = rng.permutation(k)[components]
    metrics = clustering_metrics(components, labels, k)
    assert metrics["matching"] == "hungarian"
    assert metrics["accuracy"] == pytest.approx(brute_force_accuracy(components, labels, k))
    assert sorted(metrics["mapping"]) == sorted(np.unique(labels).tolist())


def test_majority_when_more_components_than_labels() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    components = np.array([0, 0, 1, 2, 2, 3, 3, 3])
    metrics = clustering_metrics(components, labels, 5)
    assert metrics["matching"] == "majority"
    assert metrics["mapping"] == [0, 0, 1, 1, None]
    assert metrics["accuracy"] == pytest.approx(7 / 8)
    assert metrics["cluster_sizes"] == [2, 1, 2, 3, 0]
    assert metrics["label_counts"] == [3, 4, 1]
    given = clustering_metrics(components, labels, 5, mapping=[1, 1, 1, 1, 1])
    assert given["matching"] == "given" and given["accuracy"] == pytest.approx(4 / 8)


def test_confusion_matrix_and_scores() -> None:
    matrix = confusion_matrix(np.array([0, 1, 1, 2]), np.array([5, 5, 7, 7]), 3, np.array([5, 7]))
    assert matrix.tolist() == [[1, 0], [1, 1], [0, 1]]
    perfect = clustering_metrics(np.array([1, 1, 0, 0]), np.array([3, 3, 4, 4]), 2)
    assert perfect["nmi"] == pytest.approx(1) and perfect["ari"] == pytest.approx(1)
    assert perfect["accuracy"] == 1
    assert bits_per_dim(-np.log(2) * 10, 10) == pytest.approx(1.0)
