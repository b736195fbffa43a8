"""Choosing K: candidates advanced in shared passes equal separate fits, held-out rows never
train, the same selection on every scheduler, and the truth picked when there is one."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from bmm_dask import BernoulliMixture, SettingsError
from bmm_dask._estep import as_packed
from bmm_dask.selection import heldout_mask, select_n_components, split_rows

D = 64


def mixture(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.05, 0.95, size=(k, D))
    labels = rng.integers(0, k, size=n)
    return (rng.random((n, D)) < means[labels]).astype(np.uint8)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """12,000 rows of 64 bits from 4 components."""
    return mixture(12_000, 4, seed=1)


def test_the_held_out_rows_depend_on_the_row_numbers_alone() -> None:
    whole = heldout_mask(0, 100_000, key=12345, fraction=0.1)
    pieces = np.concatenate(
        [heldout_mask(a, a + 7_000, 12345, 0.1) for a in range(0, 100_000, 7_000)]
    )
    np.testing.assert_array_equal(whole[: len(pieces)], pieces[:100_000])
    assert 9_700 < whole.sum() < 10_300
    assert not np.array_equal(whole, heldout_mask(0, 100_000, key=54321, fraction=0.1))
    # the views take each chunk's rows of either kind, whatever the chunking
    X = mixture(5_000, 2, seed=0)
    for chunk_rows in (333, 5_000):
        train, heldout = split_rows(as_packed(X, chunk_rows=chunk_rows), 0.2, key=7)
        mask = heldout_mask(0, 5_000, 7, 0.2)
        np.testing.assert_array_equal(train.bits.compute(), np.packbits(X[~mask], axis=1))
        np.testing.assert_array_equal(heldout.bits.compute(), np.packbits(X[mask], axis=1))


def select(X: np.ndarray, **settings) -> object:
    settings = {"random_state": 3, "dtype": "float64", "tol": 1e-6, **settings}
    return select_n_components(X, [2, 4, 6], **settings)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_each_candidate_is_the_model_of_a_separate_fit_from_its_start(rows: np.ndarray) -> None:
    with dask.config.set(scheduler="threads"):
        selection = select(rows, n_init=2)
    mask = heldout_mask(0, len(rows), selection.heldout_key, 0.1)
    assert selection.n_train == (~mask).sum() and selection.n_heldout == mask.sum()
    for row in selection.table:
        k, start = row["n_components"], row["start"]
        means, weights = selection.starts[k, start]
        alone = BernoulliMixture(
            k, means_init=means, weights_init=weights, dtype="float64", tol=1e-6, algorithm="batch"
        ).fit(rows[~mask])
        assert row["n_iter"] == alone.n_iter_ and row["converged"] == alone.converged_
        assert row["objective"] == pytest.approx(alone.lower_bound_, abs=1e-9)
        if row["best_start"]:
            model = selection.models[k]
            np.testing.assert_allclose(model.means_, alone.means_, rtol=0, atol=1e-9)
            np.testing.assert_allclose(model.weights_, alone.weights_, rtol=0, atol=1e-9)
            assert row["heldout_loglik"] == pytest.approx(alone.score(rows[mask]), abs=1e-9)
            assert row["train_loglik"] == pytest.approx(alone.score(rows[~mask]), abs=1e-9)
    assert sum(row["best_start"] for row in selection.table) == 3


def test_held_out_rows_never_touch_training(rows: np.ndarray) -> None:
    with dask.config.set(scheduler="threads"):
        selection = select(rows)
        mask = heldout_mask(0, len(rows), selection.heldout_key, 0.1)
        changed = rows.copy()
        changed[mask] = 1 - changed[mask]  # every held-out bit flipped
        other = select(changed)
    for k, model in selection.models.items():
        np.testing.assert_array_equal(other.models[k].means_, model.means_)
    assert all(
        a["heldout_loglik"] != b["heldout_loglik"]
        for a, b in zip(selection.table, other.table, strict=True)
    )


@pytest.mark.parametrize(
    "scheduler", ["synchronous", pytest.param("distributed", marks=pytest.mark.slow)]
)
def test_the_same_selection_on_every_scheduler(rows: np.ndarray, scheduler: str) -> None:
    with dask.config.set(scheduler="threads"):
        reference = select(rows)
    if scheduler == "distributed":
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=3, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster),
        ):
            selection = select(rows)
    else:
        with dask.config.set(scheduler=scheduler):
            selection = select(rows)

    def without_times(table: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in table]

    assert without_times(selection.table) == without_times(reference.table)
    for k, model in selection.models.items():
        np.testing.assert_array_equal(model.means_, reference.models[k].means_)


def test_held_out_likelihood_and_bic_pick_the_true_number_of_components() -> None:
    X = mixture(100_000, 8, seed=4)
    with dask.config.set(scheduler="threads"):
        by_heldout = select_n_components(X, [2, 4, 6, 8, 10, 12, 16], random_state=0)
    assert by_heldout.n_components == 8
    scores = {r["n_components"]: r for r in by_heldout.table}
    assert min(scores, key=lambda k: scores[k]["bic"]) == 8
    assert scores[8]["heldout_loglik"] > scores[6]["heldout_loglik"] + 1


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"n_components": []}, "at least one"),
        ({"n_components": [2, "x"]}, "whole numbers"),
        ({"n_components": [2, 2.5]}, "whole numbers"),
        ({"n_components": [0, 2]}, "at least 1"),
        ({"n_components": [2, 2]}, "twice"),
        ({"n_components": [2, 20_000]}, "more than the"),
        ({"validation_fraction": 0.0}, "validation_fraction"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"criterion": "best"}, "criterion"),
        ({"validation": np.zeros((10, 3), dtype=np.uint8)}, "3 features"),
    ],
)
def test_bad_selection_settings(rows: np.ndarray, settings: dict, needle: str) -> None:
    settings = {"n_components": [2, 3], **settings}
    with pytest.raises(SettingsError, match=needle):
        select_n_components(rows[:1_000], **settings)


@pytest.mark.slow
def test_the_select_command_writes_the_table_the_figure_and_the_models(tmp_path, bmm) -> None:
    import json

    from bmm_dask.datasets import synth
    from tests._helpers import LOCAL_CLUSTER

    data = synth(tmp_path / "d.zarr", n_samples=6_000, n_features=D, n_components=3, seed=2)
    out = tmp_path / "sel"
    result = bmm("select", data, "--k", "1,3,5", "--out", out, "--seed", "4", *LOCAL_CLUSTER)
    assert result.code == 0, result.err
    assert "K = 3 chosen by heldout" in result.out
    assert "iteration 1  K=1: " in result.err  # a line per iteration, the candidates running
    summary = json.loads((out / "selection.json").read_text())
    assert summary["n_components"] == 3 and summary["criterion"] == "heldout"
    assert [r["n_components"] for r in summary["candidates"]] == [1, 3, 5]
    for row in summary["candidates"]:
        assert {"objective", "heldout_loglik", "bic", "aic", "icl", "n_iter", "seconds"} <= set(row)
        assert row["converged"] is True
    assert summary["n_train"] + summary["n_heldout"] == 6_000
    assert (out / "selection.png").stat().st_size > 10_000
    chosen = BernoulliMixture.load(out / "model.zarr")
    # what it was fitted on: the training rows alone, from the selection's seed (it recorded
    # every row and random_state null)
    data_attrs = chosen.attrs_["data"]
    assert data_attrs["n_samples"] == summary["n_train"] < 6_000
    assert data_attrs["n_heldout"] == summary["n_heldout"] == 6_000 - summary["n_train"]
    assert chosen.random_state == 4
    assert chosen.n_components == 3
    assert BernoulliMixture.load(out / "model-k5.zarr").n_components == 5
    # the chosen model is a model like any other: evaluate takes it
    assert bmm("evaluate", out / "model.zarr", data).code == 0
    # a report of the selection folder is the chosen model's, with the selection's figure
    result = bmm("report", out, "--data", data, "--out", tmp_path / "report")
    assert result.code == 0, result.err
    page = (tmp_path / "report" / "report.html").read_text()
    assert '<img src="selection.png"' in page and "held-out log-likelihood, among K = 1" in page
    assert "<title>Bernoulli mixture, K = 3</title>" in page
    assert (tmp_path / "report" / "selection.png").stat().st_size > 10_000
    # info names it a selection, and points at its model
    info = bmm("info", out)
    assert info.code == 0, info.err
    lines = info.out.splitlines()
    assert (
        lines[0] == f"{out}: selection of K, K = 3 chosen by heldout (its model: {out}/model.zarr)"
    )
    assert [line.split()[0] for line in lines[3:]] == ["1", "3", "5"]
    assert json.loads(bmm("info", out, "--json").out)["kind"] == "selection"


def test_a_selection_streamed_from_its_store_equals_one_held_in_memory(tmp_path) -> None:
    from bmm_dask import open_dataset
    from bmm_dask.datasets import synth

    path = synth(tmp_path / "d.zarr", n_samples=8_000, n_features=D, n_components=3, seed=5)
    dataset = open_dataset(path)
    with dask.config.set(scheduler="threads"):
        streamed = select_n_components(
            dataset, [2, 3], random_state=1, dtype="float64", persist=False
        )
        held = select_n_components(dataset, [2, 3], random_state=1, dtype="float64", persist=True)
    for k in (2, 3):
        np.testing.assert_array_equal(streamed.models[k].means_, held.models[k].means_)
    assert streamed.n_components == held.n_components
    assert [r["heldout_loglik"] for r in streamed.table] == [
        r["heldout_loglik"] for r in held.table
    ]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "settings",
    [
        {"algorithm": "stepwise", "passes": 2, "batch_size": 1_000},
        # each candidate goes to the shared passes and leaves them when its own fit would
        {"algorithm": "auto", "batch_size": 1_000, "tol": 1e-5, "max_iter": 40},
    ],
    ids=["stepwise", "auto"],
)
def test_stepwise_candidates_are_the_models_of_separate_fits(
    rows: np.ndarray, settings: dict, passes_pay: None
) -> None:
    with dask.config.set(scheduler="threads"):
        selection = select(rows, **settings)
    mask = heldout_mask(0, len(rows), selection.heldout_key, 0.1)
    for row in selection.table:
        k = row["n_components"]
        means, weights = selection.starts[k, 0]
        rng = np.random.default_rng()
        rng.bit_generator.state = selection.stepwise_state  # the same mini-batches
        settings = {"tol": 1e-6, **settings}
        alone = BernoulliMixture(
            k, means_init=means, weights_init=weights, dtype="float64", random_state=rng, **settings
        ).fit(rows[~mask])
        model = selection.models[k]
        np.testing.assert_allclose(model.means_, alone.means_, rtol=0, atol=1e-9)
        np.testing.assert_allclose(model.weights_, alone.weights_, rtol=0, atol=1e-9)
        assert row["n_iter"] == alone.n_iter_ and model.batch_size_ == alone.batch_size_
        assert row["converged"] == alone.converged_
        assert row["objective"] == pytest.approx(alone.lower_bound_, abs=1e-9)
        assert [r.get("pass") for r in model.history_] == [r.get("pass") for r in alone.history_]
    if settings["algorithm"] == "auto":
        passes = [sum("pass" in r for r in m.history_) for m in selection.models.values()]
        assert all(p <= 3 for p in passes) and any(passes)  # auto's passes, at most 3
        # batch iterations after the passes (auto probes with 3 before them)
        assert any(m.n_iter_ > 3 for m in selection.models.values())
        assert all(row["n_passes"] <= 3 for row in selection.table)
