"""pyllm's numpy quantizers against llama.cpp's reference quantizers (quantize_row_<type>_ref, what
llama-quantize runs without an importance matrix): the same bytes, compared through the SHA-256
digests tools/make_quant_reference.py recorded from llama.cpp's libggml-base for the same tensors."""
import hashlib
import os

import numpy as np
import pytest

from pyllm.quant import ALL_TYPES, ENCODABLE, dequantize, quantize

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "quant_reference.npz")
ENCODED = [t for t in ENCODABLE if t not in ("f32", "f16")]


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


REF = reference()
CASES = sorted(k[len("input_"):] for k in REF if k.startswith("input_"))


def test_the_reference_covers_every_encoded_type():
    recorded = {k.rsplit("_", 2)[-2] + "_" + k.rsplit("_", 1)[-1] for k in REF if k.startswith("sha256_")}
    assert recorded == set(ENCODED)


@pytest.mark.parametrize("type_name", ENCODED)
@pytest.mark.parametrize("case", CASES)
def test_bytes_equal_llama_cpp_reference_quantizer(case, type_name):
    x = REF[f"input_{case}"]
    digest = hashlib.sha256(quantize(x, type_name).tobytes()).hexdigest()
    assert digest == str(REF[f"sha256_{case}_{type_name}"]), f"{type_name} of {case} differs from llama.cpp's bytes"


@pytest.mark.parametrize("type_name", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"])
@pytest.mark.parametrize("case", CASES)
def test_roundtrip_within_one_step(case, type_name):
    """Every decoded value of a 32-value block lies within one step (its scale d) of the input, plus
    the f16 rounding of an offset m and f16's absolute resolution (2^-24, times at most 32 levels)."""
    x = REF[f"input_{case}"]
    raw = quantize(x, type_name)
    back = dequantize(raw, type_name, x.shape)
    blocks = raw.reshape(-1, ALL_TYPES[type_name].block_bytes)
    d = np.abs(blocks[:, 0:2].copy().view(np.float16).astype(np.float32))
    m = np.abs(blocks[:, 2:4].copy().view(np.float16).astype(np.float32)) if type_name in ("q4_1", "q5_1") else 0 * d
    err = np.abs(back - x).reshape(-1, 32)
    assert (err <= 1.001 * d + m / 1024 + 32 * 2.0**-24).all()


def test_finer_types_are_closer():
    x = REF["input_heavy_tails"]
    rms = {t: float(np.sqrt(np.mean((dequantize(quantize(x, t), t, x.shape) - x) ** 2))) for t in ENCODED}
    assert rms["q6_k"] < rms["q5_k"] < rms["q4_k"]
    assert rms["q5_0"] < rms["q4_0"] and rms["q5_1"] < rms["q4_1"]
    assert rms["q8_0"] < rms["q6_k"]


@pytest.mark.parametrize("type_name", ["q4_k", "q5_k", "q6_k"])
def test_k_types_need_whole_super_blocks(type_name):
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize(np.zeros((2, 288), dtype=np.float32), type_name)


def test_types_without_an_encoder_are_refused_by_name():
    assert ALL_TYPES["q2_k"].block == 256
    with pytest.raises(ValueError, match="cannot encode 'q2_k'"):
        quantize(np.zeros((1, 256), dtype=np.float32), "q2_k")
