"""Stepwise EM: the same arithmetic as a NumPy stepwise EM written here, statistics accumulated
(never replaced), the same model on every scheduler, and partial_fit equal to fit."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from bmm_dask import BernoulliMixture, SettingsError
from bmm_dask._estep import as_packed, task_blocks
from bmm_dask._kernels import estep_stats, log_parameters, split_components
from bmm_dask._stepwise import (
    Batch,
    StepwiseState,
    batch_step,
    hold_window,
    pass_batches,
    step_size,
    window_chunks,
)

K, D = 3, 784


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """30,000 rows of 784 bits from a known mixture: three chunks of the E-step's size."""
    rng = np.random.default_rng(7)
    means = rng.uniform(0.05, 0.95, size=(K, D))
    labels = rng.choice(K, size=30_000, p=[0.5, 0.3, 0.2])
    return (rng.random((30_000, D)) < means[labels]).astype(np.uint8)


@pytest.fixture(scope="module")
def soft_rows() -> np.ndarray:
    """12,000 rows of 784 bits from three components that overlap: every row's
    responsibilities stay between 0 and 1, so a step's statistics show which parameters its
    E-step was given (with well-separated components they are exact 0s and 1s either way)."""
    rng = np.random.default_rng(8)
    means = np.clip(0.5 + 0.03 * rng.standard_normal(size=(K, D)), 0, 1)
    labels = rng.choice(K, size=12_000, p=[0.5, 0.3, 0.2])
    return (rng.random((12_000, D)) < means[labels]).astype(np.uint8)


def start(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.3, 0.7, size=(K, D)), np.full(K, 1 / K)


