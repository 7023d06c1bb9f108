/* pyllm.h - the whole C API of the pyllm core.
 *
 * The block between the "cdef" markers is also read by the cffi build (pyllm/_build.py),
 * so the API is declared once. Everything the core needs comes in through these structs:
 * the C side validates only what it is told to; the Python loader validates files.
 */
#ifndef PYLLM_H
#define PYLLM_H

#include <stddef.h>
#include <stdint.h>

/* cdef begin */
#define PYLLM_API_VERSION 10

/* Error codes returned by every function that can fail (0 = success). */
enum pyllm_error {
    PYLLM_OK = 0,
    PYLLM_ERR_NOMEM = 1,    /* an allocation failed */
    PYLLM_ERR_ARG = 2,      /* an argument is out of range */
    PYLLM_ERR_TYPE = 3,     /* unsupported weight type or shape for that type */
    PYLLM_ERR_CONTEXT = 4,  /* the tokens do not fit in the sequence's KV cache */
    PYLLM_ERR_ISA = 5,      /* the requested kernels are not available on this CPU/build */
    PYLLM_ERR_REWIND = 6,   /* the sequence no longer holds the keys a pass at that position needs
                               (sliding-window layers dropped them): start again from position 0 */
    PYLLM_ERR_BLOCK = 7     /* a block table names a block outside the paged cache */
};

/* How a KV cache stores keys and values: as floats, or as IEEE halves (half the memory; the
 * attention reads them back as floats). */
enum pyllm_kv_type {
    PYLLM_KV_F32 = 0,
    PYLLM_KV_F16 = 1
};

/* Weight types; the numbers and block layouts are GGUF's (ggml_type). */
enum pyllm_type {
    PYLLM_TYPE_F32 = 0,
    PYLLM_TYPE_F16 = 1,
    PYLLM_TYPE_Q4_0 = 2,    /* 32 values: f16 d, 16 bytes of nibbles; value (q - 8) * d */
    PYLLM_TYPE_Q4_1 = 3,    /* 32 values: f16 d, f16 m, 16 bytes of nibbles; value q * d + m */
    PYLLM_TYPE_Q5_0 = 6,    /* 32 values: f16 d, 32 5th bits, 16 bytes of nibbles; value (q - 16) * d */
    PYLLM_TYPE_Q5_1 = 7,    /* 32 values: f16 d, f16 m, 32 5th bits, 16 bytes of nibbles; q * d + m */
    PYLLM_TYPE_Q8_0 = 8,    /* 32 values: f16 d, 32 int8; value q * d */
    PYLLM_TYPE_Q4_K = 12,   /* 256 values in 8 sub-blocks of 32 with 6-bit scales and mins: 144 bytes */
    PYLLM_TYPE_Q5_K = 13,   /* Q4_K with a fifth bit per value: 176 bytes */
    PYLLM_TYPE_Q6_K = 14    /* 256 values in 16 sub-blocks of 16 with int8 scales: 210 bytes */
};

/* Kernel families; pyllm_isa_best() says which is fastest here. */
enum pyllm_isa {
    PYLLM_ISA_PORTABLE = 0, /* plain C, everywhere */
    PYLLM_ISA_AVX2 = 1,     /* x86-64 with AVX2 + FMA + F16C */
    PYLLM_ISA_NEON = 2,     /* aarch64 */
    PYLLM_ISA_AVX512 = 3    /* x86-64 with AVX2 and AVX-512 F/BW/VL/VNNI */
};

/* A 2-D weight matrix in row-major order: rows = output features, cols = input features. */
typedef struct {
    int type;               /* enum pyllm_type */
    int rows;
    int cols;
    const void *data;       /* rows * row_bytes(type, cols) bytes */
} pyllm_tensor;

typedef struct {
    int dim;                /* residual stream width */
    int hidden_dim;         /* SwiGLU inner width */
    int n_layers;
    int n_heads;            /* query heads */
    int n_kv_heads;         /* key/value heads (grouped-query attention when < n_heads) */
    int head_dim;
    int vocab_size;
    int rope_dim;           /* leading dimensions of each q/k head that RoPE rotates (even, 2..head_dim;
                               head_dim unless the rotary embedding is partial, as Phi-4-mini's) */
    int rope_long_ctx;      /* a sequence of more positions than this rotates by rope_freq_long
                               (LongRoPE); 0: no long table */
    float rope_theta;       /* RoPE base; rotation of adjacent pairs (x[2i], x[2i+1]) */
    float rope_attn_factor; /* scales cos and sin, so q.k by its square (YaRN's mscale); 1 without */
    float norm_eps;         /* RMSNorm epsilon */
    float embed_scale;      /* token embeddings are multiplied by it (Gemma: sqrt(dim)); 1 without */
    float attn_scale;       /* q.k is multiplied by it; 0: 1 / sqrt(head_dim) */
    int ffn_gelu;           /* nonzero: the MLP gate's activation is GELU (tanh approximation), else SiLU */
    int sliding_window;     /* positions a query of a sliding layer sees (itself and the window - 1
                               before it); 0 if no layer slides */
} pyllm_config;

