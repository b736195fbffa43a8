"""Bit packing: the layout every store uses (NumPy's big-endian packbits) and its inverse."""

from __future__ import annotations

import numpy as np
import pytest

from bmm_dask.kernels import n_packed_bytes, pack_bits, unpack_bits


@pytest.mark.parametrize("n_features", [1, 7, 8, 9, 784, 1001])
def test_unpack_inverts_pack(n_features: int) -> None:
    rng = np.random.default_rng(n_features)
    X = rng.random((13, n_features)) < 0.3
    packed = pack_bits(X)
    assert packed.shape == (13, n_packed_bytes(n_features))
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_bits(packed, n_features), X.astype(np.uint8))
    assert unpack_bits(packed, n_features, np.float32).dtype == np.float32


def test_first_feature_is_the_highest_bit() -> None:
    X = np.zeros((1, 10), dtype=bool)
    X[0, 0] = X[0, 9] = True
    assert pack_bits(X).tolist() == [[0b10000000, 0b01000000]]
