"""Choosing the number of components: fit several K in shared passes, score held-out rows.

Every candidate (a K and a start) is an :class:`~bmm_dask._em.EMRun`, the object a fit
drives: it stops, records, re-seeds and goes between batch iterations and stepwise passes
exactly as a fit of its own does, so its model is the one a separate fit with the same
settings and start gives. Each round, the candidates in batch iterations share one E-step that
reads and unpacks each chunk once for all of them (one product of the rows with their
parameters stacked, :func:`~bmm_dask._estep.estep_stacked`), and those in stepwise passes share
one pass of the same mini-batches; a candidate that has converged drops out.

The held-out rows are chosen by row number, never copied: row i is held out when a hash of i
and a key drawn from ``random_state`` on the driver falls below ``validation_fraction``
(SplitMix64, so the same rows whatever the chunking and the cluster). The training E-step
takes the other rows of each chunk; the held-out rows are only scored, at the end.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.base import tokenize
from numpy.typing import NDArray

from bmm_dask._em import EMRun, single_threaded_blas
from bmm_dask._estep import (
    PackedData,
    _cluster_threads,
    as_packed,
    data_density,
    estep_stacked,
    fits_in_memory,
    task_blocks,
    with_sparse_chunks,
)
from bmm_dask._events import jsonable, publish
from bmm_dask._init import starting_values
from bmm_dask._settings import DEFAULTS
from bmm_dask._stepwise import auto_batch_size, stepwise_pass
from bmm_dask.errors import SettingsError

logger = logging.getLogger(__name__)

CRITERIA = ("heldout", "bic", "aic", "icl")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def heldout_mask(start: int, stop: int, key: int, fraction: float) -> NDArray[np.bool_]:
    """Which of the rows ``start`` to ``stop`` are held out.

    Row i is held out when SplitMix64 of ``key + (i + 1) * golden`` is below ``fraction``
    of 2**64: a function of the row number and the key alone.

    Parameters
    ----------
    start, stop : int
        Row numbers in the whole data, ``stop`` excluded.
    key : int
        Drawn from the random generator on the driver, in [0, 2**63).
    fraction : float
        Share of the rows held out, in (0, 1).

    Returns
    -------
    ndarray of shape (stop - start,), bool
    """
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.arange(start, stop, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
    return z < np.uint64(min(fraction * 2.0**64, 2.0**64 - 1))


def _take_rows(
    block: NDArray[np.uint8], key: int, fraction: float, held_out: bool, block_info: Any = None
) -> NDArray[np.uint8]:
    start, stop = block_info[0]["array-location"][0]
    mask = heldout_mask(start, stop, key, fraction)
    return block[mask if held_out else ~mask]


def split_rows(data: PackedData, fraction: float, key: int) -> tuple[PackedData, PackedData]:
    """The training rows and the held-out rows of ``data``, as two lazy views of its chunks.

    Parameters
    ----------
    data : PackedData
        Packed rows.
    fraction : float
        Share of the rows held out.
    key : int
        The key of :func:`heldout_mask`.

    Returns
    -------
    train, heldout : PackedData
        Each chunk of ``data`` gives one chunk of each (of the rows it holds of each).
    """
    offsets = np.cumsum([0, *data.bits.chunks[0]])
    bounds = list(itertools.pairwise(int(o) for o in offsets))
    held = [int(heldout_mask(a, b, key, fraction).sum()) for a, b in bounds]
    sizes = {
        False: tuple(b - a - h for (a, b), h in zip(bounds, held, strict=True)),
        True: tuple(held),
    }
    views = []
    for held_out in (False, True):
        bits = data.bits.map_blocks(
            _take_rows,
            key,
            fraction,
            held_out,
            dtype=np.uint8,
            chunks=(sizes[held_out], data.bits.chunks[1]),
            name=f"bmm-{'heldout' if held_out else 'train'}-rows-"
            + tokenize(data.bits.name, key, fraction),
            meta=np.empty((0, 0), dtype=np.uint8),
        )
        what = "held-out" if held_out else "training"
        views.append(
            PackedData(
                bits, data.n_features, f"{data.source} ({what} rows)", unchanged=data.unchanged
            )
        )
    return views[0], views[1]


def parameter_count(n_components: int, n_features: int) -> int:
    """Free parameters of a Bernoulli mixture: K x D means and K - 1 weights."""
    return n_components * n_features + n_components - 1


@dataclass
class Selection:
    """The outcome of :func:`select_n_components`.

    Attributes
    ----------
    criterion : str
        What chose: "heldout" (the largest held-out log-likelihood per row), "bic", "aic"
        or "icl" (the smallest).
    table : list of dict
        Per K and start: ``n_components``, ``start``, ``objective`` (training objective
        at the last iteration), ``train_loglik`` (per training row, final parameters),
        ``heldout_loglik`` (per held-out row), ``bic``, ``aic``, ``icl``, ``n_iter`` (batch iterations), ``n_passes`` (stepwise passes),
        ``seconds`` (the candidate's share of the shared iterations), ``converged``,
        ``best_start`` (whether it is its K's best start, by training objective).
    n_components : int
        The K chosen.
    models : dict of int to BernoulliMixture
        Per K, the model of its best start.
    n_train, n_heldout : int
        Training and held-out rows.
    """

    criterion: str
    table: list[dict[str, Any]]
    n_components: int
    models: dict[int, Any] = field(repr=False)
    n_train: int = 0
    n_heldout: int = 0
    #: The key of :func:`heldout_mask` (None when the held-out rows were given).
    heldout_key: int | None = None
    #: Per (K, start): the starting means and weights.
    starts: dict[tuple[int, int], tuple[NDArray[np.float64], NDArray[np.float64]]] = field(
        default_factory=dict, repr=False
    )
    #: The random generator's state where the stepwise passes' mini-batches begin (stepwise).
    stepwise_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def model(self) -> Any:
        """The chosen model."""
        return self.models[self.n_components]

    def to_dict(self) -> dict[str, Any]:
        """What ``selection.json`` holds: the criterion, the K chosen, the rows, the table."""
        return {
            "criterion": self.criterion,
            "n_components": self.n_components,
            "n_train": self.n_train,
            "n_heldout": self.n_heldout,
            "candidates": self.table,
        }

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
        inputs: Sequence[str | os.PathLike[str] | None] = (),
    ) -> Path:
        """Write the selection into the folder ``path``, whole or not at all.

        It holds ``selection.json`` (:meth:`to_dict`), ``selection.png`` (held-out
        log-likelihood and BIC against K), ``model.zarr`` (the chosen model, as
        :meth:`~bmm_dask.BernoulliMixture.save` writes it) and ``model-k{K}.zarr`` for every
        other K.

        Parameters
        ----------
        path : str or path-like
            The folder.
        overwrite : bool, default=False
            Replace it if it exists.
        attrs : dict, default=None
            Further attributes for every model (where the data came from).
        inputs : sequence of paths, default=()
            What was read, which the folder may not replace.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        from bmm_dask.io import atomic_output
        from bmm_dask.report import plot_selection

        with atomic_output(path, overwrite=overwrite, inputs=inputs, urls=True) as tmp:
            summary = self.to_dict()
            summary["candidates"] = [jsonable(row) for row in self.table]
            (tmp / "selection.json").write_text(json.dumps(summary, indent=2))
            plot_selection(self.table, self.n_components, self.criterion, tmp / "selection.png")
            for k, model in self.models.items():
                name = "model.zarr" if k == self.n_components else f"model-k{k}.zarr"
                model.save(tmp / name, attrs={**(attrs or {}), "selection": self.criterion})
        return Path(path)


def read_selection(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``selection.json`` of a folder that :meth:`Selection.save` wrote, or None when
    ``path`` is not such a folder.

    Raises
    ------
    ModelFileError
        If the folder has a ``selection.json`` that cannot be read, or no ``model.zarr``.
    """
    from bmm_dask.errors import ModelFileError

    folder = Path(path)
    record = folder / "selection.json"
    if not record.is_file():
        return None
    try:
        selection = json.loads(record.read_text())
        selection["candidates"], selection["n_components"], selection["criterion"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelFileError(
            f"{record}: not a selection written by bmm-dask select ({err})"
        ) from None

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    candidates = selection["candidates"]
    if not isinstance(candidates, list) or not all(
        isinstance(row, dict)
        and isinstance(row.get("n_components"), int)
        and all(number(row.get(k)) for k in ("heldout_loglik", "bic"))
        for row in candidates
    ):
        raise ModelFileError(
            f"{record}: candidates should be a list of one object per K and start (with "
            "n_components, heldout_loglik, bic, ...); the file is damaged"
        )
    if not isinstance(selection["n_components"], int) or not isinstance(
        selection["criterion"], str
    ):
        raise ModelFileError(
            f"{record}: n_components should be a whole number and criterion a name; the file "
            "is damaged"
        )
    if not (folder / "model.zarr").exists():
        raise ModelFileError(f"{folder}: a selection without its chosen model (model.zarr)")
    return selection


def _check_candidates(n_components: Sequence[int]) -> list[int]:
    try:
        ks = [int(k) for k in n_components]
    except (TypeError, ValueError):
        raise SettingsError(
            f"n_components must be a list of whole numbers; got {n_components!r}"
        ) from None
    if not ks:
        raise SettingsError("n_components must name at least one number of components")
    if any(k < 1 for k in ks) or any(k != float(v) for k, v in zip(ks, n_components, strict=True)):
        raise SettingsError(f"n_components must be whole numbers of at least 1; got {ks}")
    if len(set(ks)) != len(ks):
        raise SettingsError(f"n_components names a number twice: {ks}")
    return sorted(ks)


def select_n_components(
    X: Any,
    n_components: Sequence[int],
    *,
    validation_fraction: float = 0.1,
    validation: Any = None,
    criterion: str = "heldout",
    n_init: int = DEFAULTS["n_init"],
    init: str = DEFAULTS["init"],
    random_state: int | np.random.Generator | None = None,
    alpha: float = DEFAULTS["alpha"],
    max_iter: int = DEFAULTS["max_iter"],
    tol: float = DEFAULTS["tol"],
    mean_tol: float | None = DEFAULTS["mean_tol"],
    dtype: str = DEFAULTS["dtype"],
    algorithm: str = DEFAULTS["algorithm"],
    passes: int = DEFAULTS["passes"],
    batch_size: int | str | None = DEFAULTS["batch_size"],
    step_exponent: float = DEFAULTS["step_exponent"],
    steps_in_flight: int = DEFAULTS["steps_in_flight"],
    persist: bool | None = None,
    callback: Any = None,
) -> Selection:
    """Fit a Bernoulli mixture for every K in ``n_components`` in shared passes, score them on
    held-out rows, and choose one K.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features), Dask array or Dataset
        The rows, 0/1.
    n_components : list of int
        The numbers of components to try.
    validation_fraction : float, default=0.1
        Share of the rows of ``X`` held out (chosen by row number from ``random_state``), in
        (0, 1); not used when ``validation`` is given.
    validation : array-like, Dask array or Dataset, default=None
        Held-out rows of their own, of the same width; then every row of ``X`` trains.
    criterion : {"heldout", "bic", "aic", "icl"}, default="heldout"
        How to choose K: the largest held-out log-likelihood per row, or the smallest
        BIC, AIC or ICL on the training rows.
    n_init : int, default=1
        Starts per K; each K keeps its start of the best training objective.
    init, random_state, alpha, max_iter, tol, mean_tol, dtype :
        As for :class:`~bmm_dask.BernoulliMixture`.
    algorithm : {"batch", "stepwise", "auto"}, default="auto"
        Batch EM to ``tol``; ``passes`` passes of stepwise EM, every candidate taking the
        same mini-batches; or fit's default: each candidate follows auto's rule
        (:class:`~bmm_dask._em.EMRun`) as a fit of its own would, the candidates in batch
        iterations sharing each E-step and those in stepwise passes each pass.
    passes, batch_size, step_exponent, steps_in_flight :
        Of stepwise EM, as for :class:`~bmm_dask.BernoulliMixture`; ``batch_size`` "auto"
        (or None) sizes the mini-batches for all the candidates' components together.
    persist : bool, default=None
        Hold the training and held-out rows in the cluster's memory; None: when they take
        at most half of it.
    callback : callable, default=None
        Called after every iteration with a dict: ``iteration`` and ``candidates``, one
        record per candidate still running (``n_components``, ``start``, ``objective``,
        ``change``).

    Returns
    -------
    Selection

    Raises
    ------
    SettingsError
        If a setting is out of range, or a K is larger than the training rows.
    DataError
        If the data is not 0/1, or has fewer distinct rows than a K.
    """
    from bmm_dask.model import BernoulliMixture, feature_names_of

    ks = _check_candidates(n_components)
    if criterion not in CRITERIA:
        raise SettingsError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    settings = {
        "max_iter": max_iter,
        "tol": tol,
        "mean_tol": mean_tol,
        "n_init": n_init,
        "init": init,
        "alpha": alpha,
        "dtype": dtype,
        "algorithm": algorithm,
        "passes": passes,
        "step_exponent": step_exponent,
        "steps_in_flight": steps_in_flight,
    }
    if batch_size is not None:
        settings["batch_size"] = batch_size
    batch_size = None if batch_size == "auto" else batch_size
    if algorithm not in ("batch", "stepwise", "auto"):
        raise SettingsError(f"algorithm must be batch, stepwise or auto; got {algorithm!r}")
    for k in ks:  # every setting checked as a fit of each K checks it, before any work
        BernoulliMixture(k, **settings)._check_settings(1)
    data = as_packed(X)
    rng = (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )
    if validation is None:
        if not (isinstance(validation_fraction, float | int) and 0 < validation_fraction < 1):
            raise SettingsError(
                f"validation_fraction must be in (0, 1); got {validation_fraction!r}"
            )
        key: int | None = int(rng.integers(2**63))
        train, heldout = split_rows(task_blocks(data), float(validation_fraction), key)
    else:
        key = None
        train, heldout = task_blocks(data), task_blocks(as_packed(validation))
        if heldout.n_features != train.n_features:
            raise SettingsError(
                f"{heldout.source}: the validation rows have {heldout.n_features} features, "
                f"the training rows {train.n_features}"
            )
    if ks[-1] > train.n_samples:
        raise SettingsError(
            f"{train.source}: K = {ks[-1]} is more than the {train.n_samples} training rows"
        )
    if heldout.n_samples == 0:
        raise SettingsError(f"{heldout.source}: no held-out rows")
    if persist is None:
        persist = fits_in_memory(train)
    if persist:
        train_bits, heldout_bits = dask.persist(train.bits, heldout.bits)
        train = PackedData(
            train_bits, train.n_features, train.source, unchanged=train.unchanged
        ).held()
        heldout = PackedData(
            heldout_bits, heldout.n_features, heldout.source, unchanged=heldout.unchanged
        ).held()
    arithmetic = np.dtype(dtype)
    hold = persist and algorithm != "stepwise"  # batch E-steps on sparse chunks skip unpacking
    density = data_density(train) if algorithm != "batch" or hold else None
    if hold:
        assert density is not None
        train = with_sparse_chunks(train, sum(ks) * n_init, arithmetic, density)
    threads = _cluster_threads()
    with single_threaded_blas():
        size = None
        if algorithm != "batch":
            size = batch_size or auto_batch_size(
                train.n_samples, sum(ks) * n_init, train.n_features, threads, density
            )
        runs: list[tuple[int, int, EMRun]] = []
        starts = {}
        for k in ks:
            for start in range(n_init):
                means, weights = starting_values(train, k, init, rng)
                starts[k, start] = (means, weights)
                label = f"K = {k}{f' start {start + 1}' if n_init > 1 else ''}: "
                run = EMRun(
                    means,
                    weights,
                    algorithm=algorithm,
                    n_samples=train.n_samples,
                    alpha=alpha,
                    max_iter=max_iter,
                    tol=tol,
                    mean_tol=mean_tol,
                    passes=passes,
                    batch_size=size,
                    step_exponent=step_exponent,
                    threads=threads,
                    density=density,
                    label=label,
                )
                runs.append((k, start, run))
        seconds = [0.0] * len(runs)
        # where the shared mini-batches begin: every candidate in the passes takes the same
        # ones, as a fit of its own from this generator state would
        stepwise_state = rng.bit_generator.state if algorithm != "batch" else None
        round_ = 0
        while any(run.next is not None for _, _, run in runs):
            round_ += 1
            records = []
            in_passes = [i for i, (_, _, run) in enumerate(runs) if run.next == "stepwise"]
            if in_passes:
                assert size is not None
                begun = time.perf_counter()
                done = stepwise_pass(
                    train,
                    [runs[i][2].stepwise for i in in_passes],  # type: ignore[misc]
                    rng,
                    batch_size=size,
                    dtype=arithmetic,
                    persisted=persist,
                    threads=threads,
                    steps_in_flight=steps_in_flight,
                )
                took = time.perf_counter() - begun
                train.check_unchanged()  # before the round's statistics are taken
                for i, record in zip(in_passes, done, strict=True):
                    k, start, run = runs[i]
                    seconds[i] += took / len(done)
                    records.append({"n_components": k, "start": start, **record})
                    run.after_pass()
            active = [i for i, (_, _, run) in enumerate(runs) if run.next == "batch"]
            if active:
                begun = time.perf_counter()
                stats = estep_stacked(
                    train,
                    [(runs[i][2].means, runs[i][2].weights) for i in active],
                    dtype=arithmetic,
                    threads=threads,  # asked once, not every iteration
                )
                took = time.perf_counter() - begun
                train.check_unchanged()  # before the round's statistics are taken
                for i, part in zip(active, stats, strict=True):
                    k, start, run = runs[i]
                    seconds[i] += took / len(active)
                    record = run.advance(part, train, took)
                    records.append({"n_components": k, "start": start, **record})
            publish(
                {
                    "kind": "iteration",
                    "iteration": round_,
                    "candidates": [jsonable(r) for r in records],
                }
            )
            logger.info(
                "%s %d  %s",
                "pass" if algorithm == "stepwise" else "iteration",
                round_,
                "  ".join(
                    f"K={r['n_components']}{' (pass)' if 'pass' in r and algorithm == 'auto' else ''}"
                    f": {r['objective']:.4f}"
                    + (f" re-seeded {r['reseeded']}" if r["reseeded"] else "")
                    for r in records
                ),
            )
            if callback is not None:
                callback({"iteration": round_, "candidates": records})
            for i in active:
                runs[i][2].check()
        results = {i: run.result() for i, (_, _, run) in enumerate(runs)}
        finals = [(results[i].means, results[i].weights) for i in range(len(runs))]
        # in the fit's arithmetic, as its iterations: float64 would cost a pass three times
        scored_train = estep_stacked(train, finals, dtype=arithmetic, threads=threads, entropy=True)
        scored_heldout = estep_stacked(heldout, finals, dtype=arithmetic, threads=threads)
        train.check_unchanged()
        heldout.check_unchanged()
    table = []
    for i, ((k, start, _), took, tr, ho) in enumerate(
        zip(runs, seconds, scored_train, scored_heldout, strict=True)
    ):
        result = results[i]
        p = parameter_count(k, train.n_features)
        bic = -2 * tr["loglik"] + p * math.log(tr["n_samples"])
        table.append(
            {
                "n_components": k,
                "start": start,
                "objective": result.lower_bound,
                "train_loglik": tr["loglik"] / tr["n_samples"],
                "heldout_loglik": ho["loglik"] / ho["n_samples"],
                "bic": bic,
                "aic": -2 * tr["loglik"] + 2 * p,
                "icl": bic + 2 * tr["entropy"],
                "n_iter": result.n_iter,
                "n_passes": result.n_passes,
                "seconds": took,
                "converged": result.converged,
            }
        )
    best_rows: dict[int, int] = {}
    for i, row in enumerate(table):
        j = best_rows.get(row["n_components"])
        if j is None or row["objective"] > table[j]["objective"]:
            best_rows[row["n_components"]] = i
    for i, row in enumerate(table):
        row["best_start"] = best_rows[row["n_components"]] == i
    models = {}
    for k, i in best_rows.items():
        # the seed of the whole selection (its starts and held-out rows), as a fit records its own
        seed = random_state if isinstance(random_state, int) else None
        model = BernoulliMixture(k, random_state=seed, **settings)
        model._set_fitted(results[i], train.n_features, feature_names_of(X))
        models[k] = model
    if criterion == "heldout":
        chosen = max(best_rows, key=lambda k: table[best_rows[k]]["heldout_loglik"])
    else:
        chosen = min(best_rows, key=lambda k: table[best_rows[k]][criterion])
    logger.info("chose K = %d by %s", chosen, criterion)
    return Selection(
        criterion,
        table,
        chosen,
        models,
        train.n_samples,
        heldout.n_samples,
        key,
        starts,
        stepwise_state,
    )
