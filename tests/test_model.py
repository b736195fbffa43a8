"""BernoulliMixture as a scikit-learn estimator, and what EM guarantees (property tests)."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from bmm_dask import BernoulliMixture, DataError, ModelFileError, SettingsError, open_dataset
from bmm_dask.datasets import synth


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(0)
    means = rng.uniform(0.05, 0.95, size=(3, 30))
    z = rng.integers(0, 3, size=900)
    return (rng.random((900, 30)) < means[z]).astype(np.uint8)


def test_sklearn_estimator_protocol() -> None:
    model = BernoulliMixture(5, alpha=0.1, random_state=3)
    assert model.get_params()["n_components"] == 5
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    model.set_params(n_components=2, tol=1e-3)
    assert (model.n_components, model.tol) == (2, 1e-3)
    with pytest.raises(NotFittedError):
        model.predict(np.zeros((2, 3)))


def test_fit_predict_and_friends(X: np.ndarray) -> None:
    model = BernoulliMixture(3, random_state=0, n_init=2)
    labels = model.fit_predict(X)
    assert isinstance(labels, np.ndarray) and labels.shape == (900,)
    np.testing.assert_array_equal(labels, model.predict(X))
    proba = model.predict_proba(X)
    assert proba.shape == (900, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(np.argmax(proba, axis=1), labels)
    scores = model.score_samples(X)
    assert scores.shape == (900,) and np.all(scores < 0)
    assert model.score(X) == pytest.approx(scores.mean())
    n_params = 3 * 30 + 2
    assert model.bic(X) == pytest.approx(-2 * scores.sum() + n_params * np.log(900))
    assert model.aic(X) == pytest.approx(-2 * scores.sum() + 2 * n_params)
    assert model.converged_ and 1 <= model.n_iter_ == len(model.history_)
    assert set(model.history_[0]) == {
        "iteration",
        "objective",
        "change",
        "mean_shift",
        "seconds",
        "reseeded",
    }
    assert model.weights_.sum() == pytest.approx(1)
    sample, components = model.sample(500)
    assert sample.shape == (500, 30) and set(np.unique(sample)) <= {0, 1}
    assert components.shape == (500,) and components.max() < 3


def test_dask_input_gives_lazy_results(X: np.ndarray) -> None:
    lazy = da.from_array(X, chunks=(200, 30))
    model = BernoulliMixture(3, random_state=0).fit(lazy)
    labels = model.predict(lazy)
    assert isinstance(labels, da.Array) and labels.chunks == ((200, 200, 200, 200, 100),)
    assert labels.name.startswith("bmm-label-")
    np.testing.assert_array_equal(labels.compute(), model.predict(X))
    assert isinstance(model.predict_proba(lazy), da.Array)
    assert isinstance(model.score(lazy), float)


def test_dataset_input(tmp_path: Path) -> None:
    data = open_dataset(
        synth(tmp_path / "s.zarr", n_samples=2000, n_features=20, n_components=2, seed=0)
    )
    model = BernoulliMixture(2, random_state=0).fit(data)
    assert model.n_features_in_ == 20
    assert isinstance(model.predict(data), da.Array)
    with pytest.raises(
        DataError, match="X has 21 features, but BernoulliMixture is expecting 20 features"
    ):
        model.predict(np.zeros((3, 21)))


def test_save_and_load(X: np.ndarray, tmp_path: Path) -> None:
    model = BernoulliMixture(3, random_state=0, alpha=0.25).fit(X)
    model.save(tmp_path / "model.zarr")
    loaded = BernoulliMixture.load(tmp_path / "model.zarr")
    np.testing.assert_array_equal(loaded.means_, model.means_)
    np.testing.assert_array_equal(loaded.weights_, model.weights_)
    assert loaded.get_params()["alpha"] == 0.25 and loaded.n_iter_ == model.n_iter_
    assert loaded.history_[0]["change"] is None  # the first change is infinite: null in JSON
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with pytest.raises(Exception, match="exists already"):
        model.save(tmp_path / "model.zarr")
    with pytest.raises(ModelFileError, match="no such file"):
        BernoulliMixture.load(tmp_path / "missing.zarr")
    synth(tmp_path / "data.zarr", n_samples=10, n_features=3, n_components=1)
    with pytest.raises(ModelFileError, match="not a bmm-dask model"):
        BernoulliMixture.load(tmp_path / "data.zarr")


def test_warm_start_continues(X: np.ndarray) -> None:
    first = BernoulliMixture(3, random_state=0, max_iter=3, tol=0).fit(X)
    model = BernoulliMixture(3, random_state=0, max_iter=3, tol=0, warm_start=True).fit(X)
    model.fit(X)
    both = BernoulliMixture(
        3, means_init=first.means_, weights_init=first.weights_, max_iter=3, tol=0
    ).fit(X)
    np.testing.assert_allclose(model.means_, both.means_, atol=1e-12)


def test_mean_tol_stops_on_the_notebook_test(X: np.ndarray) -> None:
    model = BernoulliMixture(
        3, init="random", random_state=0, tol=0, mean_tol=0.05, max_iter=100
    ).fit(X)
    assert model.converged_ and 2 <= model.n_iter_ < 100
    assert model.history_[-1]["mean_shift"] < 0.05 <= model.history_[-2]["mean_shift"]


def test_one_convergence_warning_that_says_what_to_try(X: np.ndarray) -> None:
    with pytest.warns(ConvergenceWarning, match="try a larger max_iter") as record:
        BernoulliMixture(3, n_init=3, max_iter=2, tol=1e-12, random_state=0).fit(X)
    assert len([w for w in record if issubclass(w.category, ConvergenceWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BernoulliMixture(3, max_iter=2, tol=0, random_state=0).fit(X)  # tol = 0 asks for max_iter


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("algorithm", ["batch", "stepwise"])
def test_on_sparse_rows_a_reseeded_component_lives(algorithm: str) -> None:
    """Rows with 0.5 % ones, like words in documents: a component re-seeded from a row (0.75
    on its few ones, a fixed level on the thousands of others) is one no row prefers, and dies
    again at once. A split keeps the data's rates: re-seeded once, it lives, and so does every
    other component."""
    from bmm_dask.datasets._synthetic import synth_parameters

    rng = np.random.default_rng(0)
    true_means, true_weights = synth_parameters(2000, 8, seed=4, density=0.005)
    X = rng.random((20_000, 2000)) < true_means[rng.choice(8, 20_000, p=true_weights)]
    assert X.mean() < 0.01
    means = np.clip(true_means * rng.uniform(0.5, 1.5, true_means.shape), 1e-3, 0.9)
    means[3] = 1e-9  # explains no row: empty after the first E-step
    model = BernoulliMixture(
        8,
        means_init=means,
        algorithm=algorithm,
        passes=3,
        batch_size=500,
        max_iter=50,
        random_state=0,
    ).fit(X)
    assert 1 <= sum(r["reseeded"] for r in model.history_) <= 2
    assert model.weights_.min() > 0.01  # every component has rows of its own


def test_an_empty_component_is_reseeded(X: np.ndarray) -> None:
    means_init = np.full((3, 30), 0.5)
    means_init[2] = 1e-6  # explains no row: all its responsibilities underflow
    model = BernoulliMixture(3, means_init=means_init, max_iter=30, tol=0, dtype="float32")
    model.fit(X)
    assert model.history_[0]["reseeded"] == 1
    assert sum(h["reseeded"] for h in model.history_) >= 1
    assert np.all(model.weights_ > 0.05)  # the re-seeded component found rows of its own
    assert np.all(np.isfinite(model.means_))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"n_components": 0},
            r"'n_components' parameter .* must be an int in the range \[1, inf\)",
        ),
        ({"tol": -1}, r"'tol' parameter .* must be a float in the range \[0.0, inf\)"),
        ({"tol": float("inf")}, r"'tol' parameter .* Got inf instead"),
        ({"alpha": float("nan")}, r"'alpha' parameter .* Got nan instead"),
        ({"mean_tol": -1e-3}, r"'mean_tol' parameter .* or None"),
        ({"max_iter": 0}, "'max_iter' parameter"),
        ({"n_init": 1.5}, "'n_init' parameter"),
        ({"init": "kmeans"}, r"'init' parameter .* must be a str among \{"),
        ({"dtype": "float16"}, "'dtype' parameter"),
        ({"random_state": -1}, r"'random_state' parameter .* Got -1 instead"),
        ({"random_state": np.random.RandomState(0)}, "'random_state' parameter"),
        ({"verbose": -1}, "'verbose' parameter"),
    ],
)
def test_settings_out_of_range(X: np.ndarray, settings: dict, message: str) -> None:
    """Ranges are scikit-learn's parameter constraints: its error, which is also ours."""
    model = BernoulliMixture(**{"n_components": 2, **settings})
    with pytest.raises(SettingsError, match=message) as caught:
        model.fit(X)
    assert isinstance(caught.value, InvalidParameterError)
    assert isinstance(caught.value, TypeError)  # as scikit-learn's, for a value of the wrong type


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"means_init": np.full((2, 4), 0.5)}, r"means_init must have shape \(2, 30\)"),
        ({"means_init": np.zeros((2, 30))}, "strictly between 0 and 1"),
        ({"weights_init": [0.5, 0.6]}, r"positive numbers summing to 1; got \[0.5 0.6\]"),
        (
            {"n_components": 901},
            r"larger than the number of samples in numpy array \(n_samples=900\)",
        ),
    ],
)
def test_bad_settings(X: np.ndarray, settings: dict, message: str) -> None:
    """What constraints cannot say: settings that do not fit the data or each other."""
    model = BernoulliMixture(**{"n_components": 2, **settings})
    with pytest.raises(SettingsError, match=message) as caught:
        model.fit(X)
    assert not isinstance(caught.value, InvalidParameterError)


