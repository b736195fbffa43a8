"""A fit whose model goes to a store: the rules for its output, checkpoints and resuming,
checked before any work starts, then the fit and the save.

The command line's ``fit`` is this, with a cluster around :meth:`FitJob.run`; a script that
fits from a dataset to a model store can use it the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from bmm_dask._events import CURRENT_OUTPUT
from bmm_dask.errors import SettingsError, setting
from bmm_dask.io import (
    CHECKPOINT_FILE,
    Dataset,
    check_not_input,
    check_output,
    output_lock,
)
from bmm_dask.io._output import exists, join, remove_output
from bmm_dask.model import BernoulliMixture

__all__ = ["FitJob"]


def check_resumable(out: str | os.PathLike[str]) -> None:
    """Refuse to resume when ``out`` holds no checkpoint of an unfinished fit, saying what it
    holds instead.

    Parameters
    ----------
    out : str or path-like
        Where the fit being resumed saved its checkpoints.

    Raises
    ------
    SettingsError
        ``out`` does not exist, holds a finished model, or holds no checkpoint.
    """
    if not exists(join(out, CHECKPOINT_FILE)):
        if not exists(out):
            what = "does not exist"
        elif exists(join(out, "zarr.json")) and exists(join(out, "means")):
            what = "holds a finished model"
        else:
            what = "holds no checkpoint"
        raise SettingsError(
            f"{out}: nothing to resume: it {what}; resuming continues a fit started with "
            f"checkpoints ({setting('--checkpoint-every N')}) into the same output"
        )


class FitJob:
    """Fit ``model`` to ``dataset`` and save it to ``out``, checkpointing on the way.

    Everything that can be checked before the fit is checked when the job is made, so that a
    mistake costs no cluster start: ``out`` is not an input; it is new, or ``overwrite`` is
    given, or (``resume``) it holds the checkpoint of a fit of the same settings and data; the
    settings suit the data.

    Parameters
    ----------
    model : BernoulliMixture
        The unfitted model, with its settings.
    dataset : Dataset
        The data, as :func:`bmm_dask.open_dataset` opens it.
    out : str or path-like
        The model store to write (a local folder).
    overwrite : bool, default=False
        Replace ``out`` if it holds a model or a checkpoint.
    checkpoint_every : int, default=0
        Save the state in ``out`` every this many iterations and after each start (0: never).
    resume : bool, default=False
        Continue from the checkpoint in ``out``; the model is the same as that of a fit never
        interrupted.
    inputs : sequence of paths, default=()
        Other files the job reads (a performance report's path is checked against them too).
    checkpoint : str or path-like, default=None
        Where the checkpoints go; None means ``out`` itself, which is then marked unfinished
        until the model replaces it. Elsewhere (a submitted job's ``OUT.checkpoint``), a model
        already in ``out`` stays until the new one replaces it, and the checkpoint is removed
        once the model is saved.
    owner : str, default=None
        Who writes ``out``: a submitted job's id, so that a later attempt of the same job takes
        over the lock that an attempt on a worker that died left behind.

    Raises
    ------
    OutputError
        If ``out`` is or holds an input, or exists (without ``overwrite``), or cannot be
        written.
    SettingsError
        If ``out`` holds the checkpoint of an unfinished fit and neither ``resume`` nor
        ``overwrite`` is given, if there is nothing to resume or the checkpoint is of other
        settings or data, or if the settings do not suit the data.
    ModelFileError
        If the checkpoint to resume from cannot be read.
    """

    def __init__(
        self,
        model: BernoulliMixture,
        dataset: Dataset,
        out: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        checkpoint_every: int = 0,
        resume: bool = False,
        inputs: Sequence[str | os.PathLike[str] | None] = (),
        checkpoint: str | os.PathLike[str] | None = None,
        owner: str | None = None,
    ) -> None:
        self.model, self.dataset, self.out = model, dataset, os.fspath(out)
        self.overwrite, self.checkpoint_every, self.resume = overwrite, checkpoint_every, resume
        self.checkpoint = self.out if checkpoint is None else os.fspath(checkpoint)
        self.owner = owner
        check_not_input(self.out, [dataset.path, *inputs])
        if self.checkpoint != self.out:
            check_not_input(self.checkpoint, [dataset.path, *inputs])
        if resume:
            check_resumable(self.checkpoint)
        else:
            if not overwrite and exists(join(self.checkpoint, CHECKPOINT_FILE)):
                raise SettingsError(
                    f"{self.checkpoint}: holds the checkpoint of an unfinished fit; resume it "
                    f"({setting('--resume')}), or start afresh ({setting('--overwrite')})"
                )
            check_output(self.out, overwrite=overwrite, urls=True)
            if self.checkpoint != self.out:
                check_output(self.checkpoint, overwrite=overwrite, urls=True)
        model._check_settings(dataset.n_features, dataset.n_samples, dataset.path)
        self.fingerprint = {"data": dataset.fingerprint()}
        #: Where a resumed fit continues: ``(start, iterations saved, last objective)``, the
        #: start counted from 1; None when not resuming.
        self.resume_point: tuple[int, int, float | None] | None = None
        #: When it resumes in stepwise passes: ``(pass, steps taken)``; else None.
        self.resume_step: tuple[int, int] | None = None
        if resume:  # at the door: the checkpoint must be of these settings and this data
            state = model._resume_state(
                self.checkpoint,
                model._settings(),
                self.fingerprint,
                dataset.n_features,
                dataset.n_samples,
            )
            last = state.history[-1]["objective"] if state.history else None
            self.resume_point = (state.run + 1, len(state.history), last)
            if state.means is None and state.stepwise is not None:  # in the stepwise passes
                self.resume_step = (state.stepwise["pass"], state.stepwise["step"])

    def run(
        self,
        *,
        callback: Callable[[dict[str, Any]], None] | None = None,
        persist: bool | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> float:
        """Fit and save the model, holding the output's lock throughout.

        Parameters
        ----------
        callback : callable, default=None
            Called with each event of the fit (a progress display; see
            :meth:`BernoulliMixture.fit`).
        persist : bool, default=None
            Hold the data in the cluster's memory, or read it from its store every iteration;
            None means held when it takes at most half the cluster's memory.
        attrs : dict, default=None
            Further attributes to record in the model (a submitted job's id).

        Returns
        -------
        float
            Seconds the fit took (saved in the model's attributes as ``fit_seconds``).

        Raises
        ------
        OutputError
            If another command holds the output's lock, or the model cannot be saved there.
        """
        checkpoints = bool(self.checkpoint_every) or self.resume
        with output_lock(self.out, owner=self.owner):
            if self.overwrite and not self.resume and self.checkpoint != self.out:
                # another fit's checkpoint: its first save would keep that fit's attributes
                remove_output(self.checkpoint)
            started = time.perf_counter()
            output = CURRENT_OUTPUT.set(str(self.out))
            try:
                self.model.fit(
                    self.dataset,
                    callback=callback,
                    checkpoint=self.checkpoint if checkpoints else None,
                    checkpoint_every=self.checkpoint_every,
                    resume=self.resume,
                    checkpoint_attrs=self.fingerprint,
                    persist=persist,
                )
            finally:
                CURRENT_OUTPUT.reset(output)
            seconds = time.perf_counter() - started
            # A checkpoint in out is this fit's own: the model replaces it.
            self.model.save(
                self.out,
                overwrite=self.overwrite or (checkpoints and self.checkpoint == self.out),
                attrs={**self.fingerprint, "fit_seconds": seconds, **(attrs or {})},
            )
            if self.checkpoint != self.out:
                remove_output(self.checkpoint)
        return seconds
