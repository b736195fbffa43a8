"""The data commands: ``fetch``, ``ingest``, ``synth`` and ``info``."""

from __future__ import annotations

import json

import click

from bmm_dask.cli._display import format_dataset, format_model, progress_bar, say_done
from bmm_dask.cli._em_options import FiniteRange
from bmm_dask.cli._group import CONTEXT, cli
from bmm_dask.cli._options import CHUNK_ROWS_OPTION, overwrite_option, seed_option


@cli.command(context_settings=CONTEXT)
@click.argument("name", type=click.Choice(["mnist"]))
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where the files go [default: $BMM_DASK_DATA/mnist or ~/.cache/bmm-dask/mnist].",
)
@click.option(
    "--from",
    "from_dir",
    type=click.Path(file_okay=False),
    help="Copy the four IDX files (.gz or not) from this folder instead of downloading.",
)
def fetch(name: str, directory: str | None, from_dir: str | None) -> None:
    """Download the MNIST IDX files (or copy them with --from) and check their MD5.

    Mirrors are tried in turn; BMM_DASK_MNIST_MIRRORS (comma-separated base URLs) replaces them.
    """
    from bmm_dask.datasets import fetch_mnist

    folder = fetch_mnist(directory, from_dir=from_dir)
    click.echo(f"MNIST files verified in {folder}")