def test_warm_start_needs_the_same_shape(X: np.ndarray) -> None:
    model = BernoulliMixture(3, max_iter=2, tol=0, random_state=0, warm_start=True).fit(X)
    with pytest.raises(SettingsError, match=r"fitted means, of shape \(3, 30\), but got n_comp"):
        model.set_params(n_components=2).fit(X)
    with pytest.raises(SettingsError, match="and 29 features"):
        model.set_params(n_components=3).fit(X[:, 1:])


def test_bad_data() -> None:
    with pytest.raises(DataError, match="only 0 and 1"):
        BernoulliMixture(2).fit(np.array([[0, 2], [1, 1]]))
    with pytest.raises(DataError, match="2-dimensional"):
        BernoulliMixture(2).fit(np.zeros(5))
    with pytest.raises(DataError, match="only 0 and 1"), dask.config.set(scheduler="synchronous"):
        BernoulliMixture(2).fit(da.from_array(np.full((4, 3), 7), chunks=2))


# --------------------------------------------------------------------------- properties

binary_data = st.integers(1, 40).flatmap(
    lambda n: st.integers(1, 12).flatmap(
        lambda d: arrays(np.uint8, (n, d), elements=st.integers(0, 1))
    )
)


@st.composite
def problems(draw):
    X = draw(binary_data)
    kind = draw(st.sampled_from(["plain", "duplicates", "constant columns"]))
    if kind == "duplicates":
        X = np.concatenate([X, X, X[:1]])
    elif kind == "constant columns":
        X = np.concatenate(
            [X, np.zeros((len(X), 1), np.uint8), np.ones((len(X), 1), np.uint8)], axis=1
        )
    n_components = draw(st.integers(1, min(len(X), 6)))  # often more than the distinct rows
    alpha = draw(st.sampled_from([0.0, 1e-3, 1.0]))
    init = draw(st.sampled_from(["random", "random_from_data", "kmeans++"]))
    return X, n_components, alpha, init, draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_em_guarantees(problem) -> None:
    X, n_components, alpha, init, seed = problem
    n_distinct = len(np.unique(X, axis=0))
    with dask.config.set(scheduler="synchronous"):
        model = BernoulliMixture(
            n_components,
            alpha=alpha,
            init=init,
            random_state=seed,
            max_iter=15,
            tol=0,
            dtype="float64",
        )
        try:
            model.fit(X)
        except DataError as err:  # components without rows of their own: said, not looped on
            assert n_distinct < n_components, err
            assert f"has only {n_distinct} distinct row" in str(err)
            return
        proba = model.predict_proba(X)
        scores = model.score_samples(X)
    objectives = [h["objective"] for h in model.history_]
    assert np.all(np.isfinite(objectives))
    for before, after, record in zip(objectives, objectives[1:], model.history_[1:], strict=False):
        if record["reseeded"] == 0 and model.history_[record["iteration"] - 2]["reseeded"] == 0:
            assert after >= before - 1e-9 * max(1.0, abs(before)), objectives
    assert np.all(np.isfinite(model.means_)) and np.all((model.means_ > 0) & (model.means_ < 1))
    assert np.all(np.isfinite(model.weights_)) and model.weights_.sum() == pytest.approx(1)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-12)
    assert np.all(np.isfinite(scores))


