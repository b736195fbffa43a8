"""Pure NumPy work on one block of rows: bit packing and unpacking (the EM kernels build on these)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["n_packed_bytes", "pack_bits", "unpack_bits"]


def n_packed_bytes(n_features: int) -> int:
    """Bytes a row takes when ``n_features`` bits are packed 8 to a byte.

    >>> n_packed_bytes(784), n_packed_bytes(9)
    (98, 2)
    """
    return (n_features + 7) // 8


def pack_bits(bits: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """Pack 0/1 rows 8 to a byte, first feature in the highest bit (NumPy's big-endian order).

    Parameters
    ----------
    bits : array of shape (n_samples, n_features), bool or 0/1 integers

    Returns
    -------
    packed : uint8 array of shape (n_samples, ceil(n_features / 8))
        The last byte of a row is padded with zero bits.
    """
    return np.packbits(bits, axis=1)


def unpack_bits(
    packed: NDArray[np.uint8], n_features: int, dtype: np.typing.DTypeLike = np.uint8
) -> NDArray[np.generic]:
    """Unpack rows packed by :func:`pack_bits`.

    Parameters
    ----------
    packed : uint8 array of shape (n_samples, ceil(n_features / 8))
    n_features : int
        Bits to keep from each row; the padding bits of the last byte are dropped.
    dtype : dtype, default uint8
        Type of the result; its values are 0 and 1.

    Returns
    -------
    X : array of shape (n_samples, n_features)

    >>> unpack_bits(np.array([[0b10100000]], dtype=np.uint8), 3).tolist()
    [[1, 0, 1]]
    """
    X = np.unpackbits(packed, axis=1, count=n_features)
    if X.dtype != np.dtype(dtype):
        X = X.astype(dtype)
    return X
