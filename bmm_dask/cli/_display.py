"""What the commands print: log lines, one progress bar, metrics and ``info`` as text."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from bmm_dask._progress import FitBar
from bmm_dask.memory import format_bytes

logger = logging.getLogger("bmm_dask")


def configure_logging(verbose: int, quiet: int) -> None:
    """Send the package's log messages to stderr, one line each, at the level ``-v``/``-q`` set.

    Parameters
    ----------
    verbose : int
        Times ``-v`` was given: each lowers the level by one step from INFO.
    quiet : int
        Times ``-q`` was given: each raises it by one step.
    """
    level = logging.INFO - 10 * verbose + 10 * quiet
    handler = ClearingHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(max(logging.DEBUG, min(level, logging.CRITICAL)))
    logger.propagate = False


def say_done(line: str) -> None:
    """Say on stdout what the command wrote, unless ``-q`` asked for warnings and errors only.

    Parameters
    ----------
    line : str
        The line ("wrote OUT: ...").
    """
    from bmm_dask.cli._signals import output_saved

    output_saved()  # said only once it is: a signal now would misreport it
    if logger.isEnabledFor(logging.INFO):
        click.echo(line)


class ClearingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines written above the progress bar, which tqdm then draws again."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write a record, through tqdm when a bar may be on the terminal.

        Parameters
        ----------
        record : logging.LogRecord
            The record to write.
        """
        if not self.stream.isatty() or "tqdm" not in sys.modules:
            super().emit(record)
            return
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


class ProgressBar:
    """The one progress bar of the commands: tqdm's, on stderr when it is a terminal and
    messages are on; silent elsewhere (a log file, a pipe, ``-q``).

    Fed by :meth:`rows` (ingest: rows just written, rows in all) or by :meth:`iteration` (a
    fit's events: a new start begins a new bar).

    Parameters
    ----------
    label : str
        The bar's description.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.fit: FitBar | None = None
        self.bar: Any = None
        self.enabled = sys.stderr.isatty() and logger.isEnabledFor(logging.INFO)

    def _new(self, total: int | None, unit: str, desc: str) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(
            total=total, unit=unit, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True
        )

    def rows(self, done: int, total: int) -> None:
        """Add ``done`` rows of ``total``.

        Parameters
        ----------
        done : int
            Rows just finished.
        total : int
            Rows in all; a new total begins a new bar.
        """
        if not self.enabled:
            return
        if self.bar is None or self.bar.total != total:
            self._new(total, " rows", self.label)
            self.bar.unit_scale = True
        self.bar.update(done)

    def iteration(self, event: dict[str, Any]) -> None:
        """Show a fit's progress: a bar per start, moved by its iterations and passes.

        Parameters
        ----------
        event : dict
            An event of the fit (:mod:`bmm_dask._events`), as its ``callback`` gets it.
        """
        if not self.enabled:
            return
        if self.fit is None:
            self.fit = FitBar(self._fit_bar)
        self.fit(event)

    def _fit_bar(self, total: int, unit: str, suffix: str) -> Any:
        self._new(total, unit, self.label + suffix)
        return self.bar

    def close(self) -> None:
        """Close the bar, if one is shown, and wipe it from the terminal."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def progress_bar(label: str) -> Iterator[ProgressBar]:
    """A :class:`ProgressBar`, closed (and wiped from the terminal) on the way out.

    Parameters
    ----------
    label : str
        The bar's description.

    Yields
    ------
    ProgressBar
    """
    bar = ProgressBar(label)
    try:
        yield bar
    finally:
        bar.close()


def print_metrics(metrics: dict[str, Any]) -> None:
    """Print a model's metrics on a dataset: log-likelihood, and with labels a confusion matrix.

    Parameters
    ----------
    metrics : dict
        As :func:`bmm_dask.evaluation.evaluate` returns them.
    """
    click.echo(
        f"{metrics['data']}: {metrics['n_samples']:,} samples, log-likelihood "
        f"{metrics['log_likelihood_per_sample']:.3f} nats per sample ({metrics['bits_per_dim']:.4f} bits per feature)"
    )
    if "accuracy" not in metrics:
        return
    from bmm_dask.report import MATCHING_NAMES

    matching = MATCHING_NAMES.get(metrics["matching"], metrics["matching"])
    click.echo(
        f"accuracy {metrics['accuracy']:.4f} ({matching}), "
        f"NMI {metrics['nmi']:.4f}, ARI {metrics['ari']:.4f}"
    )
    classes = metrics["classes"]
    width = max(6, *(len(str(c)) + 1 for c in classes), len(str(max(metrics["cluster_sizes"]))) + 1)
    click.echo("confusion matrix: one row per component (-> its label), one column per true label")
    click.echo(" " * 12 + "".join(f"{c!s:>{width}}" for c in classes))
    for k, row in enumerate(metrics["confusion_matrix"]):
        label = metrics["mapping"][k]
        name = f"#{k}" + (f" -> {label}" if label is not None else "")
        click.echo(f"{name:<12}" + "".join(f"{v:>{width}}" for v in row))