def numpy_stepwise(
    X: np.ndarray,
    means: np.ndarray,
    weights: np.ndarray,
    batches: list[np.ndarray],
    *,
    alpha: float,
    kappa: float,
    n_rows: int,
    lag: int = 0,
    pass_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Stepwise EM as the papers write it, in float64: running statistics per row, blended,
    and a component whose running weight falls below 0.01 / K re-seeded by the package's
    split (:func:`~bmm_dask._kernels.split_components`) after the step. Returns the means,
    the weights and the number of re-seeds.

    With ``lag`` > 0, the j-th mini-batch of a pass (of ``pass_steps``) is computed with the
    parameters after step j - 1 - lag of the pass, the pass's first ones before that: what
    ``steps_in_flight = lag + 1`` does.
    """
    reseeded = 0
    s_w, s_x = weights.copy(), weights[:, None] * means
    seen: list[tuple[np.ndarray, np.ndarray]] = []  # the parameters after each step of the pass
    for t, batch in enumerate(batches, start=1):
        if pass_steps is not None and (t - 1) % pass_steps == 0:
            seen = [(means, weights)]
        used_means, used_weights = seen[max(0, len(seen) - 1 - lag)] if lag else (means, weights)
        x = X[batch].astype(np.float64)
        mu = np.clip(used_means, 1e-10, 1 - 1e-10)
        log_joint = x @ np.log(mu).T + (1 - x) @ np.log1p(-mu).T + np.log(used_weights)
        log_joint -= log_joint.max(axis=1, keepdims=True)
        r = np.exp(log_joint)
        r /= r.sum(axis=1, keepdims=True)
        eta = (t + 2) ** -kappa
        s_w = (1 - eta) * s_w + eta * r.sum(axis=0) / len(batch)
        s_x = (1 - eta) * s_x + eta * (r.T @ x) / len(batch)
        starving = np.flatnonzero(s_w < 0.01 / len(s_w))
        split_components(s_w, s_x, starving)
        reseeded += len(starving)
        means = np.clip(
            (n_rows * s_x + alpha) / (n_rows * s_w[:, None] + 2 * alpha), 1e-10, 1 - 1e-10
        )
        weights = s_w / s_w.sum()
        seen.append((means, weights))
    return means, weights, reseeded


def the_batches(X: np.ndarray, batch_size: int, seed: int, passes: int) -> list[np.ndarray]:
    """The rows of each mini-batch that fit draws, as indices into X."""
    bits = task_blocks(as_packed(X)).bits
    sizes = tuple(int(c) for c in bits.chunks[0])
    starts = np.cumsum([0, *sizes])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(passes):
        count, batches = pass_batches(sizes, batch_size, window_chunks(batch_size, sizes[0]), rng)
        before = len(out)
        for batch in batches:
            out.append(
                np.concatenate(
                    [starts[c] + r for c, r in zip(batch.window, batch.rows, strict=True)]
                )
            )
        assert len(out) - before == count  # the count the progress page shows
    return out


@pytest.mark.parametrize(
    ("steps_in_flight", "starved"), [(1, False), (2, False), (3, False), (2, True)]
)
def test_stepwise_em_is_the_papers_arithmetic(
    rows: np.ndarray, steps_in_flight: int, starved: bool
) -> None:
    means, weights = start()
    if starved:  # a component that explains no row: it starves in the first steps
        means[2] = 1e-6
    model = BernoulliMixture(
        K,
        algorithm="stepwise",
        passes=2,
        batch_size=1_500,
        step_exponent=0.7,
        alpha=0.1,
        dtype="float64",
        means_init=means,
        weights_init=weights,
        random_state=11,
        steps_in_flight=steps_in_flight,
    )
    with dask.config.set(scheduler="threads"):
        model.fit(rows)
    assert task_blocks(as_packed(rows)).bits.numblocks[0] == 3  # mini-batches across chunks
    batches = the_batches(rows, 1_500, seed=11, passes=2)
    assert len(batches) == 40 and sorted(np.concatenate(batches[:20])) == list(range(30_000))
    expected_means, expected_weights, reseeded = numpy_stepwise(
        rows,
        means,
        weights,
        batches,
        alpha=0.1,
        kappa=0.7,
        n_rows=len(rows),
        lag=steps_in_flight - 1,
        pass_steps=20,
    )
    np.testing.assert_allclose(model.means_, expected_means, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.weights_, expected_weights, rtol=0, atol=1e-9)
    assert [r["pass"] for r in model.history_] == [1, 2]
    assert model.history_[-1]["steps"] == 40 and model.batch_size_ == 1_500
    assert sum(r["reseeded"] for r in model.history_) == reseeded
    assert (reseeded > 0) == starved


@pytest.mark.parametrize("how", ["fit", "partial_fit", "select"])
def test_a_component_starved_in_stepwise_passes_is_reseeded(
    rows: np.ndarray, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start with a component that explains no row (weight 0 at the first step): stepwise
    EM re-seeds it during the passes, and it ends with rows of its own."""
    from bmm_dask.selection import select_n_components

    X = rows[:12_000]
    means, weights = start()
    means[2] = 1e-6
    settings = {"batch_size": 500, "means_init": means, "weights_init": weights}
    if how == "fit":
        model = BernoulliMixture(K, algorithm="stepwise", passes=2, random_state=0, **settings)
        model.fit(X)
    elif how == "partial_fit":
        model = BernoulliMixture(K, **settings)
        for batch in np.array_split(np.random.default_rng(0).permutation(len(X)), 24):
            model.partial_fit(X[np.sort(batch)])
    else:
        import bmm_dask.selection

        monkeypatch.setattr(bmm_dask.selection, "starting_values", lambda *args: (means, weights))
        with dask.config.set(scheduler="threads"):
            chosen = select_n_components(
                X, n_components=[K], algorithm="stepwise", passes=2, batch_size=500, random_state=0
            )
        model = chosen.models[K]
    assert sum(r["reseeded"] for r in model.history_) >= 1
    assert np.all(model.weights_ > 0.1)  # the true weights are 0.5, 0.3 and 0.2


@pytest.mark.parametrize("persisted", [False, True])
def test_a_steps_sums_do_not_depend_on_how_its_chunks_are_shared_out(
    rows: np.ndarray, persisted: bool
) -> None:
    data = as_packed(rows, chunk_rows=2_500)  # 12 chunks
    chunks = [7, 2, 11, 0, 5, 9, 3]
    rng = np.random.default_rng(0)
    batch = Batch(chunks, [np.sort(rng.choice(2_500, 300, replace=False)) for _ in chunks])
    means, weights = start()
    steps = []
    with dask.config.set(scheduler="threads"):
        for groups in (1, 2, 3, 5, 7):  # tasks per step, as clusters of as many threads have
            window = hold_window(data, chunks, groups, persisted)
            steps.append(batch_step(window, batch, D, means, weights, np.float32, f"g{groups}"))
    for other in steps[1:]:
        for key in ("resp_sum", "resp_x", "loglik", "n_samples"):
            np.testing.assert_array_equal(other[key], steps[0][key])
    # and they are the mini-batch's statistics, to float32's resolution
    W, b = log_parameters(means, weights, np.float32)
    picked = np.concatenate([rows[c * 2_500 + r] for c, r in zip(chunks, batch.rows, strict=True)])
    direct = estep_stats(np.packbits(picked, axis=1), D, W, b)
    np.testing.assert_allclose(steps[0]["resp_x"], direct["resp_x"], rtol=1e-5, atol=1e-3)
    assert steps[0]["n_samples"] == len(picked) == 2_100


def test_running_statistics_are_blended_not_replaced() -> None:
    means, weights = start()
    state = StepwiseState.start(means, weights)
    first = {"resp_sum": np.array([10.0, 0, 0]), "resp_x": np.ones((K, D)), "n_samples": 10}
    second = {"resp_sum": np.array([0, 0, 20.0]), "resp_x": 2 * np.ones((K, D)), "n_samples": 20}
    state.update(first, 0.7)
    state.update(second, 0.7)
    e1, e2 = step_size(1, 0.7), step_size(2, 0.7)
    blended = (1 - e2) * ((1 - e1) * weights + e1 * first["resp_sum"] / 10) + e2 * np.array(
        [0, 0, 1.0]
    )
    np.testing.assert_allclose(state.resp_sum, blended)
    # Replacing the statistics by the last batch's would leave components 0 and 1 empty.
    assert state.resp_sum[0] > 0.1 and state.resp_sum[1] > 0.1
    assert 0 < e2 < e1 < 1 and state.step == 2 and state.n_seen == 30


def test_stepwise_improves_on_its_start(rows: np.ndarray) -> None:
    train, test = rows[:24_000], rows[24_000:]
    means, weights = start()
    settings = {"means_init": means, "weights_init": weights, "random_state": 0, "tol": 1e-6}
    batch = BernoulliMixture(K, algorithm="batch", **settings).fit(train)
    stepwise = BernoulliMixture(K, algorithm="stepwise", passes=1, **settings).fit(train)
    assert stepwise.n_passes_ == 1 and stepwise.n_iter_ == 0
    assert stepwise.score(test) > batch.score(test) - 0.5


def test_auto_is_batch_em_where_a_pass_costs_too_much(soft_rows: np.ndarray) -> None:
    """12,000 rows, K = 3: a pass of 12 steps would cost many batch iterations (the round
    trips), so auto is batch EM, iteration for iteration."""
    from bmm_dask._stepwise import pass_cost

    assert pass_cost(12_000, K, D, 1, 1_000) > 3
    settings = {"random_state": 0, "tol": 1e-6, "batch_size": 1_000, "dtype": "float64"}
    batch = BernoulliMixture(K, algorithm="batch", **settings).fit(soft_rows)
    auto = BernoulliMixture(K, algorithm="auto", **settings).fit(soft_rows)
    np.testing.assert_array_equal(auto.means_, batch.means_)
    assert [r["objective"] for r in auto.history_] == [r["objective"] for r in batch.history_]


def test_auto_switches_to_passes_while_batch_em_is_far_from_converged(
    soft_rows: np.ndarray, passes_pay: None
) -> None:
    """Where passes pay: 3 batch iterations; then, as the third still gained more than
    100 x tol, at most 3 stepwise passes; then batch iterations to tol, ending where batch EM
    ends."""
    train, test = soft_rows[:10_000], soft_rows[10_000:]
    settings = {"random_state": 0, "tol": 1e-6, "batch_size": 500, "max_iter": 300}
    batch = BernoulliMixture(K, algorithm="batch", **settings).fit(train)
    auto = BernoulliMixture(K, algorithm="auto", **settings).fit(train)
    kinds = ["pass" if "pass" in r else "iteration" for r in auto.history_]
    passes = kinds.count("pass")
    assert batch.history_[2]["change"] >= 100 * 1e-6
    assert kinds[:3] == ["iteration"] * 3 and 1 <= passes <= 3
    assert kinds[3 : 3 + passes] == ["pass"] * passes and "pass" not in kinds[3 + passes :]
    iterations = [r["iteration"] for r in auto.history_ if "pass" not in r]
    assert iterations == list(range(1, auto.n_iter_ + 1)) and auto.n_passes_ == passes
    assert auto.converged_ and abs(auto.score(test) - batch.score(test)) < 0.02


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_the_same_model_on_every_scheduler(rows: np.ndarray, scheduler: str) -> None:
    def fit() -> BernoulliMixture:
        model = BernoulliMixture(
            K, algorithm="stepwise", batch_size=2_000, random_state=5, dtype="float64"
        )
        return model.fit(rows[:20_000])

    with dask.config.set(scheduler=scheduler):
        model = fit()
    with dask.config.set(scheduler="threads", num_workers=1):
        reference = fit()
    np.testing.assert_array_equal(model.means_, reference.means_)
    np.testing.assert_array_equal(model.weights_, reference.weights_)


@pytest.mark.slow
def test_the_same_model_on_one_and_three_workers(rows: np.ndarray) -> None:
    from distributed import Client, LocalCluster

    models = []
    for workers in (1, 3):
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster),
        ):
            model = BernoulliMixture(
                K, algorithm="stepwise", batch_size=2_000, random_state=5, dtype="float64"
            )
            models.append(model.fit(rows[:20_000]))
    np.testing.assert_array_equal(models[0].means_, models[1].means_)
    np.testing.assert_array_equal(models[0].weights_, models[1].weights_)


