"""What the commands read and write besides their main output: a dataset or a model opened as
the command line names them, and metrics as JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("bmm_dask")


def open_data(path: str) -> Any:
    """Open a dataset (see :func:`bmm_dask.io.open_dataset`), importing Dask only now.

    Parameters
    ----------
    path : str
        The dataset's path or URL.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        When the path is missing or is not a dataset.
    """
    from bmm_dask.io import open_dataset

    return open_dataset(path)


def load_model(path: str) -> Any:
    """Read a model store (see :meth:`BernoulliMixture.load`), importing Dask only now.

    Parameters
    ----------
    path : str
        The model's path.

    Returns
    -------
    BernoulliMixture

    Raises
    ------
    ModelFileError
        When the path is missing, not a model, or damaged.
    """
    from bmm_dask.model import BernoulliMixture

    return BernoulliMixture.load(path)


def write_json(
    path: Path, value: Any, *, overwrite: bool = True, inputs: Sequence[str | None] = ()
) -> None:
    """Write a JSON file whole or not at all, under its lock; never over an input.

    Parameters
    ----------
    path : Path
        The file to write.
    value : object
        What to write, as JSON (indented).
    overwrite : bool, default=True
        Whether an existing file may be replaced.
    inputs : sequence of str or None, default=()
        What the command reads; ``path`` may be none of them.

    Raises
    ------
    OutputError
        If the file exists (without ``overwrite``), is or holds an input, cannot be written,
        or another command holds its lock.
    """
    from bmm_dask.io import atomic_file, check_output, output_lock

    check_output(path, overwrite=overwrite, inputs=inputs)
    with output_lock(path):
        check_output(path, overwrite=overwrite, inputs=inputs)
        atomic_file(
            path,
            lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"),
            overwrite=overwrite,
        )
