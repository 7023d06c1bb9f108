"""Families pyllm refuses, by Hugging Face model_type / GGUF architecture name, with what each
needs that the decoder does not have: the refusal says so instead of 'unknown architecture'."""

UNSUPPORTED: dict[str, str] = {
    "gemma": "GELU MLP, (1 + w) RMSNorm and scaled embeddings",
    "gemma2": "GELU MLP, logit soft-capping and sliding-window layers",
    "gemma3": "a vision tower (Gemma3ForConditionalGeneration is multimodal; pyllm runs Gemma 3's text "
              "decoder, Gemma3ForCausalLM, model_type gemma3_text)",
    "gemma3n": "per-layer embeddings, AltUp and LAuReL blocks",
    "phi": "LayerNorm, GELU MLP and partial rotary embeddings",
    "phi2": "LayerNorm, GELU MLP and partial rotary embeddings",
    "gpt2": "LayerNorm, GELU MLP and learned position embeddings",
    "gpt_neox": "LayerNorm, parallel attention/MLP and partial rotary embeddings",
    "gptneox": "LayerNorm, parallel attention/MLP and partial rotary embeddings",
    "falcon": "LayerNorm and parallel attention/MLP",
    "mixtral": "mixture-of-experts MLP layers",
    "olmo2": "q/k RMSNorm and post-norm blocks",
}