def test_partial_fit_over_the_mini_batches_equals_fit(rows: np.ndarray) -> None:
    X = rows[:6_000]
    means, weights = start()
    settings = {
        "algorithm": "stepwise",
        "passes": 1,
        "batch_size": 500,
        "alpha": 0.0,  # fit scales the statistics to all rows, partial_fit to the rows seen
        "dtype": "float64",
        "means_init": means,
        "weights_init": weights,
        "random_state": 2,
        "steps_in_flight": 1,  # partial_fit takes its steps one at a time
    }
    fitted = BernoulliMixture(K, **settings).fit(X)
    online = BernoulliMixture(K, **settings)
    for batch in the_batches(X, 500, seed=2, passes=1):
        online.partial_fit(X[batch])
    np.testing.assert_allclose(online.means_, fitted.means_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(online.weights_, fitted.weights_, rtol=0, atol=1e-12)
    assert online.n_iter_ == 12


@pytest.mark.parametrize(("max_iter", "passes"), [(3, 0), (5, 2), (12, 3)])
def test_max_iter_counts_batch_iterations_and_passes_are_bounded_apart(
    rows: np.ndarray, passes_pay: None, max_iter: int, passes: int
) -> None:
    # --max-iter 100 read as 100 EM iterations ended after 10 passes and 90 iterations
    model = BernoulliMixture(K, max_iter=max_iter, tol=0, random_state=0, passes=passes or 3).fit(
        rows[:10_000]
    )
    assert model.n_iter_ == max_iter and model.n_passes_ == passes
    assert len(model.history_) == max_iter + passes
    iterations = [r["iteration"] for r in model.history_ if "pass" not in r]
    assert iterations == list(range(1, max_iter + 1))
    assert [i for i, r in enumerate(model.history_) if "pass" in r] == list(range(3, 3 + passes))
    assert [r["pass"] for r in model.history_ if "pass" in r] == list(range(1, passes + 1))


def test_stepwise_runs_its_passes_whatever_max_iter(rows: np.ndarray) -> None:
    model = BernoulliMixture(
        K, algorithm="stepwise", passes=3, max_iter=1, batch_size=1_000, random_state=0
    ).fit(rows[:10_000])
    assert model.n_passes_ == 3 and model.n_iter_ == 0 and len(model.history_) == 3


def test_a_saved_model_keeps_the_mini_batch_size_it_used(rows: np.ndarray, tmp_path) -> None:
    # batch_size="auto" follows the cluster; the size used is what reproduces the model elsewhere
    model = BernoulliMixture(K, algorithm="stepwise", passes=1, random_state=0).fit(rows[:10_000])
    assert model.batch_size_ == 333  # a 30th of the rows
    model.save(tmp_path / "m.zarr")
    assert BernoulliMixture.load(tmp_path / "m.zarr").batch_size_ == 333
    batch = BernoulliMixture(K, algorithm="batch", max_iter=2, random_state=0).fit(rows[:10_000])
    assert batch.batch_size_ is None


def test_a_model_saved_before_steps_in_flight_loads_as_one_step_at_a_time(
    rows: np.ndarray, tmp_path
) -> None:
    import zarr

    model = BernoulliMixture(K, algorithm="stepwise", passes=1, random_state=0).fit(rows[:10_000])
    model.save(tmp_path / "m.zarr")
    assert BernoulliMixture.load(tmp_path / "m.zarr").steps_in_flight == 2
    group = zarr.open_group(tmp_path / "m.zarr", mode="r+")
    settings = dict(group.attrs["settings"])
    del settings["steps_in_flight"]  # as a model saved before the setting existed
    group.attrs["settings"] = settings
    # such a fit took its steps one at a time: refitting with its settings gives its model
    assert BernoulliMixture.load(tmp_path / "m.zarr").steps_in_flight == 1


def test_partial_fit_starts_itself_and_continues_a_fit(rows: np.ndarray) -> None:
    model = BernoulliMixture(K, random_state=0)
    for piece in np.array_split(rows[:9_000], 6):
        model.partial_fit(piece)
    assert model.n_iter_ == 6 and model.score(rows[9_000:12_000]) > -600
    fitted = BernoulliMixture(K, random_state=0, max_iter=3).fit(rows[:3_000])
    before = fitted.means_.copy()
    fitted.partial_fit(rows[3_000:4_000])
    assert fitted.n_iter_ == 1 and not np.array_equal(fitted.means_, before)
    with pytest.raises(Exception, match="features"):
        fitted.partial_fit(rows[:10, :100])


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("step_exponent", 0.5),
        ("step_exponent", 1.2),
        ("batch_size", 0),
        ("passes", 0),
        ("steps_in_flight", 0),
        ("algorithm", "online"),
    ],
)
def test_bad_stepwise_settings(rows: np.ndarray, setting: str, value: object) -> None:
    with pytest.raises(SettingsError, match=setting):
        BernoulliMixture(K, **{setting: value}).fit(rows[:100])