def test_verbose_shows_progress_on_stderr(
    X: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    BernoulliMixture(3, random_state=0, max_iter=4, tol=0, verbose=2).fit(X)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("iteration")]
    assert len(lines) == 4 and lines[0].startswith("iteration 1  objective")
    BernoulliMixture(3, random_state=0, max_iter=4, tol=0, verbose=1).fit(X)
    assert "EM" in capsys.readouterr().err
    BernoulliMixture(3, random_state=0, max_iter=4, tol=0).fit(X)
    assert capsys.readouterr().err == ""
    # stepwise passes, with a component starved from the start: re-seeded, and said so
    means = np.full((3, X.shape[1]), 0.5)
    means[2] = 1e-6
    settings = {"algorithm": "stepwise", "passes": 2, "batch_size": 20, "means_init": means}
    BernoulliMixture(3, verbose=2, **settings).fit(X)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pass")]
    assert len(lines) == 2 and "re-seeded" in lines[0]
    BernoulliMixture(3, verbose=1, **settings).fit(X)
    assert "stepwise pass 2" in capsys.readouterr().err


def test_partial_fit_on_no_rows_changes_nothing() -> None:
    # it raised ZeroDivisionError after it had moved means_, weights_ and the step count
    import dask.array as da

    from bmm_dask.errors import DataError

    rng = np.random.default_rng(0)
    X = (rng.random((300, 8)) < 0.4).astype(np.uint8)
    model = BernoulliMixture(3, random_state=0).partial_fit(X)
    before = (model.means_.copy(), model.weights_.copy(), model.n_iter_, len(model.history_))
    with pytest.raises(DataError, match="no rows"):
        model.partial_fit(da.zeros((0, 8), dtype=np.uint8, chunks=(1, 8)))
    assert np.array_equal(model.means_, before[0]) and np.array_equal(model.weights_, before[1])
    assert (model.n_iter_, len(model.history_)) == before[2:]
    model.partial_fit(X)
    assert model.n_iter_ == before[2] + 1


def test_set_params_of_another_k_after_fitting_is_refused(tmp_path) -> None:
    # partial_fit went on with 3 components, and save recorded 5 beside means of 3 rows
    from bmm_dask.errors import SettingsError

    rng = np.random.default_rng(0)
    X = (rng.random((300, 8)) < 0.4).astype(np.uint8)
    model = BernoulliMixture(3, random_state=0).partial_fit(X)
    model.set_params(n_components=5)
    with pytest.raises(SettingsError, match="n_components is 5, but the model was fitted with 3"):
        model.partial_fit(X)
    with pytest.raises(SettingsError, match="n_components is 5"):
        model.save(tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()
    model.set_params(n_components=3).save(tmp_path / "m.zarr")
    assert BernoulliMixture.load(tmp_path / "m.zarr").n_components == 3