def _parse_columns(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(name.strip() for name in value.split(","))
    if not all(names):
        raise click.BadParameter(f"expected column names separated by commas; got {value!r}")
    return names


@cli.command(context_settings=CONTEXT)
@click.argument("source")
@click.option("--out", "-o", required=True, type=click.Path(), help="Dataset to write (DATA.zarr).")
@click.option(
    "--labels", type=click.Path(), help="IDX or .npy file of integer labels, one per sample."
)
@click.option(
    "--threshold",
    type=FiniteRange(0, 255, min_open=True),
    help="A value at least this is 1 [default: 128].",
)
@click.option(
    "--binarize",
    type=click.Choice(["threshold", "stochastic", "none", "nonzero"]),
    help="threshold (default for images and arrays), stochastic (value/255 is the chance of a "
    "1), none (0/1 data), or nonzero (a count above 0 is 1; default for svmlight, Matrix "
    "Market, .npz, Parquet and CSV).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), help="Seed for --binarize stochastic [default: 0]."
)
@CHUNK_ROWS_OPTION
@click.option(
    "--feature-names",
    type=click.Path(),
    help="Text file of the features' names, one a line (a vocabulary): for svmlight it sets "
    "the number of features, for a table of items it is the vocabulary.",
)
@click.option(
    "--n-features",
    type=click.IntRange(min=1),
    help="svmlight: number of features [default: the highest index].",
)
@click.option(
    "--zero-based/--one-based",
    default=None,
    help="svmlight: whether feature indices count from 0 [default: from 0 when some index is 0].",
)
@click.option(
    "--columns",
    callback=_parse_columns,
    help="CSV/Parquet: the feature columns, by name, comma-separated [default: all but "
    "--label-column].",
)
@click.option("--label-column", help="CSV/Parquet: the column of integer labels.")
@click.option(
    "--drop-columns",
    callback=_parse_columns,
    help="CSV/Parquet: columns that are not features (an id, a name), comma-separated.",
)
@click.option(
    "--items",
    metavar="COLUMN",
    help="CSV/Parquet: the column that lists each row's items (a list, or text); the features "
    "are the items seen, sorted.",
)
@click.option(
    "--item-separator",
    help="CSV/Parquet: what separates the items in a cell of text [default: whitespace].",
)
@overwrite_option()
def ingest(
    source: str,
    out: str,
    labels: str | None,
    threshold: float | None,
    binarize: str | None,
    seed: int | None,
    chunk_rows: int | None,
    feature_names: str | None,
    n_features: int | None,
    zero_based: bool | None,
    columns: tuple[str, ...] | None,
    label_column: str | None,
    drop_columns: tuple[str, ...] | None,
    items: str | None,
    item_separator: str | None,
    overwrite: bool,
) -> None:
    """Binarise rows from a file and write them to Zarr, packed 8 features per byte.

    \b
    SOURCE is one of:
      images.npy, *-idx3-ubyte[.gz]    N x D or N x H x W arrays (threshold 128)
      docs.svm, .svmlight, .libsvm     svmlight / LIBSVM; the targets are labels if whole
      counts.mtx[.gz]                  Matrix Market coordinates
      counts.npz                       a SciPy sparse matrix (scipy.sparse.save_npz)
      table.parquet, table.csv, .tsv   columns of 0/1, true/false or counts, or --items
      file.h5:/path/to/dataset         a dataset in an HDF5 file
      array.zarr                       a Zarr array
      mnist                            the fetched MNIST files, else the copy inside the
                                       package; writes OUT/train and OUT/test

    The format is told by the name, else by the first bytes. Parquet needs pyarrow and HDF5
    needs h5py (pip install 'bmm-dask[parquet,hdf5]').
    """
    from bmm_dask.datasets import Binarization, ingest_mnist
    from bmm_dask.datasets import ingest as ingest_file

    if binarize is None:
        binarize = (
            "stochastic" if seed is not None else "threshold" if threshold is not None else None
        )
    if threshold is not None and binarize != "threshold":
        raise click.UsageError(f"--threshold goes with --binarize threshold, not {binarize}")
    if seed is not None and binarize != "stochastic":
        raise click.UsageError(f"--seed goes with --binarize stochastic, not {binarize}")
    binarization = None
    if binarize is not None:
        binarization = Binarization(
            binarize, threshold=128 if threshold is None else threshold, seed=seed or 0
        )
    with progress_bar("ingest") as progress:
        if source == "mnist":
            given = {
                "--labels": labels,
                "--feature-names": feature_names,
                "--n-features": n_features,
                "--zero-based": zero_based,
                "--columns": columns,
                "--label-column": label_column,
                "--items": items,
                "--item-separator": item_separator,
                "--drop-columns": drop_columns,
            }
            for flag, value in given.items():
                if value is not None:
                    raise click.UsageError(f"{flag} does not go with mnist: it has its own")
            written = ingest_mnist(
                out,
                binarization=binarization,
                chunk_rows=chunk_rows,
                overwrite=overwrite,
                progress=progress.rows,
            )
        else:
            written = ingest_file(
                source,
                out,
                labels=labels,
                binarization=binarization,
                chunk_rows=chunk_rows,
                overwrite=overwrite,
                progress=progress.rows,
                feature_names=feature_names,
                n_features=n_features,
                zero_based=zero_based,
                columns=columns,
                label_column=label_column,
                items=items,
                item_separator=item_separator,
                drop_columns=drop_columns,
            )
    say_done(f"wrote {written}")


def _parse_shape(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(n) for n in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected sizes like 28x28; got {value!r}") from None
    if any(n < 1 for n in shape):
        raise click.BadParameter(f"sizes must be positive; got {value!r}")
    return shape


@cli.command(context_settings=CONTEXT)
@click.option("--n", "n_samples", required=True, type=click.IntRange(min=1), help="Rows to draw.")
@click.option(
    "--like",
    metavar="MODEL",
    type=click.Path(),
    help="Draw from this fitted model's means and weights (a model from fit) instead.",
)
@click.option(
    "--d",
    "n_features",
    type=click.IntRange(min=1),
    help="Bits per row; needed without --like (with it, the model's).",
)
@click.option(
    "--k",
    "n_components",
    type=click.IntRange(min=1),
    help="Components of the mixture; needed without --like (with it, the model's).",
)
@seed_option("the mixture (unless --like) and the rows")
@click.option("--out", "-o", required=True, type=click.Path(), help="Dataset to write (DATA.zarr).")
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    help="Rows per chunk [default: about 1 MiB packed; with --density, about 1 MiB of the "
    "ones' indices, at most 64 MiB packed]. The rows drawn do not depend on it.",
)
@click.option(
    "--image-shape",
    callback=_parse_shape,
    help="Shape of a row as an image, e.g. 28x28 [default: with --like, the model's data's].",
)
@click.option(
    "--density",
    type=FiniteRange(0, 0.5, min_open=True),
    help="Draw a sparse mixture with this share of ones (words in documents, say): each "
    "feature's rate raised far above it in a few components, means from 1e-6 to 0.5; rows are "
    "drawn at a cost in proportion to their ones (not with --like).",
)
@overwrite_option()
def synth(
    n_samples: int,
    like: str | None,
    n_features: int | None,
    n_components: int | None,
    seed: int,
    out: str,
    chunk_rows: int | None,
    image_shape: tuple[int, ...] | None,
    density: float | None,
    overwrite: bool,
) -> None:
    """Draw rows from a known Bernoulli mixture and write them, chunk by chunk in parallel.

    The mixture is drawn from the seed (--d features, --k components), or is that of a fitted
    model (--like MODEL.zarr), to make data like the model's in any amount. The means and
    weights the rows were drawn from are stored with the data (true_means, true_weights) and
    the component of each row as its label.
    """
    if like is None and (n_features is None or n_components is None):
        missing = " and ".join(
            flag for flag, value in (("--d", n_features), ("--k", n_components)) if value is None
        )
        raise click.UsageError(
            f"{missing} {'is' if ' and ' not in missing else 'are'} needed, or --like MODEL to "
            "draw from a fitted model"
        )
    from bmm_dask.datasets import synth as synth_data

    written = synth_data(
        out,
        n_samples=n_samples,
        n_features=n_features,
        n_components=n_components,
        seed=seed,
        like=like,
        chunk_rows=chunk_rows,
        image_shape=image_shape,
        density=density,
        overwrite=overwrite,
    )
    say_done(f"wrote {written}")


@cli.command(context_settings=CONTEXT)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: str, as_json: bool) -> None:
    """Describe a dataset (samples, features, binarisation, chunks, bytes stored) or a model.

    PATH may also be a group of datasets (as `ingest mnist` writes): each is described; or the
    checkpoint of an unfinished fit, predictions, or the folder a selection of K wrote.
    """
    from bmm_dask.io import describe_path

    infos = describe_path(path)
    if as_json:
        click.echo(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
        return
    for i, entry in enumerate(infos):
        if i:
            click.echo("")
        if entry["kind"] == "checkpoint":
            lines = [
                f"{entry['path']}: checkpoint of an unfinished fit (finish it with bmm-dask fit ... --resume)",
                f"  start          {entry['start']}, {_checkpoint_progress(entry)}",
                "  settings       "
                + ", ".join(f"{k}={v}" for k, v in sorted((entry["settings"] or {}).items())),
                f"  data           {(entry['data'] or {}).get('path')}",
            ]
        elif entry["kind"] == "predictions":
            lines = [
                f"{entry['path']}: predictions"
                + (" with responsibilities" if entry["responsibilities"] else ""),
                f"  samples        {entry['n_samples']:,}"
                if entry["n_samples"] is not None
                else "  samples        ?",
                f"  components     {entry['n_components']}",
                f"  model          {entry['model']}",
                f"  data           {entry['data']}",
            ]
        elif entry["kind"] == "selection":
            lines = [
                f"{entry['path']}: selection of K, K = {entry['n_components']} chosen by "
                f"{entry['criterion']} (its model: {entry['path'].rstrip('/')}/model.zarr)",
                f"  rows           {entry['n_train']:,} training, {entry['n_heldout']:,} held out"
                if entry["n_train"] is not None and entry["n_heldout"] is not None
                else "  rows           ?",
                f"  {'K':>6} {'held-out':>10} {'BIC':>14} {'iterations':>10} {'passes':>6}",
                *(
                    f"  {row['n_components']:>6} {row['heldout_loglik']:>10.4f} "
                    f"{row['bic']:>14.1f} {row['n_iter']:>10} {row.get('n_passes', 0):>6}"
                    for row in entry["candidates"]
                ),
            ]
        else:
            lines = format_model(entry) if entry["kind"] == "model" else format_dataset(entry)
        click.echo("\n".join(lines))


def _checkpoint_progress(entry: dict) -> str:
    """Where a checkpoint's fit stands, in words: its iterations and passes done, the pass it
    is in, and the last objective."""
    done = []
    if entry["iterations"]:
        done.append(f"{entry['iterations']} iteration{'s' if entry['iterations'] != 1 else ''}")
    if entry.get("passes"):
        done.append(f"{entry['passes']} stepwise pass{'es' if entry['passes'] != 1 else ''}")
    words = "after " + " and ".join(done) if done else "at its beginning"
    if entry.get("in_pass"):
        words += f", in stepwise pass {entry['in_pass'][0]} after step {entry['in_pass'][1]}"
    if entry["objective"] is not None:
        words += f", objective {entry['objective']:.4f}"
    return words
