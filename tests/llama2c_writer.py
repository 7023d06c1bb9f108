"""Writers of llama2.c checkpoints (legacy, version 1, version 2) and tokenizer.bin for test files,
from the formats as llama2.c defines them (export.py's legacy_export, version1_export and
version2_export, run.c's and runq.c's readers, tokenizer.py's export)."""
from __future__ import annotations

import struct

import numpy as np

from pyllm.formats.weights import expected_tensors
from pyllm.types import ModelConfig

MAGIC = 0x616B3432  # "ak42"


def random_weights(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights under our tensor names, scaled as tests/reference.py's models are."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_tensors(cfg).items():
        if len(shape) == 1:
            data = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            data = rng.standard_normal(shape) / np.sqrt(shape[-1]) * (3.0 if "token_embd" in name else 1.0)
        weights[name] = data.astype(np.float32)
    return weights


def quantize_groups(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """export.py's quantize_q80: symmetric int8 per group of the flattened tensor, scale = max|w| / 127,
    values rounded half to even (torch.round)."""
    groups = w.astype(np.float32).reshape(-1, group_size)
    scale = (np.abs(groups).max(axis=1) / np.float32(127.0)).astype(np.float32)
    q = np.round(groups / scale[:, None]).astype(np.int8)
    return q.reshape(-1), scale


def _params(cfg: ModelConfig, vocab_size: int) -> tuple[int, ...]:
    return (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, vocab_size, cfg.max_seq_len)


def _rope_tables(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """model.py's precompute_freqs_cis: (seq_len, head_size / 2) cos and sin, theta 10000."""
    hs = cfg.dim // cfg.n_heads
    freqs = 1.0 / 10000.0 ** (np.arange(0, hs, 2)[: hs // 2].astype(np.float32) / hs)
    angles = np.outer(np.arange(cfg.max_seq_len), freqs)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def write_checkpoint(path, w: dict[str, np.ndarray], cfg: ModelConfig, version: int,
                     group_size: int = 64) -> dict[str, np.ndarray]:
    """Write weights (our names) as a llama2.c checkpoint of `version` (0 = legacy); the classifier
    is shared when cfg.tied_embeddings. Returns the weights as the file holds them, in float64
    (version 2: each int8 value times its group's fp32 scale)."""
    L = cfg.n_layers
    emb = w["token_embd.weight"]

    def layers(kind: str) -> list[np.ndarray]:
        return [w[f"blk.{i}.{kind}.weight"] for i in range(L)]

    att_norms, ffn_norms = layers("attn_norm"), layers("ffn_norm")
    wq, wk, wv, wo = layers("attn_q"), layers("attn_k"), layers("attn_v"), layers("attn_output")
    w1, w2, w3 = layers("ffn_gate"), layers("ffn_down"), layers("ffn_up")
    cls = [] if cfg.tied_embeddings else [w["output.weight"]]
    stored = {name: x.astype(np.float64) for name, x in w.items()}

    if version == 0:
        vocab = cfg.vocab_size if cfg.tied_embeddings else -cfg.vocab_size  # the sign is the flag
        header = struct.pack("<7i", *_params(cfg, vocab))
        tensors = [emb, *att_norms, *wq, *wk, *wv, *wo, *ffn_norms, *w1, *w2, *w3, w["output_norm.weight"],
                   *_rope_tables(cfg), *cls]
        body = b"".join(np.ascontiguousarray(t, "<f4").tobytes() for t in tensors)
    else:
        header = struct.pack("<Ii7iB", MAGIC, version, *_params(cfg, cfg.vocab_size), int(cfg.tied_embeddings))
        if version == 2:
            header += struct.pack("<i", group_size)
        header += b"\0" * (256 - len(header))
        norms = [*att_norms, *ffn_norms, w["output_norm.weight"]]
        matrices = [emb, *wq, *wk, *wv, *wo, *w1, *w2, *w3, *cls]
        if version == 1:
            body = b"".join(np.ascontiguousarray(t, "<f4").tobytes() for t in norms + matrices)
        else:
            parts = [np.ascontiguousarray(t, "<f4").tobytes() for t in norms]
            for t in matrices:
                q, scale = quantize_groups(t, group_size)
                parts += [q.tobytes(), scale.astype("<f4").tobytes()]
            body = b"".join(parts)
            for name, x in w.items():
                if x.ndim == 2:
                    q, scale = quantize_groups(x, group_size)
                    deq = q.astype(np.float32).reshape(-1, group_size) * scale[:, None]
                    stored[name] = deq.reshape(x.shape).astype(np.float64)
    with open(path, "wb") as f:
        f.write(header + body)
    return stored


def write_tokenizer_bin(path, pieces: list[str], scores: list[float], bos_id: int = 1, eos_id: int = 2,
                        bytes_as_chars: bool = False) -> None:
    """Write SentencePiece pieces as tokenizer.py exports them: BOS as "\\n<s>\\n", EOS as
    "\\n</s>\\n", "▁" as a space. bytes_as_chars: as its first version did, a byte piece "<0xXX>"
    becomes the character chr(0xXX)."""
    texts = []
    for i, piece in enumerate(pieces):
        if i == bos_id:
            piece = "\n<s>\n"
        elif i == eos_id:
            piece = "\n</s>\n"
        elif bytes_as_chars and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            piece = chr(int(piece[3:5], 16))
        texts.append(piece.replace("\u2581", " ").encode("utf-8"))
    out = [struct.pack("<I", max(len(t) for t in texts))]
    for text, score in zip(texts, scores):
        out += [struct.pack("<fI", score, len(text)), text]
    with open(path, "wb") as f:
        f.write(b"".join(out))
