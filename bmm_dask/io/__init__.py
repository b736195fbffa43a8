"""Everything bmm-dask reads and writes: datasets, models, checkpoints and predictions in Zarr,
each output written whole by one writer at a time.

=================  ===========================================================
module             what it holds
=================  ===========================================================
``_output``        the lock, the temporary sibling and the rename of an output
``_zarr``          opening groups read-only, the format record of each store
``_dataset``       the dataset store: packed bits and labels, written and read
``_model``         the model store: means, weights and attributes
``_checkpoint``    the checkpoint of an unfinished fit
``_predictions``   the predictions store written by ``bmm-dask predict``
``_describe``      what ``bmm-dask info`` shows of a path
=================  ===========================================================
"""

from __future__ import annotations

from bmm_dask.io._checkpoint import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    read_checkpoint,
    write_checkpoint,
)
from bmm_dask.io._dataset import (
    CHUNK_BYTES,
    CHUNKS_STORED,
    DATASET_FORMAT,
    FEATURE_NAMES,
    MAX_CHUNKS,
    ZSTD_LEVEL,
    Dataset,
    DatasetWriter,
    default_chunk_rows,
    describe_dataset,
    open_dataset,
    parse_chunk_rows,
    read_feature_names,
)
from bmm_dask.io._describe import describe_path
from bmm_dask.io._model import MODEL_FORMAT, describe_model, read_model, write_model
from bmm_dask.io._output import (
    UNREADABLE_LOCK_SECONDS,
    atomic_file,
    atomic_output,
    check_not_input,
    check_output,
    output_lock,
)
from bmm_dask.io._predictions import PREDICTIONS_FORMAT, store_predictions

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "CHUNKS_STORED",
    "CHUNK_BYTES",
    "DATASET_FORMAT",
    "FEATURE_NAMES",
    "MAX_CHUNKS",
    "MODEL_FORMAT",
    "PREDICTIONS_FORMAT",
    "UNREADABLE_LOCK_SECONDS",
    "ZSTD_LEVEL",
    "Dataset",
    "DatasetWriter",
    "atomic_file",
    "atomic_output",
    "check_not_input",
    "check_output",
    "default_chunk_rows",
    "describe_dataset",
    "describe_model",
    "describe_path",
    "open_dataset",
    "output_lock",
    "parse_chunk_rows",
    "read_checkpoint",
    "read_feature_names",
    "read_model",
    "store_predictions",
    "write_checkpoint",
    "write_model",
]
