"""PagedCache: the KV cache of many sequences in fixed-size blocks from one pool, and the batched
forward pass over them.

Each sequence has a block table: the block that holds each `block_rows` positions. Blocks are
reference-counted. Sequences whose prompts start alike share the blocks of that prefix: every full
block is registered under a hash of all the tokens up to its end, and a new sequence takes the
longest registered prefix instead of computing it again. A registered block outlives its sequences
while the pool has room (least recently used ones are evicted first when it runs out). A forked
sequence shares all of its parent's blocks; the first write into a shared block copies it (copy on
write). Sliding-window layers (Gemma 3, Mistral) have their own pool, and a sequence returns their
blocks once they fall out of the window, so their memory stays bounded by the window.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ._native import check, ffi, lib
from .core import KV_TYPES, MAX_THREADS, ModelCore, check_count
from .errors import ClosedError, ContextFullError

BLOCK_ROWS = 16  # positions per block (vLLM's default); a multiple of 8, as the attention kernels read keys 8 at a time


def _chain(parent: bytes, tokens: Sequence[int]) -> bytes:
    """The key of a block: a digest of its parent's key and its own tokens (so of the whole prefix)."""
    return hashlib.blake2b(parent + np.asarray(tokens, dtype=np.int32).tobytes(), digest_size=16).digest()


class BlockPool:
    """Block numbers of one pool: which are free, how many holders each of the others has, and
    which are registered prefixes; `idle` counts the registered ones that nothing else holds (the
    prefix table's is their only hold), kept as holds change so that it is never counted."""

    def __init__(self, n_blocks: int):
        self.refs = [0] * n_blocks
        self.registered = [False] * n_blocks
        self.free = list(range(n_blocks - 1, -1, -1))
        self.idle = 0

    def take(self) -> int:
        block = self.free.pop()
        self.refs[block] = 1
        return block

    def hold(self, block: int) -> None:
        if self.registered[block] and self.refs[block] == 1:
            self.idle -= 1
        self.refs[block] += 1

    def drop(self, block: int) -> None:
        self.refs[block] -= 1
        if self.registered[block] and self.refs[block] == 1:
            self.idle += 1
        if self.refs[block] == 0:
            self.free.append(block)

    def register(self, block: int) -> None:
        """The prefix table holds the block too."""
        self.hold(block)
        self.registered[block] = True

    def unregister(self, block: int) -> None:
        """The prefix table lets the block go."""
        if self.refs[block] == 1:
            self.idle -= 1
        self.registered[block] = False
        self.drop(block)


@dataclass
class CachedSequence:
    """One sequence's place in the cache: its tokens so far and its block tables."""

    tokens: list[int] = field(default_factory=list)  # tokens whose keys/values are (or are being) stored
    blocks: list[int] = field(default_factory=list)  # full layers' blocks, in position order
    swa_blocks: list[int] = field(default_factory=list)  # sliding layers' (-1: out of the window, returned)
    keys: list[bytes] = field(default_factory=list)  # the prefix key of each full block registered so far
    closed: bool = False


