"""The ``bmm-dask`` command: parse the command line, call the library, print; the only place
that exits.

=================  ===========================================================
module             what it holds
=================  ===========================================================
``_group``         the group, ``main``: errors to exit status and one line
``data``           ``fetch``, ``ingest``, ``synth``, ``info``
``fit``            ``fit``, and ``demo`` (the whole MNIST job)
``select``         ``select``: several K in shared passes, one chosen
``jobs``           ``submit fit|select``, ``jobs``, ``status``, ``logs``, ``wait``, ``cancel``
``evaluate``       ``predict``, ``evaluate``, ``report``
``_options``       where the work runs: cluster options and the client
``_display``       log lines, the progress bar, text of metrics and ``info``
``_signals``       Ctrl-C and SIGTERM
=================  ===========================================================

Heavy libraries (dask, distributed, zarr, scikit-learn) are imported inside the commands, so
that ``--help``, ``--version`` and a mistake on the command line answer at once.
"""

from __future__ import annotations

from bmm_dask.cli import (  # noqa: F401  (they add their commands to cli)
    data,
    evaluate,
    fit,
    jobs,
    select,
)
from bmm_dask.cli._group import cli, main

__all__ = ["cli", "main"]
