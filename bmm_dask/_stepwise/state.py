"""The running statistics of stepwise EM (:class:`StepwiseState`): their update by a
mini-batch's statistics, the parameters they give, the re-seeding of a starving component;
and the fixed-point sums that make a step's statistics the same bit for bit however its
chunks are grouped into tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bmm_dask._kernels import (
    mstep,
    split_components,
)
from bmm_dask._stepwise.batches import step_size

#: A component whose running weight falls below this share of an equal one (1 / K) is
#: starving, and re-seeded at once during stepwise passes: left alone it dies, and batch EM
#: re-seeds it only after the others have settled, on their way to a worse optimum. On the
#: measured sparse corpus and on MNIST a component re-seeded at this level lived (a split
#: starts with half of a large component's mass), and no live component came near it.
STARVING = 0.01


@dataclass
class StepwiseState:
    """Where a stepwise fit stands: the running statistics per row and the step count.

    ``resp_sum`` (K,) and ``resp_x`` (K, D) are ``s``; ``n_seen`` the rows of all mini-batches
    so far (the N the statistics are scaled back to when the data's size is not known, as in
    ``partial_fit``); ``step`` the steps taken.
    """

    resp_sum: NDArray[np.float64]
    resp_x: NDArray[np.float64]
    step: int = 0
    n_seen: int = 0

    @classmethod
    def start(cls, means: NDArray[np.float64], weights: NDArray[np.float64]) -> StepwiseState:
        """The statistics that the M-step turns back into ``means`` and ``weights`` (alpha 0)."""
        weights = np.asarray(weights, dtype=np.float64)
        return cls(weights.copy(), weights[:, None] * np.asarray(means, dtype=np.float64))

    def update(self, stats: dict[str, Any], kappa: float) -> float:
        """Blend a mini-batch's statistics into the running ones; return the step size used."""
        self.step += 1
        self.n_seen += int(stats["n_samples"])
        eta = step_size(self.step, kappa)
        m = stats["n_samples"]
        self.resp_sum = (1 - eta) * self.resp_sum + eta * (stats["resp_sum"] / m)
        self.resp_x = (1 - eta) * self.resp_x + eta * (stats["resp_x"] / m)
        return eta

    def reseed(self) -> int:
        """Re-seed the starving components, those whose running weight is below
        ``STARVING / K``, by splitting others (:func:`~bmm_dask._kernels.split_components`);
        return how many."""
        starving = np.flatnonzero(self.resp_sum < STARVING / len(self.resp_sum))
        if len(starving):
            split_components(self.resp_sum, self.resp_x, starving)
        return len(starving)

    def parameters(
        self, n_samples: int, alpha: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The M-step on the running statistics scaled back to ``n_samples`` rows."""
        means, weights = mstep(n_samples * self.resp_sum, n_samples * self.resp_x, n_samples, alpha)
        return means, weights / weights.sum()


#: A chunk's statistics are added in fixed point, as integers in units of 2**-FIXED_BITS:
#: integer sums are exact in any order, so the sum of a mini-batch is the same, bit for bit,
#: however its chunks are shared out among tasks (and so on any cluster). The rounding is at
#: most 2**-33 per value, far below float32's resolution of the responsibilities; a sum stays
#: below 2**63 up to 2**31 rows per mini-batch.
FIXED_BITS = 32


def to_fixed(stats: dict[str, Any]) -> dict[str, Any]:
    """A chunk's statistics in fixed point (see :data:`FIXED_BITS`)."""
    scale = 2.0**FIXED_BITS
    return {
        "resp_sum": np.rint(stats["resp_sum"] * scale).astype(np.int64),
        "resp_x": np.rint(stats["resp_x"] * scale).astype(np.int64),
        "loglik": round(float(stats["loglik"]) * scale),  # a Python int: never overflows
        "n_samples": stats["n_samples"],
    }


def from_fixed(stats: dict[str, Any]) -> dict[str, Any]:
    """Fixed-point statistics back in float64."""
    scale = 2.0**-FIXED_BITS
    return {
        "resp_sum": stats["resp_sum"] * scale,
        "resp_x": stats["resp_x"] * scale,
        "loglik": float(stats["loglik"] * scale),
        "n_samples": stats["n_samples"],
    }


def add_fixed(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of fixed-point statistics: exact, whatever their order."""
    keys = ("resp_sum", "resp_x", "loglik", "n_samples")
    return {key: sum(p[key] for p in parts) for key in keys}
