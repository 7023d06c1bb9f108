"""Every weight type's matmul, SIMD and portable kernels, against a numpy reference.

Sizes are chosen to hit every tail: rows not a multiple of the 4- and 2-row tiles, activation
batches not a multiple of the 4-token tile, float rows whose length is not a multiple of 8.
"""
import numpy as np
import pytest

from pyllm import _native
from pyllm.quant import QK, QK_K, TYPES, dequantize, quantize

KERNELS = _native.available_kernels()
QUANTIZED = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
WITH_MIN = ("q4_1", "q5_1")  # value q * d + m: blocks hold d, then m
K_QUANTS = ["q4_k", "q5_k", "q6_k"]  # multiply against activations quantized per 256 values
SMALL_BLOCKS = [name for name in TYPES if name not in K_QUANTS]


def quantize_activations(x: np.ndarray, block: int = QK) -> np.ndarray:
    """x as the C core sees it before a quantized matmul: 8 bits per value, one scale per `block`
    (32, or 256 for the K-quants)."""
    b = x.reshape(x.shape[0], -1, block).astype(np.float32)
    d = (np.abs(b).max(axis=-1) / np.float32(127.0)).astype(np.float32)
    inv = np.where(d > 0, np.float32(1.0) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.round((b * inv[..., None]).astype(np.float32))  # to nearest even, as the C core
    return (q * d[..., None]).reshape(x.shape)


def quantize_activations_16(x: np.ndarray) -> np.ndarray:
    """x as AVX2's classifier kernel rounds it: 16 bits per 32 values, scale max|x| / 32767."""
    b = x.reshape(x.shape[0], -1, QK).astype(np.float32)
    d = (np.abs(b).max(axis=-1) / np.float32(32767.0)).astype(np.float32)
    inv = np.where(d > 0, np.float32(1.0) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.round((b * inv[..., None]).astype(np.float32))
    return (q * d[..., None]).reshape(x.shape)


def reference(raw, type_name, rows, cols, x):
    w = dequantize(raw, type_name, (rows, cols)).astype(np.float64)
    xs = (quantize_activations(x) if type_name in QUANTIZED else
          quantize_activations(x, QK_K) if type_name in K_QUANTS else x)
    return xs.astype(np.float64) @ w.T


def random_k_blocks(rng, type_name, rows, cols):
    """Random K-quant rows: every bit pattern of quants and sub-block scales, with small f16 d and
    dmin (the super-block scales), as a real file's blocks would have."""
    t = TYPES[type_name]
    raw = rng.integers(0, 256, (rows, cols // QK_K, t.block_bytes), dtype=np.uint8)
    d = (rng.random((rows, cols // QK_K, 2)) * 0.004).astype(np.float16).view(np.uint8)
    if type_name == "q6_k":  # d last
        raw[..., -2:] = d[..., :2]
    else:  # d, dmin first
        raw[..., :4] = d.reshape(rows, cols // QK_K, 4)
    return raw.reshape(-1)


def random_blocks(rng, type_name, rows, cols):
    """Rows of random bytes in 32-value blocks with small f16 scales (and offsets): blocks a file may
    hold but our quantizer never writes (every nibble and fifth-bit value, Q8_0's -128: its first
    block is all -128)."""
    raw = rng.integers(0, 256, (rows, cols // 32, TYPES[type_name].block_bytes), dtype=np.uint8)
    n_scales = 2 if type_name in WITH_MIN else 1
    scales = (rng.standard_normal((rows, cols // 32, n_scales)) * 0.01).astype(np.float16)
    raw[..., : 2 * n_scales] = scales.view(np.uint8).reshape(rows, cols // 32, 2 * n_scales)
    if type_name == "q8_0":
        raw[0, 0, 2:] = 0x80
    return raw.reshape(-1)


def random_case(rng, type_name, rows, cols, n):
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.5
    w[:, : cols // 3] += 0.3  # blocks with an offset, so the m term of Q4_1 and Q5_1 matters
    x = rng.standard_normal((n, cols)).astype(np.float32)
    return quantize(w, type_name), x


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", SMALL_BLOCKS)
@pytest.mark.parametrize("rows,cols,n", [(1, 32, 1), (7, 64, 1), (37, 96, 3), (67, 576, 1),
                                         (67, 576, 9), (130, 160, 4), (5, 1536, 13), (21, 640, 19),
                                         (40, 1088, 8), (9, 416, 11)])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_matmul_matches_numpy(kernels, type_name, rows, cols, n, n_threads):
    rng = np.random.default_rng(rows * 1000 + cols + n)
    raw, x = random_case(rng, type_name, rows, cols, n)
    y = _native.matmul(raw, TYPES[type_name].ggml_id, rows, cols, x, kernels, n_threads)
    ref = reference(raw, type_name, rows, cols, x)
    tol = 2e-5 * np.sqrt(cols) * np.abs(ref).max()
    np.testing.assert_allclose(y, ref, rtol=0, atol=tol)


FLOAT_ACTIVATION_TYPES = ["f32", "f16", "q8_0"]  # the classifier's kernel multiplies x unquantized


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name,blocks", [(name, "quantized") for name in FLOAT_ACTIVATION_TYPES]
                         + [("q8_0", "any bytes")])
@pytest.mark.parametrize("rows,cols,n", [(1, 32, 1), (7, 64, 1), (37, 96, 3), (67, 576, 9),
                                         (130, 160, 4), (21, 640, 19), (9, 416, 13), (5, 8224, 3)])
def test_float_activation_matmul_matches_numpy(kernels, type_name, blocks, rows, cols, n):
    """The classifier's matmul: the dequantized weights times x itself, never x rounded to 8 bits
    (so it is closer to the exact product than the 8-bit kernel's error allows; AVX2's Q8_0 kernel
    rounds x to 16 bits per 32 values in rows of up to 8192, and is held to that product), and each
    token bit for bit what it gives alone, whatever the thread split."""
    rng = np.random.default_rng(rows * 1000 + cols + n)
    raw, x = random_case(rng, type_name, rows, cols, n)
    if blocks == "any bytes":
        raw = random_blocks(rng, type_name, rows, cols)
    tid = TYPES[type_name].ggml_id
    y = _native.matmul(raw, tid, rows, cols, x, kernels, 2, float_activations=True)
    w = dequantize(raw, type_name, (rows, cols)).astype(np.float64)
    xs = quantize_activations_16(x) if kernels == "avx2" and type_name == "q8_0" and cols <= 8192 else x
    tol = 2e-6 * np.sqrt(cols) * np.abs(x.astype(np.float64) @ w.T).max()
    np.testing.assert_allclose(y, xs.astype(np.float64) @ w.T, rtol=0, atol=tol)
    if xs is not x:  # 16 bits are far closer to x itself than the 8-bit kernels' activations
        err16 = np.abs(y - x.astype(np.float64) @ w.T).max()
        err8 = np.abs(quantize_activations(x).astype(np.float64) @ w.T - x.astype(np.float64) @ w.T).max()
        assert err16 < err8 / 20
    for t in range(n):
        alone = _native.matmul(raw, tid, rows, cols, x[t:t + 1], kernels, 1 + t % 3, float_activations=True)
        np.testing.assert_array_equal(alone[0].view(np.uint32), y[t].view(np.uint32))


@pytest.mark.parametrize("kernels", KERNELS)
def test_float_activation_matmul_refuses_other_types(kernels):
    """Only F32, F16 and Q8_0 have the classifier's float-activation kernel; the others say so."""
    rng = np.random.default_rng(3)
    raw, x = random_case(rng, "q4_1", 4, 64, 1)
    with pytest.raises(Exception, match="type"):
        _native.matmul(raw, TYPES["q4_1"].ggml_id, 4, 64, x, kernels, 1, float_activations=True)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", [name for name in TYPES if name not in ("f32", "f16")])
@pytest.mark.parametrize("rows,cols,n", [(37, 768, 19), (21, 1536, 9), (11, 416, 10)])
def test_token_result_does_not_depend_on_its_batch(kernels, type_name, rows, cols, n):
    """Bit for bit: a token multiplied alone (decoding) gives what it gives inside a batch of n
    (a prompt's tiles, or a prompt kernel of its own), whatever the thread split."""
    rng = np.random.default_rng(rows + n)
    if type_name in K_QUANTS:
        cols = -(-cols // QK_K) * QK_K  # whole super-blocks
    raw = (random_k_blocks(rng, type_name, rows, cols) if type_name in K_QUANTS
           else random_case(rng, type_name, rows, cols, n)[0])
    x = rng.standard_normal((n, cols)).astype(np.float32)
    batch = _native.matmul(raw, TYPES[type_name].ggml_id, rows, cols, x, kernels, 2)
    for t in range(n):
        alone = _native.matmul(raw, TYPES[type_name].ggml_id, rows, cols, x[t:t + 1], kernels, 1 + t % 2)
        np.testing.assert_array_equal(alone[0].view(np.uint32), batch[t].view(np.uint32))


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", QUANTIZED)
@pytest.mark.parametrize("rows,cols", [(16, 32), (33, 288), (45, 544), (70, 1120)])
@pytest.mark.parametrize("blocks", ["quantized", "any bytes"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
def test_small_batches_match_numpy_and_single_tokens(kernels, type_name, rows, cols, blocks, accumulate):
    """Batches of 2 to 9 tokens (AVX-512 puts 2 and more through its lane kernels, 4 tokens per pass)
    against numpy and, bit for bit, against each token alone; rows leaving a partial group of 16
    (also per thread), 1, 9, 17 and 35 blocks a row (partial groups of 16 and of 8 blocks); the
    product stored, or added to the output as the residual connections do."""
    rng = np.random.default_rng(rows * 1000 + cols)
    raw = (random_case(rng, type_name, rows, cols, 1)[0] if blocks == "quantized"
           else random_blocks(rng, type_name, rows, cols))
    x = rng.standard_normal((9, cols)).astype(np.float32)
    base = rng.standard_normal((9, rows)).astype(np.float32) * 4 if accumulate else None

    def matmul(t0, t1, n_threads):
        add_to = base[t0:t1] if accumulate else None
        return _native.matmul(raw, TYPES[type_name].ggml_id, rows, cols, x[t0:t1], kernels, n_threads, add_to)

    alone = [matmul(t, t + 1, 1 + t % 2)[0] for t in range(9)]
    for n in (2, 3, 4, 5, 8, 9):
        batch = matmul(0, n, 2)
        product = reference(raw, type_name, rows, cols, x[:n])
        tol = 2e-5 * np.sqrt(cols) * np.abs(product).max()
        if accumulate:
            np.testing.assert_allclose(batch, base[:n] + product, rtol=0, atol=tol + 1e-6 * np.abs(base).max())
            # the sum is the stored product plus add_to, rounded once
            stored = _native.matmul(raw, TYPES[type_name].ggml_id, rows, cols, x[:n], kernels, 2)
            np.testing.assert_array_equal((base[:n] + stored).view(np.uint32), batch.view(np.uint32))
        else:
            np.testing.assert_allclose(batch, product, rtol=0, atol=tol)
        for t in range(n):
            np.testing.assert_array_equal(alone[t].view(np.uint32), batch[t].view(np.uint32))


# Relative to the largest |result|, per sqrt(cols): float32 rounding of the per-super-block sums
# against a float64 product of the same dequantized weights and quantized activations.
K_QUANT_TOLERANCE = 2e-6


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", K_QUANTS)
@pytest.mark.parametrize("rows,cols,n", [(1, 256, 1), (7, 512, 2), (37, 768, 3), (3, 256, 5),
                                         (67, 2304, 17), (130, 512, 4), (5, 1536, 9)])
@pytest.mark.parametrize("n_threads", [1, 3])
def test_k_quant_matmul_matches_numpy(kernels, type_name, rows, cols, n, n_threads):
    """Q4_K, Q5_K, Q6_K weights (random blocks: every quant and scale value) against a float64
    product of numpy's dequantized weights and the activations quantized per 256 values."""
    rng = np.random.default_rng(rows * 1000 + cols + n)
    raw = random_k_blocks(rng, type_name, rows, cols)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    y = _native.matmul(raw, TYPES[type_name].ggml_id, rows, cols, x, kernels, n_threads)
    ref = reference(raw, type_name, rows, cols, x)
    np.testing.assert_allclose(y, ref, rtol=0, atol=K_QUANT_TOLERANCE * np.sqrt(cols) * np.abs(ref).max())


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", K_QUANTS)
@pytest.mark.parametrize("rows,cols", [(35, 512), (3, 258 * QK_K)], ids=["partial-16-rows", "258-blocks"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
def test_k_quant_batches_match_numpy_and_single_tokens(kernels, type_name, rows, cols, accumulate):
    """Batches of 2 to 9 tokens (AVX-512 Q4_K and Q6_K take 4 and more through 16-row lanes, 4
    tokens per pass, fewer a row at a time) against numpy and, bit for bit, each token alone: rows
    leaving a partial group of 16 (also per thread), rows of over 256 super-blocks (the Q4_K decode
    path reorders the token 256 blocks at a time there); stored, or added to the output."""
    rng = np.random.default_rng(rows * 1000 + cols)
    raw = random_k_blocks(rng, type_name, rows, cols)
    x = rng.standard_normal((9, cols)).astype(np.float32)
    base = rng.standard_normal((9, rows)).astype(np.float32) * 4 if accumulate else None
    tid = TYPES[type_name].ggml_id

    def matmul(t0, t1, n_threads):
        return _native.matmul(raw, tid, rows, cols, x[t0:t1], kernels, n_threads,
                              base[t0:t1] if accumulate else None)

    alone = [matmul(t, t + 1, 1 + t % 2)[0] for t in range(9)]
    for n in (2, 3, 4, 5, 8, 9):
        batch = matmul(0, n, 2)
        product = reference(raw, type_name, rows, cols, x[:n])
        tol = K_QUANT_TOLERANCE * np.sqrt(cols) * np.abs(product).max()
        if accumulate:
            stored = _native.matmul(raw, tid, rows, cols, x[:n], kernels, 2)
            np.testing.assert_array_equal((base[:n] + stored).view(np.uint32), batch.view(np.uint32))
            np.testing.assert_allclose(stored, product, rtol=0, atol=tol)
        else:
            np.testing.assert_allclose(batch, product, rtol=0, atol=tol)
        for t in range(n):
            np.testing.assert_array_equal(alone[t].view(np.uint32), batch[t].view(np.uint32))


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", K_QUANTS)
def test_k_quant_matmul_close_to_exact_product(kernels, type_name):
    """8-bit activations per 256 values cost well under 2% of the result's scale against the float
    product."""
    rng = np.random.default_rng(11)
    raw = random_k_blocks(rng, type_name, 64, 768)
    x = rng.standard_normal((5, 768)).astype(np.float32)
    y = _native.matmul(raw, TYPES[type_name].ggml_id, 64, 768, x, kernels, 2)
    exact = x.astype(np.float64) @ dequantize(raw, type_name, (64, 768)).T
    assert np.abs(y - exact).max() < 0.02 * np.abs(exact).max()


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", list(TYPES))
def test_dequantize_row_is_numpys_bit_for_bit(kernels, type_name):
    """Every family's dequantize_row (token embeddings) gives exactly numpy's floats."""
    rng = np.random.default_rng(5)
    cols = 2304 if type_name in K_QUANTS else 96
    raw = (random_k_blocks(rng, type_name, 3, cols) if type_name in K_QUANTS
           else quantize(rng.standard_normal((3, cols)).astype(np.float32), type_name).reshape(-1))
    want = dequantize(raw, type_name, (3, cols))
    for r, row in enumerate(raw.reshape(3, -1)):
        got = _native.dequantize_row(row, TYPES[type_name].ggml_id, cols, kernels)
        np.testing.assert_array_equal(got.view(np.uint32), want[r].view(np.uint32))


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", ["f32", "f16"])
@pytest.mark.parametrize("cols", [1, 5, 13, 33, 100])
def test_float_rows_of_any_length(kernels, type_name, cols):
    rng = np.random.default_rng(cols)
    raw, x = random_case(rng, type_name, 11, cols, 6)
    y = _native.matmul(raw, TYPES[type_name].ggml_id, 11, cols, x, kernels, 2)
    np.testing.assert_allclose(y, reference(raw, type_name, 11, cols, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", QUANTIZED)
def test_quantized_matmul_close_to_exact_product(kernels, type_name):
    """8-bit activations cost well under 2% of the result's scale against the float product."""
    rng = np.random.default_rng(7)
    raw, x = random_case(rng, type_name, 64, 576, 5)
    y = _native.matmul(raw, TYPES[type_name].ggml_id, 64, 576, x, kernels, 2)
    exact = x.astype(np.float64) @ dequantize(raw, type_name, (64, 576)).T
    assert np.abs(y - exact).max() < 0.02 * np.abs(exact).max()


@pytest.mark.parametrize("kernels", KERNELS)
def test_extreme_quantized_values(kernels):
    """Full-scale and zero blocks: no int16 saturation, no division by a zero scale."""
    w = np.zeros((8, 64), dtype=np.float32)
    w[:4, :32] = 1000.0
    w[4:, 32:] = -1000.0
    x = np.full((2, 64), 3.0, dtype=np.float32)
    x[1, :32] = 0.0
    for type_name in QUANTIZED:
        raw = quantize(w, type_name)
        y = _native.matmul(raw, TYPES[type_name].ggml_id, 8, 64, x, kernels, 1)
        np.testing.assert_allclose(y, reference(raw, type_name, 8, 64, x), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", QUANTIZED)
def test_any_block_bytes(kernels, type_name):
    """Blocks a file may hold but our quantizer never writes (Q8_0's -128, every nibble value, an
    odd number of blocks per row, tiles with partial rows and columns) multiply exactly too."""
    rng = np.random.default_rng(7)
    rows, cols, n = 9, 96, 6
    raw = random_blocks(rng, type_name, rows, cols)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    y = _native.matmul(raw, TYPES[type_name].ggml_id, rows, cols, x, kernels, 2)
    ref = reference(raw, type_name, rows, cols, x)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("n,cols", [(1, 1536), (3, 37), (5, 8), (2, 3)])
def test_swiglu_matches_float64(kernels, n, cols):
    """silu(g) * u to float precision over the whole float range, where exp(-g) overflows
    (g < -88) and for infinities (g = -inf gives NaN, as x * sigmoid(x) does in PyTorch); NaN in
    either input comes out as NaN. Special values sit in SIMD columns and in the scalar tail
    (cols % 8) alike."""
    rng = np.random.default_rng(n * cols)
    gate = (rng.standard_normal((n, cols)) * rng.choice([0.1, 3.0, 30.0, 300.0], (n, cols))).astype(np.float32)
    up = rng.standard_normal((n, cols)).astype(np.float32)
    special = [-1e30, 1e30, -88.5, -np.inf, np.inf, np.nan]
    flat = gate.reshape(-1)
    flat[:len(special)] = special[:flat.size]              # first columns: the SIMD path when cols >= 8
    flat[-3:] = [-np.inf, np.nan, -100.0][-min(3, flat.size):]  # last columns: the tail when cols % 8
    up.reshape(-1)[len(special) % up.size] = np.nan
    g, u = gate.astype(np.float64), up.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = g / (1.0 + np.exp(-g)) * u
    out = _native.swiglu(gate, up, kernels, 2)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    # atol: below g = -87 the exact value is under 1e-36 in magnitude; those may come out as 0
    np.testing.assert_allclose(out, ref, rtol=5e-7, atol=1e-36)
    # one element's value never depends on the batch or the thread split
    for threads in (1, 3, 7):
        np.testing.assert_array_equal(_native.swiglu(gate, up, kernels, threads), out)
    for i in range(n):
        np.testing.assert_array_equal(_native.swiglu(gate[i:i + 1], up[i:i + 1], kernels, 2)[0], out[i])


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("n,cols", [(1, 2048), (3, 37), (5, 8), (2, 3)])
def test_geglu_matches_float64(kernels, n, cols):
    """gelu_tanh(g) * u (PyTorch's gelu(approximate="tanh"), computed as g / (1 + exp(-2y))) to
    float precision over the whole float range, with infinities and NaN as PyTorch's formula gives
    them (-inf: NaN, inf: inf), in SIMD columns and the scalar tail; independent of the split."""
    rng = np.random.default_rng(n * cols + 1)
    gate = (rng.standard_normal((n, cols)) * rng.choice([0.1, 3.0, 30.0, 300.0], (n, cols))).astype(np.float32)
    up = rng.standard_normal((n, cols)).astype(np.float32)
    special = [-1e30, 1e30, -10.0, -np.inf, np.inf, np.nan]
    flat = gate.reshape(-1)
    flat[:len(special)] = special[:flat.size]
    flat[-3:] = [-np.inf, np.nan, -5.0][-min(3, flat.size):]
    up.reshape(-1)[len(special) % up.size] = np.nan
    g, u = gate.astype(np.float64), up.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.sqrt(2.0 / np.pi) * (g + 0.044715 * g ** 3)
        tanh_form = 0.5 * g * (1.0 + np.tanh(y)) * u
        ref = g / (1.0 + np.exp(-2.0 * y)) * u  # the same function, without 1 + tanh's cancellation
    np.testing.assert_allclose(ref, tanh_form, rtol=1e-12, atol=1e-12 * np.nanmax(np.abs(u)))
    out = _native.geglu(gate, up, kernels, 2)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    # Far below zero the value is gelu's tail, g exp(2y) with |2y| up to 87: float32's rounding of y
    # moves it by up to ~|2y| 1e-7 relative; there rtol 2e-5, elsewhere 1e-6.
    tail = np.abs(g) > 3
    np.testing.assert_allclose(out[~tail], ref[~tail], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(out[tail], ref[tail], rtol=2e-5, atol=1e-30)
    for threads in (1, 3, 7):
        np.testing.assert_array_equal(_native.geglu(gate, up, kernels, threads), out)
    for i in range(n):
        np.testing.assert_array_equal(_native.geglu(gate[i:i + 1], up[i:i + 1], kernels, 2)[0], out[i])


def test_simd_kernels_present_on_this_machine():
    """The fastest SIMD family this CPU supports must be built in and chosen."""
    import platform
    machine = platform.machine().lower()
    flags = open("/proc/cpuinfo").read() if machine in ("x86_64", "amd64") else ""
    have = set(flags.split())
    if machine in ("x86_64", "amd64") and {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                                           "avx512_vnni"} <= have:
        assert _native.best_kernels() == "avx512"
    elif machine in ("x86_64", "amd64") and {"avx2", "fma", "f16c"} <= have:
        assert _native.best_kernels() == "avx2"
    elif machine in ("aarch64", "arm64"):
        assert _native.best_kernels() == "neon"
    else:
        pytest.skip(f"no SIMD kernels for {machine}")


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("type_name", SMALL_BLOCKS)  # the K-quants: test_dequantize_row_is_numpys_bit_for_bit
def test_c_dequantize_row_is_bit_exact_with_numpy(kernels, type_name):
    """The C core's rows as floats (token embeddings) equal numpy's decoding bit for bit, for any
    block bytes: random nibbles, high bits and int8 values, scales of both signs, zeros,
    subnormal and large f16 scales."""
    t = TYPES[type_name]
    rng = np.random.default_rng(t.ggml_id)
    cols = 7 * max(t.block, 32)
    if t.block == 1:
        raw = (rng.standard_normal(cols) * 3).astype(np.float32 if type_name == "f32" else np.float16).view(np.uint8)
    else:
        blocks = rng.integers(0, 256, (cols // t.block, t.block_bytes), dtype=np.uint8)
        scales = rng.standard_normal((len(blocks), 2)) * np.array([1e-6, 1e-3, 1.0, 100.0])[rng.integers(0, 4, (len(blocks), 1))]
        scales[0] = 0.0
        scales[1] = 3e-8  # subnormal in f16
        n_scales = 2 if type_name in WITH_MIN else 1
        blocks[:, : 2 * n_scales] = scales[:, :n_scales].astype(np.float16).view(np.uint8)
        raw = blocks.reshape(-1)
    out = _native.dequantize_row(raw, t.ggml_id, cols, kernels)
    np.testing.assert_array_equal(out.view(np.uint32), dequantize(raw, type_name, (cols,)).view(np.uint32))


@pytest.mark.parametrize("kernels", KERNELS)
def test_q5_0_tensors_of_gemma_3_multiply_like_numpy(kernels):
    """Q5_0 tensors as llama.cpp wrote them (Gemma 3 270M's Q4_K_M GGUF, fetched once): the C core's
    rows as floats equal numpy's bit for bit, and its matmul, prompt and single token, numpy's."""
    from pyllm.fetch import fetch_gguf
    from pyllm.formats.gguf import GGUFFile
    path = fetch_gguf(quiet=True, model="gemma3-270m")
    with GGUFFile(path) as g:
        for name in ("blk.0.attn_q.weight", "blk.17.ffn_up.weight"):
            t = g.tensors[name]
            assert t.type_name == "Q5_0"
            rows, cols = t.shape
            raw = np.frombuffer(g.tensor_bytes(name), np.uint8).reshape(rows, -1)[:300]
            values = dequantize(raw, "q5_0", (len(raw), cols))
            for r in (0, 1, len(raw) - 1):
                out = _native.dequantize_row(raw[r], TYPES["q5_0"].ggml_id, cols, kernels)
                np.testing.assert_array_equal(out.view(np.uint32), values[r].view(np.uint32))
            x = np.random.default_rng(rows).standard_normal((5, cols)).astype(np.float32)
            for n in (1, 5):
                y = _native.matmul(raw, TYPES["q5_0"].ggml_id, len(raw), cols, x[:n], kernels, 2)
                ref = reference(raw, "q5_0", len(raw), cols, x[:n])
                np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * np.sqrt(cols) * np.abs(ref).max())


def test_roundtrip_quantize_dequantize_matches_ggml_rules():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    for type_name, bound in [("f16", 1e-3), ("q8_0", 0.02), ("q4_0", 0.3), ("q4_1", 0.3), ("q5_0", 0.15),
                             ("q5_1", 0.15)]:
        back = dequantize(quantize(w, type_name), type_name, w.shape)
        assert np.abs(back - w).max() < bound * np.abs(w).max(), type_name


# ------------------------------------------------------------------------------------------------
# The x86 kernels' order of float operations, modelled step by step in numpy

def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add, rounded once: a * b is exact in float64, the sum's rounding error
    is recovered exactly (two-sum), and decides the float32 rounding where float64's result lies
    exactly halfway between two float32 (the one case where rounding twice differs)."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c = c.astype(np.float64)
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    r = s.astype(np.float32)
    other = np.nextafter(r, np.where(s > r, np.float32(np.inf), np.float32(-np.inf))).astype(np.float32)
    halfway = (s != r) & (s == (r.astype(np.float64) + other.astype(np.float64)) / 2) & (err != 0)
    toward = np.sign(err) == np.sign(other.astype(np.float64) - r.astype(np.float64))
    return np.where(halfway & toward, other, r).astype(np.float32)


def quantize_blocks(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The C core's activation blocks: (scales d (n, nb), int8 values (n, nb, block))."""
    b = x.reshape(x.shape[0], -1, block).astype(np.float32)
    d = (np.abs(b).max(axis=-1) / np.float32(127.0)).astype(np.float32)
    inv = np.where(d > 0, np.float32(1.0) / np.where(d > 0, d, 1), 0).astype(np.float32)
    return d, np.round((b * inv[..., None]).astype(np.float32)).astype(np.int64)


def with_scales(raw: np.ndarray, type_name: str, rows: int, cols: int, first: float, second: float) -> np.ndarray:
    """raw with every block's f16 scale set to `first` and its offset or dmin (where it has one) to
    `second`: decoded, the blocks give their integer values (times the sub-block scales)."""
    t = TYPES[type_name]
    blk = raw.copy().reshape(rows, -1, t.block_bytes)
    at = t.block_bytes - 2 if type_name == "q6_k" else 0
    blk[..., at:at + 2] = np.array([first], np.float16).view(np.uint8)
    if type_name in WITH_MIN or type_name in ("q4_k", "q5_k"):
        blk[..., 2:4] = np.array([second], np.float16).view(np.uint8)
    return dequantize(blk.reshape(-1), type_name, (rows, cols))


def x86_order_model(raw: np.ndarray, type_name: str, rows: int, cols: int, x: np.ndarray) -> np.ndarray:
    """What the x86 lane kernels compute, in their order: per block b (32 values, or a K-quant's 256)
    exact integer sums, then into one of four float32 sums A_j (j = (b / 2) % 4 for 32-value blocks,
    b % 4 for super-blocks), from +0 in block order, fused multiply-adds of (weight scale * activation
    scale) times the integer, then of the offset term; the result (A_0 + A_2) + (A_1 + A_3)."""
    t = TYPES[type_name]
    k_quant = type_name in K_QUANTS
    block = QK_K if k_quant else QK
    nb = cols // block
    xd, xq = quantize_blocks(x, block)  # (n, nb), (n, nb, block)
    blk = raw.reshape(rows, nb, t.block_bytes)
    ints = with_scales(raw, type_name, rows, cols, 1.0, 0.0).astype(np.int64).reshape(rows, nb, block)
    T = np.einsum("rbk,nbk->nrb", ints, xq)  # (n, rows, nb)
    if k_quant and type_name != "q6_k":
        mins = -with_scales(raw, type_name, rows, cols, 0.0, 1.0).astype(np.int64).reshape(rows, nb, block)
        M = np.einsum("rbk,nbk->nrb", mins, xq)
        d = blk[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = -blk[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    elif type_name == "q6_k":
        scales = blk[..., 192:208].view(np.int8).astype(np.int64)  # (rows, nb, 16)
        M = np.einsum("rbs,nbs->nrb", scales, xq.reshape(x.shape[0], nb, 16, 16).sum(axis=-1))
        T = T + 32 * M  # ints held scale * (q - 32)
        d = blk[..., 208:210].copy().view(np.float16)[..., 0].astype(np.float32)
        m = (d * np.float32(-32.0)).astype(np.float32)
    else:
        M = None
        d = blk[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        if type_name in WITH_MIN:
            wm = blk[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
            xs = (xd * xq.sum(axis=-1).astype(np.float32)).astype(np.float32)
    acc = np.zeros((4, x.shape[0], rows), np.float32)
    for b in range(nb):
        j = b % 4 if k_quant else (b // 2) % 4
        s = (d[None, :, b] * xd[:, b, None]).astype(np.float32)
        acc[j] = fma32(T[:, :, b].astype(np.float32), s, acc[j])
        if k_quant:
            acc[j] = fma32(M[:, :, b].astype(np.float32), (m[None, :, b] * xd[:, b, None]).astype(np.float32), acc[j])
        elif type_name in WITH_MIN:
            acc[j] = fma32(np.broadcast_to(wm[None, :, b], acc[j].shape), np.broadcast_to(xs[:, b, None], acc[j].shape), acc[j])
    return ((acc[0] + acc[2]) + (acc[1] + acc[3])).astype(np.float32)


# The x86 kernel families and the types whose every path follows x86_order_model.
X86_ORDER = [(k, t) for k in KERNELS if k in ("avx2", "avx512") for t in QUANTIZED]
X86_ORDER += [(k, t) for k in KERNELS if k in ("avx2", "avx512") for t in ("q4_k", "q6_k")]


@pytest.mark.parametrize("kernels,type_name", X86_ORDER)
@pytest.mark.parametrize("rows,cols", [(1, 32), (9, 256), (17, 544), (6, 576), (4, 640), (12, 1120), (3, 2304),
                                       (2, 33 * 1024)])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_x86_kernels_follow_one_order_of_float_operations(kernels, type_name, rows, cols, n):
    """Bit for bit what x86_order_model computes, single tokens and batches, for any block bytes, in
    rows of over 1024 blocks too (AVX2 lays a token out per row there): AVX2 and AVX-512 give these
    matmuls the same bits, whichever x86 CPU runs them."""
    rng = np.random.default_rng(rows * 7 + cols + n)
    if type_name in K_QUANTS:
        cols = -(-cols // QK_K) * QK_K
        raw = random_k_blocks(rng, type_name, rows, cols)
    else:
        raw = random_blocks(rng, type_name, rows, cols)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    y = _native.matmul(raw, TYPES[type_name].ggml_id, rows, cols, x, kernels, 2)
    np.testing.assert_array_equal(y.view(np.uint32), x86_order_model(raw, type_name, rows, cols, x).view(np.uint32))