class PagedCache:
    """The paged KV cache of a model, for up to max_seqs sequences per batch of up to n_batch tokens.

    n_blocks blocks of BLOCK_ROWS positions each for the full-attention layers; n_ctx bounds one
    sequence; kv_type ("f32" or "f16", default the model's) is how keys and values are stored. One thread at a time may use a cache (the engine's scheduler thread).
    """

    def __init__(self, model: ModelCore, n_blocks: int, *, n_ctx: int | None = None, max_seqs: int = 8,
                 n_batch: int = 512, n_threads: int | None = None, prefix_sharing: bool = True,
                 kv_type: str | None = None):
        self.model = model
        cfg = model.config
        self.n_ctx = model.check_n_ctx(model.n_ctx if n_ctx is None else n_ctx)
        self.n_blocks = check_count("n_blocks", n_blocks, 1 << 24)
        self.max_seqs = check_count("max_seqs", max_seqs, 1 << 16)
        self.n_batch = check_count("n_batch", n_batch, 4096)
        self.n_threads = check_count("n_threads", model.n_threads if n_threads is None else n_threads, MAX_THREADS)
        self.table_len = -(-self.n_ctx // BLOCK_ROWS)
        self.kv_type = model.kv_type if kv_type is None else kv_type
        if self.kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {self.kv_type!r}")
        self.window = cfg.sliding_window if model.sliding_layers else 0
        # a sequence's live sliding blocks span at most the window before a batch and the batch
        self.swa_per_seq = -(-(self.window - 1 + self.n_batch) // BLOCK_ROWS) + 1 if self.window else 0
        n_swa = self.swa_per_seq * self.max_seqs
        self.prefix_sharing = prefix_sharing and not self.window  # sliding blocks are dropped: no reuse past them
        self.pool = BlockPool(self.n_blocks)
        self.swa_pool = BlockPool(n_swa)
        self.prefixes: OrderedDict[bytes, int] = OrderedDict()  # prefix key -> block, least recently used first
        self.kv_bytes_per_block = 2 * BLOCK_ROWS * cfg.n_kv_heads * cfg.head_dim * (2 if self.kv_type == "f16" else 4) * \
            (cfg.n_layers - len(model.sliding_layers))
        # the C cache; the model frees it with its sessions if it is closed first
        self._seq = None
        self._closed = False
        self._running = False
        with model._lock:
            if model._closed:
                raise ClosedError("the model was closed")
            out = ffi.new("pyllm_cache **")
            check(lib.pyllm_cache_new(model._model, self.n_blocks, n_swa, BLOCK_ROWS, self.n_ctx, self.max_seqs,
                                      self.n_batch, self.n_threads, KV_TYPES[self.kv_type], out),
                  "creating a paged KV cache")
            self._seq = out[0]
            model._sessions.add(self)

    # --------------------------------------------------------------------------------------------
    # Blocks

    def available(self) -> int:
        """Blocks that can be had now: free ones and registered prefixes no sequence holds."""
        return len(self.pool.free) + self.pool.idle

    def blocks_for(self, n_tokens: int) -> int:
        """Blocks of the full layers that n_tokens positions take."""
        return -(-n_tokens // BLOCK_ROWS)

    def _take(self) -> int:
        if not self.pool.free:  # evict the least recently used prefix that no sequence holds
            for key, block in self.prefixes.items():
                if self.pool.refs[block] == 1:
                    del self.prefixes[key]
                    self.pool.unregister(block)
                    break
        if not self.pool.free:
            raise ContextFullError("the paged KV cache has no free block")
        return self.pool.take()

    def open(self, prompt: Sequence[int]) -> tuple[CachedSequence, int]:
        """A new sequence for a prompt, holding the longest registered prefix of it (whole blocks,
        never the prompt's last token, whose logits must be computed); returns it and how many
        prompt tokens it already holds."""
        seq = CachedSequence()
        if self.prefix_sharing:
            key = b""
            for end in range(BLOCK_ROWS, len(prompt), BLOCK_ROWS):
                key = _chain(key, prompt[end - BLOCK_ROWS:end])
                block = self.prefixes.get(key)
                if block is None:
                    break
                self.prefixes.move_to_end(key)
                self.pool.hold(block)
                seq.blocks.append(block)
                seq.keys.append(key)
            seq.tokens = list(prompt[:len(seq.blocks) * BLOCK_ROWS])
        seq.swa_blocks = [-1] * len(seq.blocks)
        return seq, len(seq.tokens)

    def fork(self, parent: CachedSequence) -> CachedSequence:
        """A sequence that continues from everything the parent holds, sharing its blocks."""
        if self.window:
            raise ValueError("sequences of a model with sliding-window layers cannot be forked")
        for block in parent.blocks:
            self.pool.hold(block)
        return CachedSequence(list(parent.tokens), list(parent.blocks), list(parent.swa_blocks), list(parent.keys))

    def close(self, seq: CachedSequence) -> None:
        """Return a sequence's blocks (registered prefixes stay while the pool has room)."""
        if seq.closed:
            return
        seq.closed = True
        for block in seq.blocks:
            self.pool.drop(block)
        for block in seq.swa_blocks:
            if block >= 0:
                self.swa_pool.drop(block)
        seq.blocks, seq.swa_blocks = [], []

    def _make_room(self, seq: CachedSequence, first: int, end: int) -> None:
        """Blocks for positions first..end-1 of a sequence: new ones where it has none, a private
        copy of a shared block it is about to write into; sliding blocks out of the window back."""
        for b in range(first // BLOCK_ROWS, -(-end // BLOCK_ROWS)):
            if b < len(seq.blocks):
                if self.pool.refs[seq.blocks[b]] > 1:  # shared: copy on write
                    block = self._take()
                    check(lib.pyllm_cache_copy_block(self._seq, 0, seq.blocks[b], block), "copying a cache block")
                    self.pool.drop(seq.blocks[b])
                    seq.blocks[b] = block
                    del seq.keys[b:]
            else:
                seq.blocks.append(self._take())
        if self.window:
            keep_from = max(0, first - self.window + 1)
            for b in range(len(seq.swa_blocks)):
                if (b + 1) * BLOCK_ROWS <= keep_from and seq.swa_blocks[b] >= 0:
                    self.swa_pool.drop(seq.swa_blocks[b])
                    seq.swa_blocks[b] = -1
            while len(seq.swa_blocks) < len(seq.blocks):
                seq.swa_blocks.append(-1)
            for b in range(keep_from // BLOCK_ROWS, -(-end // BLOCK_ROWS)):
                if seq.swa_blocks[b] < 0:
                    seq.swa_blocks[b] = self.swa_pool.take()

    def _register(self, seq: CachedSequence) -> None:
        """Register the sequence's newly filled blocks as prefixes others can share."""
        if not self.prefix_sharing:
            return
        while (len(seq.keys) + 1) * BLOCK_ROWS <= len(seq.tokens):
            b = len(seq.keys)
            key = _chain(seq.keys[-1] if seq.keys else b"", seq.tokens[b * BLOCK_ROWS:(b + 1) * BLOCK_ROWS])
            seq.keys.append(key)
            if key not in self.prefixes:
                self.prefixes[key] = seq.blocks[b]
                self.pool.register(seq.blocks[b])

    # --------------------------------------------------------------------------------------------
    # The forward pass

    def forward(self, work: Sequence[tuple[CachedSequence, Sequence[int], bool]], hidden: bool = False) -> list:
        """Run one batch: for each (sequence, new tokens, want output) the tokens go after what the
        sequence holds. Returns, per entry, the logits after its last token (or, with hidden, the
        final normed hidden state of each of its tokens) when wanted, else None."""
        n = sum(len(tokens) for _, tokens, _ in work)
        if not work or n == 0 or len(work) > self.max_seqs or n > self.n_batch:
            raise ValueError(f"a batch holds 1..{self.n_batch} tokens of 1..{self.max_seqs} sequences")
        if len({id(seq) for seq, _, _ in work}) < len(work) or any(seq.closed for seq, _, _ in work):
            raise ValueError("a batch holds each open sequence once")
        cfg = self.model.config
        toks = np.empty(n, dtype=np.int32)
        pos = np.empty(n, dtype=np.int32)
        seqn = np.empty(n, dtype=np.int32)
        tables = np.full((len(work), self.table_len), -1, dtype=np.int32)
        swa = np.full((len(work), self.table_len), -1, dtype=np.int32) if self.window else None
        rows: list[int] = []
        at = 0
        for i, (seq, tokens, want) in enumerate(work):
            first = len(seq.tokens)
            if first + len(tokens) > self.n_ctx:
                raise ContextFullError(f"{first} + {len(tokens)} tokens do not fit in the context of {self.n_ctx}")
            self._make_room(seq, first, first + len(tokens))
            k = len(tokens)
            toks[at:at + k] = tokens
            pos[at:at + k] = np.arange(first, first + k)
            seqn[at:at + k] = i
            tables[i, :len(seq.blocks)] = seq.blocks
            if swa is not None:
                swa[i, :len(seq.swa_blocks)] = seq.swa_blocks
            if want:
                rows.extend(range(at, at + k) if hidden else [at + k - 1])
            at += k
        width = cfg.dim if hidden else cfg.vocab_size
        out = np.empty((len(rows), width), dtype=np.float32)
        out_rows = np.asarray(rows, dtype=np.int32)
        model = self.model
        c_model, c_cache = model._enter(self)
        try:
            code = lib.pyllm_cache_forward(
                c_model, c_cache, n, ffi.from_buffer("int32_t[]", toks), ffi.from_buffer("int32_t[]", pos),
                ffi.from_buffer("int32_t[]", seqn), len(work), ffi.from_buffer("int32_t[]", tables),
                ffi.from_buffer("int32_t[]", swa) if swa is not None else ffi.NULL, len(rows),
                ffi.from_buffer("int32_t[]", out_rows) if rows else ffi.NULL,
                ffi.from_buffer("float[]", out) if rows else ffi.NULL, int(hidden))
        finally:
            model._leave(self)
        check(code, "batched forward pass")
        results: list = []
        r = 0
        for seq, tokens, want in work:
            seq.tokens.extend(int(t) for t in tokens)
            self._register(seq)
            if want:
                k = len(tokens) if hidden else 1
                results.append(out[r:r + k] if hidden else out[r])
                r += k
            else:
                results.append(None)
        return results

    # --------------------------------------------------------------------------------------------

    def _free_sequence(self) -> None:
        """Free the C cache (the model's lock is held and no C call runs on it)."""
        self._closed = True
        cache, self._seq = self._seq, None
        if cache is not None:
            lib.pyllm_cache_free(cache)

    def free(self) -> None:
        """Free the C cache now, or as soon as a call running on it returns."""
        with self.model._lock:
            self._closed = True
            if not self._running:
                self._free_sequence()