class Stop(Exception):
    """Stands for a kill: raised as the fit is about to write its n-th checkpoint."""


def killed_then_resumed(
    X: np.ndarray, settings: dict, stop_at: int, every: int, out, monkeypatch: pytest.MonkeyPatch
) -> BernoulliMixture:
    """A fit killed as it is about to write its ``stop_at``-th checkpoint, then resumed."""
    import bmm_dask.model

    write = bmm_dask.model.write_checkpoint
    calls = []

    def write_then_stop(*args, **kwargs) -> None:
        calls.append(1)
        if len(calls) == stop_at:
            raise Stop
        write(*args, **kwargs)

    monkeypatch.setattr(bmm_dask.model, "write_checkpoint", write_then_stop)
    with pytest.raises(Stop):
        BernoulliMixture(K, **settings).fit(X, checkpoint=out, checkpoint_every=every)
    monkeypatch.setattr(bmm_dask.model, "write_checkpoint", write)
    return BernoulliMixture(K, **settings).fit(
        X, checkpoint=out, checkpoint_every=every, resume=True
    )


def checkpoint_phases(
    X: np.ndarray, settings: dict, every: int, out, monkeypatch: pytest.MonkeyPatch
) -> tuple[BernoulliMixture, list[str]]:
    """A fit with checkpoints, and what each checkpoint was written in: "batch" (iterations
    before any pass), "pass" (in or between passes), "after" (iterations after the passes) or
    "start" (between starts)."""
    import bmm_dask.model

    write = bmm_dask.model.write_checkpoint
    phases: list[str] = []

    def write_and_note(path, arrays, meta, *args, **kwargs) -> None:
        if "means" in arrays:
            after = any("pass" in r for r in meta["history"])
            phases.append("after" if after else "batch")
        else:
            phases.append("pass" if "stepwise_resp_sum" in arrays else "start")
        write(path, arrays, meta, *args, **kwargs)

    monkeypatch.setattr(bmm_dask.model, "write_checkpoint", write_and_note)
    model = BernoulliMixture(K, **settings).fit(X, checkpoint=out, checkpoint_every=every)
    monkeypatch.setattr(bmm_dask.model, "write_checkpoint", write)
    return model, phases