typedef struct {
    const float *attn_norm; /* (dim) */
    pyllm_tensor wq;        /* (n_heads * head_dim, dim) */
    pyllm_tensor wk;        /* (n_kv_heads * head_dim, dim) */
    pyllm_tensor wv;        /* (n_kv_heads * head_dim, dim) */
    const float *bq;        /* (n_heads * head_dim) or NULL */
    const float *bk;        /* (n_kv_heads * head_dim) or NULL */
    const float *bv;        /* (n_kv_heads * head_dim) or NULL */
    const float *q_norm;    /* (head_dim) RMSNorm weight of every query head before RoPE, or NULL */
    const float *k_norm;    /* (head_dim) RMSNorm weight of every key head before RoPE, or NULL */
    int no_rope;            /* nonzero: this layer's q and k are not rotated (a NoPE layer) */
    int sliding;            /* nonzero: a sliding-window layer (config sliding_window, rope_freq_swa) */
    pyllm_tensor wo;        /* (dim, n_heads * head_dim) */
    const float *post_attn_norm; /* (dim) RMSNorm weight of the attention output before the residual
                                    add (Gemma's sandwich norm), or NULL */
    const float *ffn_norm;  /* (dim) */
    pyllm_tensor w_gate;    /* (hidden_dim, dim) */
    pyllm_tensor w_up;      /* (hidden_dim, dim) */
    pyllm_tensor w_down;    /* (dim, hidden_dim) */
    const float *post_ffn_norm;  /* (dim) RMSNorm weight of the MLP output before the residual add, or NULL */
} pyllm_layer;

typedef struct {
    pyllm_tensor token_embd;    /* (vocab_size, dim) */
    const float *output_norm;   /* (dim) */
    pyllm_tensor output;        /* (vocab_size, dim); the same data as token_embd when tied */
    const float *rope_freq;     /* (rope_dim / 2) rotation frequency of each pair (RoPE scaling
                                   applied), or NULL: rope_theta^(-2i / rope_dim); copied */
    const float *rope_freq_long;/* (rope_dim / 2) frequencies of sequences longer than rope_long_ctx
                                   (LongRoPE's long factors), or NULL; copied */
    const float *rope_freq_swa; /* (rope_dim / 2) frequencies of the sliding layers, or NULL: the same
                                   as the others (Gemma 3's local layers have their own base); copied */
    const pyllm_layer *layers;  /* n_layers entries; copied by pyllm_model_new */
} pyllm_weights;

/* A model: the weights and what is derived from them once (config, rope frequencies, kernel
 * family). Never written after pyllm_model_new, so any number of threads may run sequences of one
 * model at the same time. */
typedef struct pyllm_model pyllm_model;
/* A sequence: the state of one conversation on a model (its KV cache, every scratch buffer of the
 * forward pass, its context length and thread count). One thread at a time may use a sequence. */
typedef struct pyllm_seq pyllm_seq;

/* A paged KV cache: pools of fixed-size blocks that many sequences share, and scratch for batches
 * of tokens from any of them. The caller keeps each sequence's block table (which block holds each
 * block_rows positions), so blocks can be shared between sequences (a common prompt prefix) and
 * returned when a sequence ends. One thread at a time may use a cache. */
typedef struct pyllm_cache pyllm_cache;

/* The fastest kernel family this CPU and build support. */
int pyllm_isa_best(void);
/* 1 if kernels of that family can run here, else 0. */
int pyllm_isa_available(int isa);
const char *pyllm_isa_name(int isa);
const char *pyllm_strerror(int code);
/* Bytes of one row of `cols` values of a weight type, or 0 if the type or length is not supported. */
size_t pyllm_row_bytes(int type, int cols);

/* Build a model over weights the caller keeps alive (they are not copied). The model must outlive
 * its sequences and the weights the model. */
int pyllm_model_new(const pyllm_config *config, const pyllm_weights *weights, int isa,
                    pyllm_model **out);
