"""What the weights.bin and GGUF readers share: a file mapped read-only (or read into memory
backed by huge pages), parsed by a subclass, whose problems become FormatError naming the file;
tensors handed out as views, never copies."""
from __future__ import annotations

import mmap
import os
import stat
from typing import Any, Iterable

from ..errors import FormatError


def huge_pages_available() -> bool:
    """Whether memory that asks for transparent huge pages gets them (Linux, THP in "always" or
    "madvise" mode)."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


def read_into_memory(f: Any, size: int) -> mmap.mmap:
    """The `size` bytes of open file f in anonymous memory that asks for huge pages where the
    system has them; ValueError if the file ends early (it changed since it was measured)."""
    private = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    # private: shared anonymous memory is shmem, which gets huge pages only by its own setting
    buf = mmap.mmap(-1, size, flags=private) if private else mmap.mmap(-1, size)
    try:
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                buf.madvise(mmap.MADV_HUGEPAGE)
            except OSError:  # a kernel without huge pages: the memory works as it is
                pass
        with memoryview(buf) as view:
            done = 0
            while done < size:
                n = f.readinto(view[done:])
                if not n:
                    raise ValueError(f"the file ended after {done} of its {size} bytes while it was read")
                done += n
    except BaseException:
        buf.close()
        raise
    return buf


class MappedFile:
    """A model file mapped read-only, or with `read` set read into memory (see read_into_memory).
    Subclasses fill `tensors` (entries with absolute `offset` and `nbytes`) in `_parse(size)` and
    raise ValueError for anything wrong."""

    KIND = "model file"
    MIN_SIZE = 1

    def __init__(self, path: str | os.PathLike, read: bool = False):
        self.path = os.fspath(path)
        self.tensors: dict[str, Any] = {}
        check_regular_file(self.path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.MIN_SIZE:
                    raise FormatError(f"{self.path}: only {size} bytes, too short to be a {self.KIND}")
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._parse_mapping(size)
                if read:
                    self._read_tensors(f)
        except OSError as exc:
            raise FormatError(f"{self.path}: cannot open: {exc.strerror}") from None

    def _parse_mapping(self, size: int) -> None:
        """_parse, its ValueError a FormatError naming the file (the mapping closed)."""
        try:
            self._parse(size)
        except ValueError as exc:
            self._mmap.close()
            if isinstance(exc, FormatError):
                raise
            raise FormatError(f"{self.path}: {exc}") from None

    def _read_tensors(self, f: Any) -> None:
        """Swap the mapping for the file's bytes up to its last tensor's end, read from the same
        open file into memory (read_into_memory): what was parsed is what is read, and a file
        padded past its tensors costs no memory."""
        end = max((t.offset + t.nbytes for t in self.tensors.values()), default=0)
        f.seek(0)
        try:
            memory = read_into_memory(f, max(end, 1))
        except ValueError as exc:
            self._mmap.close()
            raise FormatError(f"{self.path}: {exc}") from None
        mapping, self._mmap = self._mmap, memory
        try:
            mapping.close()
        except BufferError:  # a view of it is still alive: it is unmapped when the view goes
            pass

    def _parse(self, size: int) -> None:
        raise NotImplementedError

    def buffer(self) -> mmap.mmap:
        """The whole mapping or memory (for handing tensor addresses to C)."""
        return self._mmap

    def tensor_bytes(self, name: str) -> memoryview:
        """The raw bytes of one tensor: a view into the mapping, no copy."""
        t = self.tensors[name]
        return memoryview(self._mmap)[t.offset:t.offset + t.nbytes]

    def close(self) -> None:
        """Unmap the file (if views of it are still alive, it is unmapped when they go)."""
        try:
            self._mmap.close()
        except BufferError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_regular_file(path: str) -> None:
    """FormatError unless path is a regular file (opening a FIFO or a device can block forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise FormatError(f"{path}: cannot open: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise FormatError(f"{path}: {kind}; a model file must be a regular file")


def read_head(path: str, n: int = 4) -> bytes:
    """The first n bytes of a regular file (to tell formats apart by their magic); FormatError
    naming the file if it is not a regular file or cannot be read."""
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise FormatError(f"{path}: cannot open: {exc.strerror}") from None


MAX_SIDE_FILE = 1 << 30  # tokenizer.json, config.json, templates: Gemma 3's tokenizer.json is 33 MB


def read_side_file(path: str) -> bytes:
    """The bytes of a small file beside a model (a tokenizer, a config, a template); FormatError
    naming the file if it is not a regular file, cannot be read, or is larger than such files get."""
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_SIDE_FILE:
                raise FormatError(f"{path}: larger than {MAX_SIDE_FILE} bytes; not a tokenizer, config or template")
            return f.read()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None


def check_no_overlap(entries: Iterable[Any]) -> None:
    """ValueError if the byte ranges of two tensor entries overlap."""
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in entries)
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise ValueError(f"tensors {a} and {b} overlap")