@pytest.mark.parametrize(
    ("algorithm", "where", "n_init"),
    [
        # One start where the resumed start must be the model (the best of several would hide
        # a difference in the others).
        ("stepwise", ("pass", 0), 1),  # in the first pass
        ("stepwise", ("pass", 3), 1),  # at the start of the second pass
        ("stepwise", ("pass", 4), 1),  # in the second pass
        ("auto", ("pass", 0), 1),  # at the switch from batch iterations to passes
        ("auto", ("pass", 2), 1),  # in the passes
        ("auto", ("after", 0), 1),  # in the batch iterations after the passes
        ("auto", ("pass", -2), 2),  # in the second start's passes, the first start's kept
    ],
    ids=str,
)
def test_an_interrupted_stepwise_fit_resumes_to_the_same_model(
    soft_rows: np.ndarray,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    passes_pay: None,
    algorithm: str,
    where: tuple[str, int],
    n_init: int,
) -> None:
    X = soft_rows
    settings = {
        "algorithm": algorithm,
        "passes": 2,
        "batch_size": 1_000,
        "dtype": "float64",
        "random_state": 4,
        "max_iter": 12,
        "tol": 0,
        "n_init": n_init,
    }
    # 12 steps per pass, a checkpoint every 4 steps, between passes and at the switch
    reference, phases = checkpoint_phases(X, settings, 4, tmp_path / "ref.zarr", monkeypatch)
    phase, nth = where  # killed at the checkpoint after this one: resumed from this one
    stop_at = [i for i, p in enumerate(phases, start=1) if p == phase][nth] + 1
    resumed = killed_then_resumed(X, settings, stop_at, 4, tmp_path / "m.zarr", monkeypatch)
    np.testing.assert_array_equal(resumed.means_, reference.means_)
    np.testing.assert_array_equal(resumed.weights_, reference.weights_)
    assert resumed.n_iter_ == reference.n_iter_
    assert [r["objective"] for r in resumed.history_] == [
        r["objective"] for r in reference.history_
    ]


