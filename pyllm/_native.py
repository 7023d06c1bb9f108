"""The compiled C core (pyllm._core) and the few helpers that talk to it directly."""
from __future__ import annotations

import numpy as np

from .errors import EngineError, PyllmError

try:
    from ._core import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pyllm's C core is not built; install the package with `pip install .` "
        "(or `pip install -e .` in a checkout)"
    ) from exc

API_VERSION = 10
if lib.PYLLM_API_VERSION != API_VERSION:  # pragma: no cover - only with a stale build
    raise ImportError(
        f"pyllm's C core is API version {lib.PYLLM_API_VERSION} but the Python package expects "
        f"{API_VERSION}: rebuild it with `pip install .`"
    )

ISAS = {"portable": lib.PYLLM_ISA_PORTABLE, "avx2": lib.PYLLM_ISA_AVX2, "avx512": lib.PYLLM_ISA_AVX512,
        "neon": lib.PYLLM_ISA_NEON}


def check(code: int, what: str) -> None:
    """Raise EngineError naming `what` when a C call returned an error code."""
    if code != lib.PYLLM_OK:
        raise EngineError(f"{what}: {ffi.string(lib.pyllm_strerror(code)).decode()}")


def available_kernels() -> list[str]:
    """Names of the kernel families that can run on this CPU, fastest last."""
    return [name for name, isa in ISAS.items() if lib.pyllm_isa_available(isa)]


def best_kernels() -> str:
    """Name of the fastest kernel family on this CPU."""
    return ffi.string(lib.pyllm_isa_name(lib.pyllm_isa_best())).decode()


def kernel_id(name: str) -> int:
    """The C id of a kernel family name ("auto" = the best here); ValueError if it cannot run here."""
    if name == "auto":
        return lib.pyllm_isa_best()
    if name not in ISAS:
        raise ValueError(f"unknown kernels {name!r}; choose from auto, {', '.join(ISAS)}")
    if not lib.pyllm_isa_available(ISAS[name]):
        raise PyllmError(f"kernels {name!r} cannot run on this CPU (available: {', '.join(available_kernels())})")
    return ISAS[name]


def swiglu(gate: np.ndarray, up: np.ndarray, kernels: str = "auto", n_threads: int = 1) -> np.ndarray:
    """silu(gate) * up, elementwise over (n, cols) float32 arrays, with the forward pass's kernels.

    Exposed for tests: the SwiGLU step between the gate/up and down projections.
    """
    return _gated(lib.pyllm_swiglu, "swiglu", gate, up, kernels, n_threads)


def geglu(gate: np.ndarray, up: np.ndarray, kernels: str = "auto", n_threads: int = 1) -> np.ndarray:
    """gelu_tanh(gate) * up (Gemma's gated MLP step), as swiglu; exposed for tests."""
    return _gated(lib.pyllm_geglu, "geglu", gate, up, kernels, n_threads)


def _gated(fn, what: str, gate: np.ndarray, up: np.ndarray, kernels: str, n_threads: int) -> np.ndarray:
    out = np.array(gate, dtype=np.float32, order="C", copy=True)
    up = np.ascontiguousarray(up, dtype=np.float32)
    if out.ndim != 2 or up.shape != out.shape:
        raise ValueError(f"gate and up must be 2-D of one shape, got {out.shape} and {up.shape}")
    code = fn(kernel_id(kernels), ffi.from_buffer("float[]", out), ffi.from_buffer("float[]", up),
              out.shape[0], out.shape[1], n_threads)
    check(code, what)
    return out


def matmul(raw: np.ndarray, type_id: int, rows: int, cols: int, x: np.ndarray,
           kernels: str = "auto", n_threads: int = 1, add_to: np.ndarray | None = None,
           float_activations: bool = False) -> np.ndarray:
    """y = x @ W.T (or add_to + x @ W.T) with the forward pass's kernels; W is `rows` rows of encoded
    bytes `raw`.

    Exposed for tests and benchmarks: x (n, cols) float32 is quantized on the fly for quantized W,
    unless float_activations asks for the classifier's kernel, which multiplies x as it is (F32, F16
    and Q8_0 only); with add_to (n, rows) the kernels add into a copy of it, as the forward pass adds
    into the residual stream.
    """
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != cols:
        raise ValueError(f"x must have shape (n, {cols}), got {x.shape}")
    if raw.size != rows * lib.pyllm_row_bytes(type_id, cols):
        raise ValueError("weight bytes do not match rows, cols and type")
    if add_to is None:
        y = np.empty((x.shape[0], rows), dtype=np.float32)
    else:
        if np.shape(add_to) != (x.shape[0], rows):
            raise ValueError(f"add_to must have shape ({x.shape[0]}, {rows}), got {np.shape(add_to)}")
        y = np.array(add_to, dtype=np.float32, order="C")
    w = ffi.new("pyllm_tensor *", {"type": type_id, "rows": rows, "cols": cols,
                                   "data": ffi.from_buffer(raw)})
    fn = lib.pyllm_matmul_float if float_activations else lib.pyllm_matmul
    code = fn(kernel_id(kernels), w, ffi.from_buffer("float[]", x), x.shape[0],
              ffi.from_buffer("float[]", y), int(add_to is not None), n_threads)
    check(code, "matmul")
    return y


def dequantize_row(raw: np.ndarray, type_id: int, n: int, kernels: str = "auto") -> np.ndarray:
    """n values of one encoded row as float32, with the forward pass's kernels (token embeddings).

    Exposed for tests: every kernel family must give the floats numpy's decoder gives.
    """
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if n < 1 or raw.size != lib.pyllm_row_bytes(type_id, n):
        raise ValueError("row bytes do not match n and type")
    out = np.empty(n, dtype=np.float32)
    code = lib.pyllm_dequantize_row(kernel_id(kernels), type_id, ffi.from_buffer(raw),
                                    ffi.from_buffer("float[]", out), n)
    check(code, "dequantize_row")
    return out