def format_dataset(info: dict[str, Any]) -> list[str]:
    """The lines ``bmm-dask info`` prints for a dataset.

    Parameters
    ----------
    info : dict
        As :func:`bmm_dask.io.describe_dataset` returns it.

    Returns
    -------
    list of str
    """
    b = info["binarization"]
    how = {
        "threshold": f"threshold {b.get('threshold')}",
        "stochastic": f"stochastic, seed {b.get('seed')}"
        + (f", stream {b['stream']}" if b.get("stream") else ""),
        "none": "none (binary at the source)",
        "nonzero": "nonzero (a count above 0 is 1)",
    }.get(b.get("method"), str(b))
    shape = info["image_shape"]
    n = info["n_samples"]
    named = info.get("named_features") or 0
    first = info.get("first_feature_names") or []
    shown = ", ".join(first) + (", ..." if named > len(first) else "")
    lines = [
        f"{info['path']}: dataset",
        f"  samples        {n:,}",
        f"  features       {info['n_features']:,}"
        + (f" (images {' x '.join(map(str, shape))})" if shape else "")
        + (f", named ({shown})" if named else ""),
        f"  binarisation   {how}",
        *(
            [f"  density        {info['density']:.4g} ({info['n_ones']:,} ones)"]
            if info.get("density") is not None
            else []
        ),
        f"  labels         {'yes' if info['labels'] else 'no'}",
        f"  chunks         {info['n_chunks']} of up to {info['chunk_rows']:,} rows",
        f"  stored         {format_bytes(info['bytes_stored'])} ({info['bytes_stored'] / n:.1f} bytes per sample)",
        f"  ratio          {info['bytes_unpacked'] / info['bytes_stored']:.1f}x smaller than a byte per "
        f"feature, {info['bytes_packed'] / info['bytes_stored']:.1f}x smaller than packed bits",
    ]
    source = info.get("source") or {}
    for role, entry in source.items():
        if isinstance(entry, dict) and "file" in entry:
            lines.append(
                f"  source         {role}: {entry['file']}"
                + (f":{entry['dataset']}" if entry.get("dataset") else "")
                + f" (md5 {entry['md5']} of the {entry['md5_of']})"
            )
        else:
            lines.append(f"  source         {role}: {entry}")
    return lines


def format_model(info: dict[str, Any]) -> list[str]:
    """The lines ``bmm-dask info`` prints for a model.

    Parameters
    ----------
    info : dict
        As :func:`bmm_dask.io.describe_model` returns it.

    Returns
    -------
    list of str
    """
    data = info.get("data") or {}
    settings = info.get("settings") or {}
    weights = info["weights"]
    shown = ", ".join(f"{w:.3f}" for w in weights[:12]) + (", ..." if len(weights) > 12 else "")
    n_passes = info.get("n_passes") or 0
    passes = f"{n_passes} stepwise pass{'es' if n_passes > 1 else ''}"
    if not n_passes:
        done = f"{info.get('n_iter')} ({'converged' if info.get('converged') else 'not converged'})"
    elif not info.get("n_iter"):  # stepwise EM alone: it runs its passes, with no test to stop
        done = f"{passes} (stepwise EM runs its passes; no convergence test)"
    else:
        converged = "converged" if info.get("converged") else "not converged"
        done = f"{info.get('n_iter')} and {passes} ({converged})"
    names = info.get("first_feature_names")
    named = ""
    if names:  # a few, to say what the features are; the rest would flood the terminal
        more = ", ..." if len(names) < info["n_features"] else ""
        cut = [name if len(name) <= 30 else name[:29] + "\u2026" for name in names]
        named = f" (named: {', '.join(cut)}{more})"
    return [
        f"{info['path']}: model",
        f"  components     {info['n_components']}",
        f"  features       {info['n_features']:,}{named}",
        f"  weights        {shown}",
        f"  iterations     {done}",
        f"  objective      {info.get('lower_bound', float('nan')):.4f} nats per sample",
        "  settings       " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())),
        f"  fitted on      {data.get('path', '?')} ({data.get('n_samples', '?'):,} samples, binarisation "
        f"{data.get('binarization')})"
        if data
        else "  fitted on      (not recorded)",
        f"  fit time       {info.get('fit_seconds', float('nan')):.1f} s",
        f"  written        {info.get('created')} by bmm_dask {info.get('bmm_dask_version')}",
    ]
