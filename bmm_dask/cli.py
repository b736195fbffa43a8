"""The ``bmm-dask`` command: parse the command line, call the library, print; the only place that exits."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from bmm_dask import __version__
from bmm_dask.errors import BmmDaskError

logger = logging.getLogger("bmm_dask")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _configure_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(max(logging.DEBUG, min(level, logging.CRITICAL)))
    logger.propagate = False


class _Progress:
    """A progress bar on a terminal (stderr), fed (rows done, rows in all); silent elsewhere."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.total = 0
        self.enabled = sys.stderr.isatty() and logger.isEnabledFor(logging.INFO)

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or total != self.total:
            self.close()
            self.total = total
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@contextmanager
def _progress(label: str) -> Iterator[_Progress]:
    progress = _Progress(label)
    try:
        yield progress
    finally:
        progress.close()


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="bmm-dask")
@click.option("-v", "--verbose", count=True, help="More messages (-vv for debugging).")
@click.option("-q", "--quiet", count=True, help="Fewer messages (warnings and errors only).")
def cli(verbose: int, quiet: int) -> None:
    """Fit Bernoulli mixture models by EM on binary data in Zarr, with Dask.

    Start with `bmm-dask ingest mnist --out mnist.zarr`, then `bmm-dask info mnist.zarr`.
    """
    _configure_logging(verbose, quiet)


# --------------------------------------------------------------------------- data


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


@cli.command(context_settings=CONTEXT)
@click.argument("source")
@click.option("--out", "-o", required=True, type=click.Path(), help="Dataset to write (DATA.zarr).")
@click.option(
    "--labels", type=click.Path(), help="IDX or .npy file of integer labels, one a sample."
)
@click.option("--threshold", type=float, help="A value at least this is 1 [default: 128].")
@click.option(
    "--binarize",
    type=click.Choice(["threshold", "stochastic", "none"]),
    help="threshold (default), stochastic (value/255 is the chance of a 1), or none (0/1 data).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), help="Seed for --binarize stochastic [default: 0]."
)
@click.option(
    "--chunk-rows", type=click.IntRange(min=1), help="Rows a chunk [default: about 1 MiB packed]."
)
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
def ingest(
    source: str,
    out: str,
    labels: str | None,
    threshold: float | None,
    binarize: str | None,
    seed: int | None,
    chunk_rows: int | None,
    overwrite: bool,
) -> None:
    """Binarise images and write them to Zarr, packed 8 pixels a byte.

    SOURCE is an IDX file (raw or .gz), a .npy array (N x H x W or N x D), or `mnist`: the
    fetched MNIST files when the cache holds them, else the copy inside the package; it
    writes OUT/train and OUT/test.
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
    with _progress("ingest") as progress:
        if source == "mnist":
            if labels is not None:
                raise click.UsageError("--labels does not go with mnist: it has its own")
            written = ingest_mnist(
                out,
                binarization=binarization,
                chunk_rows=chunk_rows,
                overwrite=overwrite,
                progress=progress,
            )
        else:
            written = ingest_file(
                source,
                out,
                labels=labels,
                binarization=binarization,
                chunk_rows=chunk_rows,
                overwrite=overwrite,
                progress=progress,
            )
    click.echo(f"wrote {written}")


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
@click.option("--n", "n_samples", required=True, type=int, help="Rows to draw.")
@click.option("--d", "n_features", required=True, type=int, help="Bits a row.")
@click.option("--k", "n_components", required=True, type=int, help="Components of the mixture.")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the mixture and the rows."
)
@click.option("--out", "-o", required=True, type=click.Path(), help="Dataset to write (DATA.zarr).")
@click.option(
    "--chunk-rows", type=click.IntRange(min=1), help="Rows a chunk [default: about 1 MiB packed]."
)
@click.option(
    "--image-shape", callback=_parse_shape, help="Shape of a row as an image, e.g. 28x28."
)
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
def synth(
    n_samples: int,
    n_features: int,
    n_components: int,
    seed: int,
    out: str,
    chunk_rows: int | None,
    image_shape: tuple[int, ...] | None,
    overwrite: bool,
) -> None:
    """Draw rows from a known Bernoulli mixture and write them, chunk by chunk in parallel.

    The true means and weights are stored with the data (true_means, true_weights) and the
    component of each row as its label.
    """
    from bmm_dask.datasets import synth as synth_data

    written = synth_data(
        out,
        n_samples=n_samples,
        n_features=n_features,
        n_components=n_components,
        seed=seed,
        chunk_rows=chunk_rows,
        image_shape=image_shape,
        overwrite=overwrite,
    )
    click.echo(f"wrote {written}")


# --------------------------------------------------------------------------- info


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _format_dataset(info: dict[str, Any]) -> list[str]:
    b = info["binarization"]
    how = {
        "threshold": f"threshold {b.get('threshold')}",
        "stochastic": f"stochastic, seed {b.get('seed')}",
        "none": "none (binary at the source)",
    }.get(b.get("method"), str(b))
    shape = info["image_shape"]
    n = info["n_samples"]
    lines = [
        f"{info['path']}: dataset",
        f"  samples        {n:,}",
        f"  features       {info['n_features']:,}"
        + (f" (images {' x '.join(map(str, shape))})" if shape else ""),
        f"  binarization   {how}",
        f"  labels         {'yes' if info['labels'] else 'no'}",
        f"  chunks         {info['n_chunks']} of up to {info['chunk_rows']:,} rows",
        f"  stored         {_size(info['bytes_stored'])} ({info['bytes_stored'] / n:.1f} bytes a sample)",
        f"  ratio          {info['bytes_unpacked'] / info['bytes_stored']:.1f}x smaller than a byte a "
        f"feature, {info['bytes_packed'] / info['bytes_stored']:.1f}x smaller than packed bits",
    ]
    source = info.get("source") or {}
    for role, entry in source.items():
        if isinstance(entry, dict) and "file" in entry:
            lines.append(
                f"  source         {role}: {entry['file']} (md5 {entry['md5']} of the {entry['md5_of']})"
            )
        else:
            lines.append(f"  source         {role}: {entry}")
    return lines


@cli.command(context_settings=CONTEXT)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: str, as_json: bool) -> None:
    """Describe a dataset: samples, features, binarisation, chunks, bytes stored.

    PATH may also be a group of datasets (as `ingest mnist` writes): each is described.
    """
    from bmm_dask.store import describe_path

    infos = describe_path(path)
    if as_json:
        click.echo(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
        return
    for i, entry in enumerate(infos):
        if i:
            click.echo("")
        click.echo("\n".join(_format_dataset(entry)))


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a user's mistake, with one line)."""
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        return _main(argv)
    finally:  # leave logging as it was, for callers that run several commands in one process
        logger.handlers[:], logger.level, logger.propagate = saved


def _main(argv: Sequence[str] | None) -> int:
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="bmm-dask",
            standalone_mode=False,
        )
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "bmm-dask"
        click.echo(f"{command}: error: {err.format_message()} (see '{command} --help')", err=True)
        return 2
    except click.ClickException as err:
        click.echo(f"bmm-dask: error: {err.format_message()}", err=True)
        return err.exit_code
    except BmmDaskError as err:
        click.echo(f"bmm-dask: error: {err}", err=True)
        return 2
    except (KeyboardInterrupt, click.Abort):
        click.echo("bmm-dask: interrupted; outputs already saved are intact", err=True)
        return 130
    except OSError as err:
        click.echo(f"bmm-dask: error: {err}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
