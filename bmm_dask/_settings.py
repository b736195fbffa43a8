"""The settings of EM, each defined once: its default, its range, and its help on the command
line. :class:`~bmm_dask.BernoulliMixture` takes its defaults and its parameter constraints
from here, ``fit``, ``select`` and ``submit`` their options, and
:func:`~bmm_dask.select_n_components` its defaults, so that none of them can drift apart.

Kept free of scikit-learn and click (each is built from these plain descriptions where it is
used), so that ``bmm-dask --help`` does not import either's heavy parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: How a start's means are chosen (see :func:`~bmm_dask._init.initialize`).
INITS: tuple[str, ...] = ("random", "random_from_data", "kmeans++")

#: Steps submitted before the oldest is collected (see :mod:`bmm_dask._stepwise`). Two hide
#: the round trip behind the next step's arithmetic at the cost of a staler E-step; the
#: comparison is benchmarks/bench_stepwise_scale.py's.
STEPS_IN_FLIGHT = 2


@dataclass(frozen=True)
class Setting:
    """One setting of EM.

    Parameters
    ----------
    name : str
        The estimator's parameter; the option is ``--`` and the name with dashes.
    default : object
        The default everywhere.
    kind : {int, float, str}
        The type of its values (besides those in ``also``).
    low, high : float, default=None
        The range of a number (None: no bound), ``low_open``/``high_open`` when the bound
        itself is left out.
    choices : tuple of str, default=()
        The values of a string.
    also : tuple, default=()
        Values taken besides those of ``kind``: None (not set) and "auto".
    help : str, default=""
        The option's help on the command line.
    metavar : str, default=None
        The option's value in the help (click's default for its type when None).
    """

    name: str
    default: Any
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    also: tuple[Any, ...] = ()
    help: str = ""
    metavar: str | None = None

    @property
    def flag(self) -> str:
        """The command-line option, ``--max-iter`` for ``max_iter``."""
        return "--" + self.name.replace("_", "-")


#: The EM settings that ``fit`` and ``select`` share with the estimator, in the order of the
#: help.
EM_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "max_iter",
        100,
        int,
        low=1,
        help="Batch EM iterations per start at most (stepwise passes are counted apart, "
        "by --passes).",
    ),
    Setting(
        "tol",
        1e-4,
        float,
        low=0,
        help="Stop when the objective (nats per row) changes by less than this.",
    ),
    Setting(
        "mean_tol",
        None,
        float,
        low=0,
        also=(None,),
        help="Also stop when the means move less than this (L2).",
    ),
    Setting("n_init", 1, int, low=1, help="Starts; the one of the best objective is kept."),
    Setting("init", "kmeans++", str, choices=INITS, help="How each start's means are chosen."),
    Setting(
        "alpha",
        0.1,
        float,
        low=0,
        help="Additive smoothing of the means (0: maximum likelihood).",
    ),
    Setting(
        "dtype", "float32", str, choices=("float32", "float64"), help="Arithmetic of the E-step."
    ),
    Setting(
        "algorithm",
        "auto",
        str,
        choices=("auto", "batch", "stepwise"),
        help="auto: batch iterations, and stepwise passes after the third where batch EM is "
        "far from converged and a pass costs at most 3 iterations, then batch iterations to "
        "--tol; batch: every row each iteration; stepwise: the parameters move after each "
        "mini-batch, for --passes passes.",
    ),
    Setting(
        "passes",
        10,
        int,
        low=1,
        help="Stepwise passes over the data at most (auto takes at most 3).",
    ),
    Setting(
        "batch_size",
        "auto",
        int,
        low=1,
        also=("auto",),
        metavar="ROWS",
        help="Rows per mini-batch of stepwise EM; auto: enough to keep every worker thread "
        "busy for about 60 ms a step, at most a 30th of the rows, at least 256.",
    ),
    Setting(
        "step_exponent",
        0.55,
        float,
        low=0.5,
        high=1,
        low_open=True,
        help="kappa of the step sizes (t + 2)^-kappa of stepwise EM.",
    ),
    Setting(
        "steps_in_flight",
        STEPS_IN_FLIGHT,
        int,
        low=1,
        metavar="S",
        help="Stepwise steps submitted before the oldest one's statistics are in: each "
        "mini-batch is computed with the parameters from S steps before (1: stepwise EM as "
        "published).",
    ),
)

#: Each setting by name.
SETTINGS: dict[str, Setting] = {setting.name: setting for setting in EM_SETTINGS}

#: The default of each setting by name.
DEFAULTS: dict[str, Any] = {setting.name: setting.default for setting in EM_SETTINGS}


def sklearn_constraints(setting: Setting) -> list[Any]:
    """The setting's range as scikit-learn's ``_parameter_constraints`` says it.

    Parameters
    ----------
    setting : Setting

    Returns
    -------
    list
        The constraints of the setting, for ``_validate_params``.
    """
    from numbers import Integral, Real

    from sklearn.utils._param_validation import Interval, StrOptions

    constraints: list[Any] = []
    if setting.choices:
        constraints.append(StrOptions(set(setting.choices)))
    else:
        closed = {
            (False, False): "both",
            (True, False): "right",
            (False, True): "left",
            (True, True): "neither",
        }[(setting.low_open, setting.high_open or setting.high is None)]
        number = Integral if setting.kind is int else Real
        constraints.append(Interval(number, setting.low, setting.high, closed=closed))
    if "auto" in setting.also:
        constraints.append(StrOptions({"auto"}))
    if None in setting.also:
        constraints.append(None)
    return constraints
