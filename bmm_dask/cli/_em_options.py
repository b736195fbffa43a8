"""The EM settings as command-line options, made from their one description in
:mod:`bmm_dask._settings` (the estimator's ranges and defaults come from there too)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from bmm_dask._settings import EM_SETTINGS, SETTINGS, Setting


class FiniteRange(click.FloatRange):
    """click's FloatRange, less NaN and the infinities, which it lets through (every
    comparison with NaN is false): ``--tol nan`` would stop nothing, ``--alpha inf`` would
    smooth every mean to a half."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class OrAuto(click.ParamType):
    """A value of ``inner``'s type, or the word "auto".

    Parameters
    ----------
    inner : click.ParamType
        The type of the values other than "auto".
    """

    def __init__(self, inner: click.ParamType) -> None:
        self.inner = inner
        self.name = f"{inner.name} or auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "auto":
            return value
        return self.inner.convert(value, param, ctx)


def click_type(setting: Setting) -> click.ParamType:
    """The option's type: the setting's choices or range.

    Parameters
    ----------
    setting : Setting

    Returns
    -------
    click.ParamType
    """
    if setting.choices:
        kind: click.ParamType = click.Choice(list(setting.choices))
    else:
        bounds = {
            "min": setting.low,
            "max": setting.high,
            "min_open": setting.low_open,
            "max_open": setting.high_open,
        }
        kind = click.IntRange(**bounds) if setting.kind is int else FiniteRange(**bounds)
    return OrAuto(kind) if "auto" in setting.also else kind


def setting_option(name: str, *, help: str | None = None) -> Callable[[Any], Any]:
    """The option of one EM setting.

    Parameters
    ----------
    name : str
        The setting (``max_iter`` gives ``--max-iter``).
    help : str, default=None
        The option's help where a command says it otherwise (``select``: per K); the
        setting's own help when None.

    Returns
    -------
    callable
        A click option decorator.
    """
    setting = SETTINGS[name]
    return click.option(
        setting.flag,
        name,
        default=setting.default,
        show_default=setting.default is not None,
        type=click_type(setting),
        metavar=setting.metavar,
        help=help or setting.help,
    )


def em_options(**helps: str) -> Callable[[Any], Any]:
    """Every EM setting's option, in the order of :data:`~bmm_dask._settings.EM_SETTINGS`.

    Parameters
    ----------
    **helps : str
        The help of a setting, by name, where the command says it otherwise.

    Returns
    -------
    callable
        A decorator that adds the options to a command.
    """
    unknown = set(helps) - set(SETTINGS)
    assert not unknown, unknown

    def add(command: Any) -> Any:
        for setting in reversed(EM_SETTINGS):
            command = setting_option(setting.name, help=helps.get(setting.name))(command)
        return command

    return add