void pyllm_model_free(pyllm_model *model);

/* A new, empty sequence on a model: a KV cache of n_ctx positions (keys and values stored as
 * kv_type, enum pyllm_kv_type) and scratch buffers for n_threads threads. Sliding-window layers
 * keep only the last sliding_window - 1 positions and one batch in their cache, so their memory
 * does not grow with n_ctx. */
int pyllm_seq_new(const pyllm_model *model, int n_ctx, int n_threads, int kv_type, pyllm_seq **out);
void pyllm_seq_free(pyllm_seq *seq);
/* The earliest position after 0 at which pyllm_forward can continue the sequence: 0 (any
 * position) until sliding-window layers drop keys older than their window. A pass at a position
 * between 0 and this one fails with PYLLM_ERR_REWIND; position 0 always works. */
int pyllm_seq_min_resume(const pyllm_seq *seq);

/* Run n_tokens tokens of a sequence of `model` at cache positions pos .. pos+n_tokens-1 (earlier
 * positions must already be in its cache). Writes logits (vocab_size floats per row) for every
 * position when all_logits is nonzero, else for the last position only. */
int pyllm_forward(const pyllm_model *model, pyllm_seq *seq, const int32_t *tokens, int n_tokens,
                  int pos, float *logits, int all_logits);

/* A paged cache on a model: n_blocks blocks of block_rows positions for the full-attention layers
 * and n_swa_blocks for the sliding-window layers (each 0 when the model has no layers of that
 * kind); sequences of up to n_ctx positions, up to max_seqs of them in one batch, batches of up to
 * n_batch tokens, n_threads threads; keys and values stored as kv_type. */
int pyllm_cache_new(const pyllm_model *model, int n_blocks, int n_swa_blocks, int block_rows, int n_ctx,
                    int max_seqs, int n_batch, int n_threads, int kv_type, pyllm_cache **out);
void pyllm_cache_free(pyllm_cache *cache);
/* Run a batch of n_tokens tokens of n_seqs sequences: token t is at position pos[t] of sequence
 * seq[t] and attends over that sequence's positions up to pos[t] (earlier ones already in the
 * cache or earlier in this batch). tables holds n_seqs block tables of ceil(n_ctx / block_rows)
 * block numbers each, for the full-attention layers; swa_tables the same for the sliding layers
 * (NULL when the model has none), where only the blocks over a token's window are read. For each
 * of the n_out rows out_rows[i], out gets its logits (vocab_size floats), or with hidden nonzero
 * its final normed hidden state (dim floats). */
int pyllm_cache_forward(const pyllm_model *model, pyllm_cache *cache, int n_tokens, const int32_t *tokens,
                        const int32_t *pos, const int32_t *seq, int n_seqs, const int32_t *tables,
                        const int32_t *swa_tables, int n_out, const int32_t *out_rows, float *out, int hidden);
/* Copy block src to block dst of the pool of one kind of layer (0 full, 1 sliding): copy on write
 * of a block that several sequences share. */
int pyllm_cache_copy_block(pyllm_cache *cache, int kind, int src, int dst);

/* y (n, w.rows) = x (n, w.cols) @ W^T with the kernels of `isa`: the matmul the forward pass uses,
 * exposed for tests and benchmarks. With accumulate set, the product is added to y (as the forward
 * pass adds into the residual stream). */
int pyllm_matmul(int isa, const pyllm_tensor *w, const float *x, int n, float *y, int accumulate,
                 int n_threads);
/* pyllm_matmul with x's floats as they are, not quantized to 8 bits: the classifier's matmul.
 * PYLLM_ERR_TYPE for a weight type without such a kernel (only F32, F16 and Q8_0 have one). */
int pyllm_matmul_float(int isa, const pyllm_tensor *w, const float *x, int n, float *y, int accumulate,
                       int n_threads);
/* gate (n, cols) = silu(gate) * up with the kernels of `isa`: the SwiGLU step of the forward
 * pass, exposed for tests. */
int pyllm_swiglu(int isa, float *gate, const float *up, int n, int cols, int n_threads);
/* gate (n, cols) = gelu_tanh(gate) * up: the GELU-gated step (Gemma), exposed for tests. */
int pyllm_geglu(int isa, float *gate, const float *up, int n, int cols, int n_threads);
/* n values of a row of a weight type, as float32 (the inverse of the block encoding), with the
 * kernels of `isa` (every family gives the same floats). */
int pyllm_dequantize_row(int isa, int type, const void *src, float *dst, int n);
/* cdef end */

#endif
