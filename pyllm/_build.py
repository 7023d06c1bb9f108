"""cffi build script (out-of-line API mode): compiles csrc/ into the extension pyllm._core.

The cdef is read from csrc/pyllm.h, between its "cdef begin" and "cdef end" markers, so the C API
is declared in one place.
"""
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")
SOURCES = ["model.c", "team.c", "ops.c", "kernels/dispatch.c", "kernels/ref.c", "kernels/x86.c",
           "kernels/arm.c"]


def read_cdef(header: str) -> str:
    """The declarations between the cdef markers of the C header."""
    with open(header, encoding="utf-8") as f:
        text = f.read()
    start = text.index("/* cdef begin */") + len("/* cdef begin */")
    return text[start : text.index("/* cdef end */")]


def compile_args() -> list[str]:
    """-O3 and POSIX threads (team.c; OpenMP on Windows); SIMD is enabled per function in
    kernels/x86.c, so no -march flag is needed."""
    if sys.platform == "win32":
        return ["/O2", "/openmp"]
    args = ["-O3", "-std=c11", "-pthread", "-Wall", "-Wextra"]
    return args + os.environ.get("PYLLM_CFLAGS", "").split()


ffibuilder = FFI()
ffibuilder.cdef(read_cdef(os.path.join(CSRC, "pyllm.h")))
ffibuilder.set_source(
    "pyllm._core",
    '#include "pyllm.h"',
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(CSRC)],
    extra_compile_args=compile_args(),
    extra_link_args=[] if sys.platform == "win32" else ["-pthread"],
    libraries=[] if sys.platform == "win32" else ["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
