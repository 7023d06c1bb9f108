"""Decoding of the GGUF types pyllm reads, in numpy and (for the K-quants it runs) in every C kernel
family, bit for bit against llama.cpp's `gguf` package (fixtures made by
tools/make_dequant_fixtures.py)."""
import os

import numpy as np
import pytest

from pyllm import _native
from pyllm.quant import BY_ID, QK, TYPES, dequantize, quantize

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "gguf_decode_fixtures.npz")
IDS = {"BF16": 30, "Q5_0": 6, "Q5_1": 7, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}


@pytest.fixture(scope="module")
def fixtures():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", list(IDS))
def test_matches_reference_bit_for_bit(fixtures, name):
    raw, want = fixtures[f"{name}_raw"], fixtures[f"{name}_values"]
    got = dequantize(raw.tobytes(), BY_ID[IDS[name]].name, want.shape)
    assert got.dtype == np.float32 and got.shape == want.shape and want.shape[0] == 3
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("kernels", _native.available_kernels())
@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K"])
def test_c_core_decodes_k_quants_bit_for_bit(fixtures, kernels, name):
    """The C core's rows (token embeddings) equal the gguf package's values exactly."""
    raw, want = fixtures[f"{name}_raw"], fixtures[f"{name}_values"]
    rows = raw.reshape(want.shape[0], -1)
    for r in range(want.shape[0]):
        got = _native.dequantize_row(rows[r], IDS[name], want.shape[1], kernels)
        assert np.array_equal(got.view(np.uint32), want[r].view(np.uint32))


@pytest.mark.parametrize("name", [n for n, t in TYPES.items() if t.block <= QK])
def test_runnable_types_decode_as_the_engine_does(name):
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    raw = quantize(x, name)
    tid = TYPES[name].ggml_id
    assert BY_ID[tid].name == name and BY_ID[tid].decodable
    np.testing.assert_array_equal(dequantize(raw.tobytes(), BY_ID[tid].name, (5, 64)), dequantize(raw, name, (5, 64)))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="do not hold a Q6_K tensor"):
        dequantize(b"\0" * 209, BY_ID[14].name, (1, 256))
    with pytest.raises(ValueError, match="do not hold a Q5_0 tensor"):
        dequantize(b"\0" * 22, BY_ID[6].name, (1, 16))
    with pytest.raises(ValueError, match="Q2_K cannot be decoded"):
        dequantize(b"\0" * 84, BY_ID[10].name, (1, 256))
