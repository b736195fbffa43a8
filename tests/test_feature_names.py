"""feature_names_in_: taken from the data by fit and partial_fit, checked by predict and the rest,
kept by save and load, shown by info, and carried by ``bmm-dask fit`` from a dataset's names."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import zarr

from bmm_dask import BernoulliMixture, DataError, ModelFileError, open_dataset
from bmm_dask.io import Dataset, DatasetWriter
from tests._helpers import LOCAL_CLUSTER, assert_one_line_error

NAMES = ["apple", "banana", "cherry", "date", "elderberry", "fig", "grape", "kiwi", "lemon"]


def named_dataset(
    path: Path,
    X: np.ndarray,
    names: Sequence[str] | None,
    labels: np.ndarray | None = None,
    chunk_rows: int = 64,
) -> Dataset:
    """A dataset of the rows ``X`` (0/1), with ``names`` stored beside them (None: no names)."""
    writer = DatasetWriter.create(
        path,
        n_samples=len(X),
        n_features=X.shape[1],
        chunk_rows=chunk_rows,
        labels_dtype=None if labels is None else labels.dtype,
    )
    for start in range(0, len(X), writer.chunk_rows):
        stop = start + writer.chunk_rows
        writer.write(
            start,
            np.packbits(X[start:stop], axis=1),
            None if labels is None else labels[start:stop],
        )
    if names is not None:
        writer.write_feature_names(names)
    return open_dataset(path)


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    """300 rows of two baskets: the first five fruits, or the last four."""
    rng = np.random.default_rng(0)
    means = np.array([[0.8] * 5 + [0.05] * 4, [0.05] * 5 + [0.8] * 4])
    z = rng.integers(0, 2, size=300)
    return (rng.random((300, len(NAMES))) < means[z]).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, X: np.ndarray) -> Path:
    """The folder of four datasets of ``X``: ``named.zarr``, ``renamed.zarr`` (other names),
    ``reordered.zarr`` (the same names in another order) and ``bare.zarr`` (none)."""
    folder = tmp_path_factory.mktemp("names")
    named_dataset(folder / "named.zarr", X, NAMES)
    named_dataset(folder / "renamed.zarr", X, [*NAMES[:-2], "mango", "nectarine"])
    named_dataset(folder / "reordered.zarr", X, NAMES[::-1])
    named_dataset(folder / "bare.zarr", X, None)
    return folder


def small_model() -> BernoulliMixture:
    return BernoulliMixture(2, random_state=0, max_iter=20)


def test_fit_takes_a_datasets_names(data: Path) -> None:
    model = small_model().fit(open_dataset(data / "named.zarr"))
    names = model.feature_names_in_
    assert isinstance(names, np.ndarray) and names.dtype == object and names.shape == (9,)
    assert names.tolist() == NAMES and all(type(name) is str for name in names)


def test_data_without_names_gives_none_and_a_refit_forgets_them(data: Path, X: np.ndarray) -> None:
    model = small_model().fit(X)
    assert not hasattr(model, "feature_names_in_")
    model.fit(open_dataset(data / "bare.zarr"))
    assert not hasattr(model, "feature_names_in_")
    model.fit(open_dataset(data / "named.zarr"))
    assert model.feature_names_in_.tolist() == NAMES
    model.fit(X)  # fitted again on data without names: the old names no longer apply
    assert not hasattr(model, "feature_names_in_")


def test_data_without_names_is_taken_by_a_model_with_names_with_a_warning(
    data: Path, X: np.ndarray
) -> None:
    """As scikit-learn warns for NumPy data given to a model fitted with names: the columns
    of data without names may be in another order (one file's items sorted, another's not)."""
    model = small_model().fit(open_dataset(data / "named.zarr"))
    expected = np.asarray(model.predict(open_dataset(data / "named.zarr")))
    for rows, source in ((X, "X"), (open_dataset(data / "bare.zarr"), "bare.zarr")):
        with pytest.warns(UserWarning, match=f"{source} has no feature names, but"):
            np.testing.assert_array_equal(np.asarray(model.predict(rows)), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # data with the model's names: no warning
        np.testing.assert_array_equal(
            np.asarray(model.predict(open_dataset(data / "named.zarr"))), expected
        )


@pytest.mark.parametrize(
    ("other", "needles"),
    [
        (
            "renamed.zarr",
            ("names unseen at fit time: 'mango', 'nectarine'", "missing: 'kiwi', 'lemon'"),
        ),
        ("reordered.zarr", ("the same names in another order", "feature 0 is 'lemon'")),
    ],
)
def test_data_with_other_names_is_refused(data: Path, other: str, needles: tuple[str, ...]) -> None:
    model = small_model().fit(open_dataset(data / "named.zarr"))
    rows = open_dataset(data / other)
    for method in (
        model.predict,
        model.predict_proba,
        model.score_samples,
        model.score,
        model.bic,
        model.aic,
        model.partial_fit,
    ):
        with pytest.raises(DataError) as caught:
            method(rows)
        message = str(caught.value)
        assert "\n" not in message, message
        assert message.startswith(f"{rows.path}: the feature names should match"), message
        for needle in needles:
            assert needle in message, (needle, message)
    assert isinstance(caught.value, ValueError)  # as scikit-learn's own error


def test_names_given_to_a_model_fitted_without_them_warn(data: Path, X: np.ndarray) -> None:
    model = small_model().fit(X)
    with pytest.warns(UserWarning, match="has feature names, but BernoulliMixture was fitted"):
        model.predict(open_dataset(data / "named.zarr"))


def test_partial_fit_sets_names_on_the_first_call_and_checks_them_after(
    data: Path, X: np.ndarray
) -> None:
    model = small_model()
    named = open_dataset(data / "named.zarr")
    model.partial_fit(named)
    assert model.feature_names_in_.tolist() == NAMES
    model.partial_fit(named)
    with pytest.warns(UserWarning, match="X has no feature names"):
        model.partial_fit(X)  # no names: taken, with a warning
    with pytest.raises(DataError, match="names unseen at fit time"):
        model.partial_fit(open_dataset(data / "renamed.zarr"))
    assert model.feature_names_in_.tolist() == NAMES
    assert len(model.history_) == 3
    # a first call on data without names sets none
    bare = small_model().partial_fit(X)
    assert not hasattr(bare, "feature_names_in_")


def test_save_and_load_keep_the_names(tmp_path: Path, data: Path, X: np.ndarray) -> None:
    model = small_model().fit(open_dataset(data / "named.zarr"))
    model.save(tmp_path / "m.zarr")
    stored = zarr.open_group(tmp_path / "m.zarr", mode="r")["feature_names"]
    assert stored.shape == (9,)
    loaded = BernoulliMixture.load(tmp_path / "m.zarr")
    assert loaded.feature_names_in_.dtype == object
    assert loaded.feature_names_in_.tolist() == NAMES
    named = open_dataset(data / "named.zarr")
    np.testing.assert_array_equal(np.asarray(loaded.predict(named)), model.predict(named))
    with pytest.raises(DataError, match="names unseen at fit time"):
        loaded.predict(open_dataset(data / "renamed.zarr"))
    # a model without names stores none and loads without them
    small_model().fit(X).save(tmp_path / "bare.zarr")
    assert "feature_names" not in zarr.open_group(tmp_path / "bare.zarr", mode="r")
    assert not hasattr(BernoulliMixture.load(tmp_path / "bare.zarr"), "feature_names_in_")


def test_a_model_with_damaged_names_is_refused(tmp_path: Path, data: Path) -> None:
    small_model().fit(open_dataset(data / "named.zarr")).save(tmp_path / "m.zarr")
    group = zarr.open_group(tmp_path / "m.zarr", mode="a")
    del group["feature_names"]
    group.create_array("feature_names", data=np.arange(3))
    with pytest.raises(ModelFileError, match="expected one name per feature"):
        BernoulliMixture.load(tmp_path / "m.zarr")


def test_a_data_frames_columns_are_names(X: np.ndarray) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=NAMES)
    model = small_model().fit(frame)
    assert model.feature_names_in_.tolist() == NAMES
    np.testing.assert_array_equal(model.predict(frame), model.predict(X))
    with pytest.raises(DataError, match="the same names in another order"):
        model.predict(frame[NAMES[::-1]])
    with pytest.warns(UserWarning, match="X has feature names"):
        small_model().fit(X).predict(frame)
    # columns that are not all strings are no names, as in scikit-learn
    assert not hasattr(small_model().fit(pd.DataFrame(X)), "feature_names_in_")


def test_info_shows_a_models_names(tmp_path: Path, data: Path, X: np.ndarray, bmm) -> None:
    small_model().fit(open_dataset(data / "named.zarr")).save(tmp_path / "m.zarr")
    result = bmm("info", tmp_path / "m.zarr")
    assert result.code == 0, result.err
    assert (
        "features       9 (named: apple, banana, cherry, date, elderberry, fig, grape, kiwi, ...)"
        in result.out
    )
    described = json.loads(bmm("info", tmp_path / "m.zarr", "--json").out)
    assert described["feature_names"] is True
    assert described["first_feature_names"] == NAMES[:8]
    small_model().fit(X).save(tmp_path / "bare.zarr")
    assert "features       9\n" in bmm("info", tmp_path / "bare.zarr").out
    assert json.loads(bmm("info", tmp_path / "bare.zarr", "--json").out)["feature_names"] is False


@pytest.mark.slow
def test_bmm_dask_fit_keeps_a_datasets_names(tmp_path: Path, data: Path, bmm) -> None:
    result = bmm(
        "fit", data / "named.zarr", "--k", "2", "--out", tmp_path / "m.zarr", *LOCAL_CLUSTER
    )
    assert result.code == 0, result.err
    assert BernoulliMixture.load(tmp_path / "m.zarr").feature_names_in_.tolist() == NAMES
    evaluated = bmm(
        "evaluate", tmp_path / "m.zarr", data / "named.zarr", "--json", tmp_path / "e.json"
    )
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert metrics["feature_names"] is True and metrics["n_samples"] == 300
    line = assert_one_line_error(
        bmm("evaluate", tmp_path / "m.zarr", data / "renamed.zarr"),
        "renamed.zarr: the feature names should match",
        f"the model {tmp_path / 'm.zarr'}",
    )
    assert "mango" in line
    assert_one_line_error(
        bmm("predict", tmp_path / "m.zarr", data / "reordered.zarr", "--out", tmp_path / "p.zarr"),
        "the same names in another order",
    )
    assert not (tmp_path / "p.zarr").exists()


def test_select_keeps_the_names_in_every_model(tmp_path: Path, X: np.ndarray) -> None:
    from bmm_dask.selection import select_n_components

    dataset = named_dataset(tmp_path / "named.zarr", X, NAMES)
    selection = select_n_components(dataset, [1, 2], random_state=0, max_iter=20)
    for model in selection.models.values():
        assert list(model.feature_names_in_) == NAMES


def test_evaluate_names_each_components_top_features(data: Path) -> None:
    from bmm_dask.evaluation import evaluate

    named = open_dataset(data / "named.zarr")
    model = small_model().fit(named)
    metrics = evaluate(model, named)
    baskets = [set(NAMES[:5]), set(NAMES[5:])]
    # each component's four most lifted fruits are of one basket of the data, its own
    found = []
    for component in metrics["components"]:
        top = {f["name"] for f in component["top_lift"][:4]}
        found += [i for i, basket in enumerate(baskets) if top <= basket]
    assert sorted(found) == [0, 1]
