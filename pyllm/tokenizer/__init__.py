"""Text to token ids and back: byte-level BPE (bpe.py) and SentencePiece BPE (sentencepiece.py),
exact against the reference tokenizers, with pre-tokenizers (pretokenize.py) and a streaming decoder."""
from .tokenizer import StreamDecoder, Tokenizer

__all__ = ["Tokenizer", "StreamDecoder"]
