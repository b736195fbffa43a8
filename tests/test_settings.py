"""Each EM setting is defined once: the estimator, select_n_components and the options of
fit, select and submit take the same default and the same range."""

from __future__ import annotations

import inspect

import click
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from bmm_dask import BernoulliMixture, select_n_components
from bmm_dask._settings import DEFAULTS, EM_SETTINGS, Setting
from bmm_dask.cli import cli


def _commands() -> dict[str, click.Command]:
    submit = cli.commands["submit"]
    assert isinstance(submit, click.Group)
    return {
        "fit": cli.commands["fit"],
        "select": cli.commands["select"],
        "submit fit": submit.commands["fit"],
        "submit select": submit.commands["select"],
    }


def _option(command: click.Command, name: str) -> click.Parameter:
    return next(p for p in command.params if p.name == name)


@pytest.mark.parametrize("setting", EM_SETTINGS, ids=lambda s: s.name)
def test_one_default_everywhere(setting: Setting) -> None:
    default = DEFAULTS[setting.name]
    assert BernoulliMixture().get_params()[setting.name] == default
    assert inspect.signature(select_n_components).parameters[setting.name].default == default
    for command in _commands().values():
        assert _option(command, setting.name).default == default, command.name


def _outside(setting: Setting) -> list[object]:
    """Values out of the setting's range (or not of its kind)."""
    if setting.choices:
        return ["nonsense"]
    values: list[object] = [float("nan"), float("inf")] if setting.kind is float else [1.5]
    if setting.low is not None:
        values.append(setting.low if setting.low_open else setting.low - 1)
    if setting.high is not None:
        values.append(setting.high if setting.high_open else setting.high + 0.5)
    return values


def _inside(setting: Setting) -> list[object]:
    if setting.choices:
        return list(setting.choices)
    values = [v for v in (setting.low, setting.high) if v is not None]
    values = [v for v in values if not (v == setting.low and setting.low_open)]
    return [setting.kind(v) for v in values] + [v for v in setting.also if v is not None]


@pytest.mark.parametrize("setting", EM_SETTINGS, ids=lambda s: s.name)
def test_one_range_everywhere(setting: Setting) -> None:
    # the command line and the estimator refuse and take the same values
    options = [_option(command, setting.name) for command in _commands().values()]
    for value in _outside(setting):
        with pytest.raises(InvalidParameterError):
            BernoulliMixture(**{setting.name: value})._validate_params()
        for option in options:
            with pytest.raises(click.BadParameter):
                option.type.convert(str(value), option, None)
    for value in _inside(setting):
        BernoulliMixture(**{setting.name: value})._validate_params()
        for option in options:
            assert option.type.convert(str(value), option, None) == value