def _plain(event: dict) -> dict:
    return {k: v for k, v in event.items() if not isinstance(v, np.ndarray)}


def test_a_fit_tells_its_callback_and_the_progress_page_each_event(
    soft_rows: np.ndarray, passes_pay: None
) -> None:
    from bmm_dask.dashboard import render

    events: list[dict] = []
    settings = {"random_state": 0, "tol": 1e-6, "batch_size": 500, "max_iter": 300}
    model = BernoulliMixture(K, **settings).fit(soft_rows[:10_000], callback=events.append)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run" and kinds.count("run") == 1
    assert {e["run"] for e in events} == {events[0]["run"]}
    assert events[0]["max_iter"] == 300 and events[0]["passes"] == 3
    assert events[0]["n_samples"] == 10_000 and events[0]["n_components"] == K
    records = [e for e in events if e["kind"] in ("iteration", "pass")]
    assert [_plain(e)["objective"] for e in records] == [r["objective"] for r in model.history_]
    steps = [e for e in events if e["kind"] == "step"]
    assert steps and {e["pass"] for e in steps} == set(range(1, model.n_passes_ + 1))
    assert all(e["step_in_pass"] <= e["steps_in_pass"] for e in steps)
    # the parameters after each event; after the last, the model's
    np.testing.assert_array_equal(records[-1]["means"], model.means_)
    assert records[-1]["converged"] and model.converged_

    page = render([(float(i), _plain(e)) for i, e in enumerate(events)])
    assert "Run 1" in page and "Run 2" not in page  # one fit, one run, passes and all
    assert f"batch iteration {model.n_iter_} of at most 300" in page and "converged" in page


@pytest.mark.slow
def test_the_dask_events_are_the_callbacks_less_the_parameters(rows: np.ndarray) -> None:
    from distributed import Client, LocalCluster

    from bmm_dask._events import EVENT_TOPIC, jsonable

    events: list[dict] = []
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        BernoulliMixture(K, algorithm="stepwise", passes=2, batch_size=1_000, random_state=0).fit(
            rows[:10_000], callback=events.append
        )
        logged = [event for _, event in client.get_events(EVENT_TOPIC)]
    assert logged == [jsonable(_plain(e)) for e in events]  # JSON holds no NaN nor inf
