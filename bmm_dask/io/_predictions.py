"""The predictions store written by ``bmm-dask predict``: the component of each row, and
optionally the responsibilities, chunked like the data."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bmm_dask.io._output import atomic_output
from bmm_dask.io._zarr import new_group

#: What a predictions group's ``format`` attribute holds.
PREDICTIONS_FORMAT = {"name": "bmm_dask.predictions", "version": 1}


def store_predictions(
    out: str | os.PathLike[str],
    labels: Any,
    resp: Any | None,
    attrs: Mapping[str, Any],
    *,
    chunk_rows: int,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    check: Callable[[], None] | None = None,
) -> Path:
    """Compute and write predictions to a new Zarr group, whole or not at all.

    Parameters
    ----------
    out : str or path-like
        The group to write (a local folder).
    labels : dask array of shape (n_samples,), integer
        The most likely component of each row.
    resp : dask array of shape (n_samples, n_components), float32, or None
        The responsibilities of each component for each row, if wanted.
    attrs : mapping
        Attributes of the group (the model's path, the data's fingerprint, ...).
    chunk_rows : int
        Rows per chunk of the arrays written (those of the data, so they line up).
    overwrite : bool, default=False
        Replace ``out`` if it exists.
    inputs : sequence of paths, default=()
        What the predictions are computed from; ``out`` may be none of them.
    check : callable, default=None
        Called once the predictions are computed, before they replace ``out``: it raises
        (DataError) if what they were computed from changed meanwhile, and nothing is written.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    import dask.array as da

    n_samples = int(labels.shape[0])
    n_chunks = -(-n_samples // chunk_rows) if n_samples else 0
    # every chunk stored, and the count recorded, as a dataset's: a lost chunk of labels 0
    # would otherwise read as labels 0, unnoticed
    stored = {"labels": n_chunks, **({"resp": n_chunks} if resp is not None else {})}
    every_chunk = {"write_empty_chunks": True}
    with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
        group = new_group(tmp, PREDICTIONS_FORMAT, **attrs, chunks_stored=stored)
        sources = [labels]
        targets = [
            group.create_array(
                "labels",
                shape=(n_samples,),
                chunks=(chunk_rows,),
                dtype=labels.dtype,
                dimension_names=("sample",),
                config=every_chunk,
            )
        ]
        if resp is not None:
            sources.append(resp)
            targets.append(
                group.create_array(
                    "resp",
                    shape=resp.shape,
                    chunks=(chunk_rows, resp.shape[1]),
                    dtype=resp.dtype,
                    dimension_names=("sample", "component"),
                    config=every_chunk,
                )
            )
        try:
            da.store([s.rechunk({0: chunk_rows}) for s in sources], targets, lock=False)
        except Exception:
            if check is not None:
                check()  # a source replaced mid-read says so, whatever broke
            raise
        if check is not None:
            check()
    return Path(out)
