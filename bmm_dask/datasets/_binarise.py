"""How values become bits: a threshold, a draw per pixel (stochastic), or any count above zero."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from bmm_dask.datasets._random import block_rngs, rng_block_rows
from bmm_dask.errors import SettingsError


@dataclass(frozen=True)
class Binarization:
    """How values (grey levels 0..255, counts, 0/1) become bits.

    ``threshold``: a pixel is 1 when it is at least ``threshold`` (128 in the notebook).
    ``stochastic``: a pixel is 1 with probability pixel / 255, drawn from ``seed``; the draws are
    keyed by row, so the bits do not depend on the chunking.
    ``none``: the values are bits already (bool, or 0 and 1).
    ``nonzero``: a value is 1 when it is not 0: a word counted 3 times in a document is present.
    The default for counts (svmlight, Matrix Market, sparse ``.npz``, tables).

    Parameters
    ----------
    method : {"threshold", "stochastic", "none", "nonzero"}, default="threshold"
        How to binarise.
    threshold : float, default=128
        For ``threshold``: the lowest grey level that gives a 1, in (0, 255].
    seed : int, default=0
        For ``stochastic``: the seed of the draws, a non-negative integer.
    stream : int, default=0
        For ``stochastic``: which of the seed's streams of draws. Two data sets binarised with
        one seed share their draws row by row unless their streams differ: ``ingest mnist``
        gives the test images stream 1, so that they are not binarised with the draws of the
        training images of the same row numbers.

    Raises
    ------
    SettingsError
        If ``method`` is none of the above, or its setting is out of range.
    """

    method: Literal["threshold", "stochastic", "none", "nonzero"] = "threshold"
    threshold: float = 128
    seed: int = 0
    stream: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("threshold", "stochastic", "none", "nonzero"):
            raise SettingsError(
                "binarisation must be 'threshold', 'stochastic', 'none' or 'nonzero'; got "
                f"{self.method!r}"
            )
        if self.method == "threshold" and not (0 < self.threshold <= 255):
            raise SettingsError(f"threshold must be in (0, 255]; got {self.threshold}")
        if self.method == "stochastic" and not (isinstance(self.seed, int) and self.seed >= 0):
            raise SettingsError(f"seed must be a non-negative integer; got {self.seed!r}")

    def to_attrs(self) -> dict[str, Any]:
        """The settings as a dataset records them, in its ``binarization`` attribute.

        Returns
        -------
        dict
            ``method``, and ``threshold`` or ``seed`` where the method has one (and
            ``stream`` where it is not 0).
        """
        if self.method == "threshold":
            t = self.threshold
            return {"method": "threshold", "threshold": int(t) if float(t).is_integer() else t}
        if self.method == "stochastic":
            stream = {"stream": self.stream} if self.stream else {}
            return {"method": "stochastic", "seed": self.seed, **stream}
        return {"method": self.method}

    def apply(self, values: NDArray[Any], start: int) -> NDArray[np.bool_]:
        """Binarise rows ``start : start + len(values)`` of the data.

        Parameters
        ----------
        values : ndarray of shape (n_rows, n_features)
            Grey levels (0..255), counts for ``nonzero``, or bits for ``none``.
        start : int
            Index of the first row in the whole data, which keys the stochastic draws.

        Returns
        -------
        ndarray of shape (n_rows, n_features), dtype bool
            The bits.
        """
        if self.method != "stochastic":
            return self.is_one(values)
        n_rows, n_features = values.shape
        bits = np.empty(values.shape, dtype=bool)
        rows_a_block = rng_block_rows(n_features)
        key = (self.seed, 2, self.stream) if self.stream else (self.seed, 2)
        for rng, block_rows, rows in block_rngs(start, start + n_rows, rows_a_block, key):
            uniform = rng.random((rows_a_block, n_features), dtype=np.float32)[block_rows]
            np.less(uniform * np.float32(255), values[rows], out=bits[rows])
        return bits

    def is_one(self, values: NDArray[Any]) -> NDArray[np.bool_]:
        """Which values become 1, for the methods that look at a value alone (all but stochastic).

        Sparse rows are binarised through this, one stored value at a time: a value that is
        not stored is 0 and stays 0 under each of these methods.

        Parameters
        ----------
        values : ndarray
            Values of any shape.

        Returns
        -------
        ndarray of the same shape, dtype bool

        Raises
        ------
        ValueError
            For ``stochastic``, whose draws depend on where a value lies (use :meth:`apply`).

        >>> Binarization("nonzero").is_one(np.array([0, 1, 3])).tolist()
        [False, True, True]
        """
        if self.method == "none":
            return values.astype(bool, copy=False)
        if self.method == "threshold":
            return values >= self.threshold
        if self.method == "nonzero":
            return values != 0
        raise ValueError("stochastic binarisation draws by position: use apply")
