"""The files pyllm reads and writes: weights.bin (weights.py), GGUF (gguf.py), safetensors and Hugging
Face model directories (safetensors.py, hf_dir.py, tokenizer_json.py), SentencePiece models
(sentencepiece_model.py) and llama2.c checkpoints (llama2c.py). Each reader maps its file read-only
(mapped.py) and validates everything before handing out a byte of it."""
