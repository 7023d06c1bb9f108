"""Decoding of the GGUF types pyllm reads but does not run, bit for bit against llama.cpp's
`gguf` package (fixtures made by tools/make_dequant_fixtures.py)."""
import os

import numpy as np
import pytest

from pyllm.quant import BY_ID, TYPES, dequantize, quantize

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


@pytest.mark.parametrize("name", list(TYPES))
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
