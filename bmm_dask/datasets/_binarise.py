"""How grey levels become bits: a threshold, or a draw per pixel (stochastic binarisation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from bmm_dask.datasets._random import block_rngs, rng_block_rows
from bmm_dask.errors import SettingsError


@dataclass(frozen=True)
class Binarization:
    """How grey levels (0..255) become bits.

    ``threshold``: a pixel is 1 when it is at least ``threshold`` (128 in the notebook).
    ``stochastic``: a pixel is 1 with probability pixel / 255, drawn from ``seed``; the draws are
    keyed by row, so the bits do not depend on the chunking.
    ``none``: the values are bits already (bool, or 0 and 1).
    """

    method: Literal["threshold", "stochastic", "none"] = "threshold"
    threshold: float = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("threshold", "stochastic", "none"):
            raise SettingsError(
                f"binarisation must be 'threshold', 'stochastic' or 'none'; got {self.method!r}"
            )
        if self.method == "threshold" and not (0 < self.threshold <= 255):
            raise SettingsError(f"threshold must be in (0, 255]; got {self.threshold}")
        if self.method == "stochastic" and not (isinstance(self.seed, int) and self.seed >= 0):
            raise SettingsError(f"seed must be a non-negative integer; got {self.seed!r}")

    def to_attrs(self) -> dict[str, Any]:
        if self.method == "threshold":
            t = self.threshold
            return {"method": "threshold", "threshold": int(t) if float(t).is_integer() else t}
        if self.method == "stochastic":
            return {"method": "stochastic", "seed": self.seed}
        return {"method": "none"}

    def apply(self, values: NDArray[Any], start: int) -> NDArray[np.bool_]:
        """Bits of rows ``start : start + len(values)`` of shape (rows, n_features)."""
        if self.method == "none":
            return values.astype(bool, copy=False)
        if self.method == "threshold":
            return values >= self.threshold
        n_rows, n_features = values.shape
        bits = np.empty(values.shape, dtype=bool)
        rows_a_block = rng_block_rows(n_features)
        for rng, block_rows, rows in block_rngs(
            start, start + n_rows, rows_a_block, (self.seed, 2)
        ):
            uniform = rng.random((rows_a_block, n_features), dtype=np.float32)[block_rows]
            np.less(uniform * np.float32(255), values[rows], out=bits[rows])
        return bits
