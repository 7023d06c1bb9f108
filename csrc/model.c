/* model.c - the forward pass of a llama-family decoder.
 *
 *   x = embed(tokens) * embed_scale
 *   for each layer:
 *       h = rmsnorm(x) ; q, k, v = h Wq (+bq), h Wk (+bk), h Wv (+bv)
 *       q, k = rmsnorm of each head (if q_norm, k_norm) ; rope(q, k)  (per-pair frequencies, the
 *                                   sliding layers' own if given, over the first rope_dim
 *                                   dimensions of each head; not in a NoPE layer)
 *       a = attention(q, K cache, V cache) Wo    (causal, grouped-query; a sliding layer sees
 *                                                 only the last sliding_window positions)
 *       x = x + a, or x + rmsnorm(a) with a post-attention norm (Gemma's sandwich norms)
 *       h = rmsnorm(x) ; f = (act(h Wgate) * (h Wup)) Wdown   (act: SiLU, or GELU in its tanh form)
 *       x = x + f, or x + rmsnorm(f) with a post-MLP norm
 *   logits = rmsnorm(x) Wout
 *
 * A batch of tokens goes through together (matrix x matrix). All threads run the whole pass
 * inside one OpenMP parallel region and meet at a barrier between steps, so a token costs one
 * region entry, not one per matmul. Weights are never copied: they stay where the caller mapped them.
 *
 * The model (weights, config, rope frequencies) is read-only once built; everything a pass
 * writes - the KV cache and the scratch buffers - belongs to a sequence, so any number of
 * sequences can run on one model at the same time, each from its own thread.
 *
 * A sliding layer's cache holds only what its queries can still see: the last sliding_window - 1
 * positions and one batch. When a batch would run past its end, the positions still visible are
 * moved to its start (every n_batch positions or so), and the sequence remembers the first
 * position it holds (swa_base); earlier positions cannot be resumed from (PYLLM_ERR_REWIND).
 */
#include "pyllm.h"
#include "kernels/kernels.h"
#include "threads.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BATCH 512 /* tokens per pass through the layers; longer inputs go in chunks */

struct pyllm_model {
    pyllm_config c;
    pyllm_weights w;
    pyllm_layer *layers;  /* our copy of the caller's layer table */
    int isa;
    float *rope_freq;     /* (rope_dim / 2) rotation frequency of each pair (given, or from theta) */
    float *rope_freq_long;/* (rope_dim / 2) the same for sequences longer than rope_long_ctx, or NULL */
    float *rope_freq_swa; /* (rope_dim / 2) the sliding layers' frequencies, or NULL: rope_freq */
};

struct pyllm_seq {
    const pyllm_model *m; /* the model this sequence's cache and buffers are shaped for */
    int n_ctx;            /* positions in the KV cache: the most tokens the sequence can hold */
    int n_threads;
    int n_batch;          /* rows of the scratch buffers below */
    const float *rope_freq; /* the model's frequencies for a context of n_ctx (LongRoPE: short or long) */
    float *rope_cos;      /* (2, n_batch, rope_dim / 2) cos and sin of the current batch's angles, */
    float *rope_sin;      /* shared by every head and layer: [0] full layers, [1] sliding ones */
    float *key_cache;     /* (cache rows of every layer, kv_dim): a full layer n_ctx rows, */
    float *value_cache;   /* a sliding one swa_rows, from row layer_row[l] */
    size_t *layer_row;    /* (n_layers) first cache row of each layer */
    int swa_rows;         /* cache rows of a sliding layer: min(n_ctx, sliding_window - 1 + n_batch) */
    int swa_base;         /* the position a sliding layer's cache row 0 holds */
    float *x;             /* (n_batch, dim) residual stream */
    float *xb2;           /* (n_batch, dim) attention or MLP output before its post-norm */
    float *xb;            /* (n_batch, max(dim, q_dim)) normalized input, then attention output */
    float *q;             /* (n_batch, q_dim) queries */
    float *hb;            /* (n_batch, hidden_dim) gate, then silu(gate) * up */
    float *hb2;           /* (n_batch, hidden_dim) up */
    block_q8x *q8x;       /* (n_batch, max width / QK8X) current matmul input, quantized for the */
    block_q8k *q8k;       /* (n_batch, max width / QK_K)  32-value types and for the K-quants */
    float *scores;        /* (n_threads, attend_heads * n_ctx) attention scratch */
};

const char *pyllm_strerror(int code) {
    switch (code) {
    case PYLLM_OK: return "success";
    case PYLLM_ERR_NOMEM: return "out of memory";
    case PYLLM_ERR_ARG: return "invalid argument";
    case PYLLM_ERR_TYPE: return "unsupported weight type or shape";
    case PYLLM_ERR_CONTEXT: return "the tokens do not fit in the context";
    case PYLLM_ERR_ISA: return "kernels not available on this CPU";
    case PYLLM_ERR_REWIND: return "the sliding-window layers no longer hold the keys needed at that position";
    default: return "unknown error";
    }
}

static void rows_share(int n, int ith, int nth, int *lo, int *hi) {
    int chunk = (n + nth - 1) / nth;
    *lo = ith * chunk < n ? ith * chunk : n;
    *hi = *lo + chunk < n ? *lo + chunk : n;
}

/* ------------------------------------------------------------------------------------------ */
/* The steps of the forward pass. Each does thread ith's share of the work. */

/* A set of activation formats (enum kern_act), one bit each: those the matmuls reading one input
 * multiply against. */
#define ACT_BIT(act) (1u << (act))
#define QUANTIZED_ACTS (ACT_BIT(KERN_ACT_Q8X) | ACT_BIT(KERN_ACT_Q8K))

static unsigned acts_of(const pyllm_tensor *a, const pyllm_tensor *b, const pyllm_tensor *c) {
    return ACT_BIT(kern_type_act(a->type)) | (b ? ACT_BIT(kern_type_act(b->type)) : 0u) |
           (c ? ACT_BIT(kern_type_act(c->type)) : 0u);
}

/* Rows [t0, t0 + n) of a matmul input (cols floats per row) quantized into the sequence's buffer of
 * each quantized format in acts, split among threads. */
static void quantize_input(int isa, pyllm_seq *s, const float *x, int t0, int n, int cols,
                           unsigned acts, int ith, int nth) {
    const float *rows = x + (size_t)t0 * cols;
    if (acts & ACT_BIT(KERN_ACT_Q8X))
        kern_quantize_rows(isa, KERN_ACT_Q8X, rows, n, cols, s->q8x + (size_t)t0 * (cols / QK8X), ith, nth);
    if (acts & ACT_BIT(KERN_ACT_Q8K))
        kern_quantize_rows(isa, KERN_ACT_Q8K, rows, n, cols, s->q8k + (size_t)t0 * (cols / QK_K), ith, nth);
}

/* out = x / rms(x) * weight for n rows; each row then quantized into the formats in acts. */
static void rmsnorm_rows(int isa, pyllm_seq *s, float *out, const float *x, const float *weight,
                         int n, int dim, float eps, unsigned acts, int ith, int nth) {
    int lo, hi;
    rows_share(n, ith, nth, &lo, &hi);
    for (int t = lo; t < hi; t++) {
        const float *xt = x + (size_t)t * dim;
        float *ot = out + (size_t)t * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xt[i] * xt[i];
        float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int i = 0; i < dim; i++) ot[i] = xt[i] * scale * weight[i];
        quantize_input(isa, s, out, t, 1, dim, acts, 0, 1);
    }
}

/* x += rmsnorm(y) * weight for n rows of dim values (a post-norm before the residual add). */
static void add_rmsnorm_rows(float *x, const float *y, const float *weight, int n, int dim, float eps,
                             int ith, int nth) {
    int lo, hi;
    rows_share(n, ith, nth, &lo, &hi);
    for (int t = lo; t < hi; t++) {
        const float *yt = y + (size_t)t * dim;
        float *xt = x + (size_t)t * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)yt[i] * yt[i];
        float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int i = 0; i < dim; i++) xt[i] += yt[i] * scale * weight[i];
    }
}

/* cos and sin of the rotation angles (pos + t) * freq[i] of the batch's n positions, times the
 * attention factor (exactly 1 unless the RoPE scaling sets one). */
static void rope_angles(const pyllm_model *m, pyllm_seq *s, int n, int pos, int ith, int nth) {
    const int half = m->c.rope_dim / 2;
    int lo, hi;
    rows_share(n, ith, nth, &lo, &hi);
    for (int set = 0; set < (m->rope_freq_swa ? 2 : 1); set++) {
        const float *freq = set ? m->rope_freq_swa : s->rope_freq;
        size_t at = (size_t)set * s->n_batch * half;
        for (int t = lo; t < hi; t++)
            for (int i = 0; i < half; i++) {
                float angle = (float)(pos + t) * freq[i];
                s->rope_cos[at + (size_t)t * half + i] = cosf(angle) * m->c.rope_attn_factor;
                s->rope_sin[at + (size_t)t * half + i] = sinf(angle) * m->c.rope_attn_factor;
            }
    }
}

/* Add the optional bias, normalize each head by the optional per-head RMSNorm weight (Qwen3's
 * q_norm / k_norm), and rotate adjacent pairs of each head's first rope_dim dimensions by the
 * batch's angles (the sliding layers' own set when they have one) unless the layer has no
 * positional encoding (no_rope). */
static void bias_norm_rope(const pyllm_model *m, const pyllm_seq *s, float *v, const float *bias,
                           const float *norm, const pyllm_layer *L, int n, int n_heads, int ith, int nth) {
    const int head_dim = m->c.head_dim, half = m->c.rope_dim / 2, no_rope = L->no_rope;
    const size_t set = L->sliding && m->rope_freq_swa ? (size_t)s->n_batch * half : 0;
    int lo, hi;
    rows_share(n * n_heads, ith, nth, &lo, &hi);
    for (int th = lo; th < hi; th++) {
        int t = th / n_heads, h = th % n_heads;
        float *vh = v + (size_t)t * n_heads * head_dim + (size_t)h * head_dim;
        if (bias)
            for (int i = 0; i < head_dim; i++) vh[i] += bias[h * head_dim + i];
        if (norm) {
            double ss = 0.0;
            for (int i = 0; i < head_dim; i++) ss += (double)vh[i] * vh[i];
            float scale = 1.0f / sqrtf((float)(ss / head_dim) + m->c.norm_eps);
            for (int i = 0; i < head_dim; i++) vh[i] = vh[i] * scale * norm[i];
        }
        for (int i = 0; i < half && !no_rope; i++) {
            float c = s->rope_cos[set + (size_t)t * half + i], sn = s->rope_sin[set + (size_t)t * half + i];
            float a = vh[2 * i], b = vh[2 * i + 1];
            vh[2 * i] = a * c - b * sn;
            vh[2 * i + 1] = a * sn + b * c;
        }
    }
}

static void add_bias(float *v, const float *bias, int n, int width, int ith, int nth) {
    int lo, hi;
    rows_share(n, ith, nth, &lo, &hi);
    for (int t = lo; t < hi; t++)
        for (int i = 0; i < width; i++) v[(size_t)t * width + i] += bias[i];
}

/* Query heads one kern_attend call needs scratch for: a key/value head's group, at most
 * KERN_ATTEND_HEADS at a time. */
static int attend_heads(const pyllm_config *c) {
    int group = c->n_heads / c->n_kv_heads;
    return group < KERN_ATTEND_HEADS ? group : KERN_ATTEND_HEADS;
}

/* Keys a query at position p reads: p + 1, at most the window (0: no window). */
static int keys_seen(int p, int window) {
    return window > 0 && p + 1 > window ? window : p + 1;
}

/* Work of the first i attention items, token-major with per_token items per token: a query at
 * position p reads keys_seen(p) cached positions. */
static double attention_work(long i, int per_token, int pos, int window) {
    long t = i / per_token, rest = i % per_token;
    long grow = window > 0 ? window - 1 - pos : t; /* tokens before the window is full */
    grow = grow < 0 ? 0 : grow > t ? t : grow;
    double whole = (double)grow * (pos + 1) + (double)grow * (grow - 1) / 2 + (double)(t - grow) * window;
    return (double)per_token * whole + (double)rest * keys_seen(pos + (int)t, window);
}

/* Thread ith's contiguous [lo, hi) share of the n * per_token attention items, cut so that every
 * thread gets the same work: later queries of a prompt read more of the cache than earlier ones. */
static void attention_share(int n, int per_token, int pos, int window, int ith, int nth, int *lo, int *hi) {
    const long items = (long)n * per_token;
    const double total = attention_work(items, per_token, pos, window);
    long cut[2];
    for (int e = 0; e < 2; e++) { /* first item whose preceding work reaches (ith + e) / nth of the total */
        double target = total * (ith + e) / nth;
        long a = 0, b = items;
        while (a < b) {
            long mid = a + (b - a) / 2;
            if (attention_work(mid, per_token, pos, window) < target) a = mid + 1; else b = mid;
        }
        cut[e] = ith + e == nth ? items : a;
    }
    *lo = (int)cut[0];
    *hi = (int)cut[1];
}

/* Causal attention for n queries at positions pos .. pos+n-1 over the cache; a query of a
 * sliding layer sees the last sliding_window positions, itself included (transformers' and
 * llama.cpp's mask: key j is seen from query i when i - window < j <= i). A prompt is split
 * by (token, key/value head), each item taking all the query heads that share that key/value
 * head, so the cache is read once for them; a single token by query head, so that threads share
 * its heads evenly (9 heads split 5:4 between two threads; 3 key/value heads would split 2:1). */
static void attention(const pyllm_model *m, pyllm_seq *s, int layer, int n, int pos, int ith,
                      int nth) {
    const pyllm_config *c = &m->c;
    int kv_dim = c->n_kv_heads * c->head_dim, q_dim = c->n_heads * c->head_dim;
    int group = c->n_heads / c->n_kv_heads; /* query heads sharing one key/value head */
    int per_item = n == 1 ? 1 : group, items = c->n_heads / per_item; /* query heads per item, items per token */
    int window = m->layers[layer].sliding ? c->sliding_window : 0;
    int base = window ? s->swa_base : 0; /* the position of cache row 0 */
    const float *keys = s->key_cache + s->layer_row[layer] * kv_dim;
    const float *values = s->value_cache + s->layer_row[layer] * kv_dim;
    float scale = c->attn_scale > 0.0f ? c->attn_scale : 1.0f / sqrtf((float)c->head_dim);
    int lo, hi;
    attention_share(n, items, pos, window, ith, nth, &lo, &hi);
    for (int it = lo; it < hi; it++) {
        int t = it / items, h = it % items * per_item, kvh = h / group;
        int seen = keys_seen(pos + t, window), first = pos + t + 1 - seen;
        size_t head = (size_t)h * c->head_dim, at = (size_t)(first - base) * kv_dim + (size_t)kvh * c->head_dim;
        kern_attend(m->isa, s->q + (size_t)t * q_dim + head, per_item, keys + at, values + at, kv_dim,
                    seen, c->head_dim, scale, s->scores + (size_t)ith * attend_heads(c) * s->n_ctx,
                    s->xb + (size_t)t * q_dim + head);
    }
}

static void embed(const pyllm_model *m, pyllm_seq *s, const int32_t *tokens, int n, int ith, int nth) {
    const pyllm_tensor *e = &m->w.token_embd;
    size_t rb = kern_row_bytes(e->type, e->cols);
    int lo, hi;
    rows_share(n, ith, nth, &lo, &hi);
    for (int t = lo; t < hi; t++) {
        float *xt = s->x + (size_t)t * m->c.dim;
        kern_dequantize_row(m->isa, e->type, (const uint8_t *)e->data + (size_t)tokens[t] * rb, xt, m->c.dim);
        if (m->c.embed_scale != 1.0f)
            for (int i = 0; i < m->c.dim; i++) xt[i] *= m->c.embed_scale;
    }
}

/* One batch of n <= n_batch tokens; logits for the last row, or all rows, or none (NULL). */
static void forward_batch(const pyllm_model *m, pyllm_seq *s, const int32_t *tokens, int n, int pos,
                          float *logits, int all_logits) {
    const pyllm_config *c = &m->c;
    const int dim = c->dim, hidden = c->hidden_dim, isa = m->isa;
    const int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    /* the two matmul inputs, as floats and quantized (as the weights reading them need) */
    const kern_input xb = {s->xb, s->q8x, s->q8k}, hb = {s->hb, s->q8x, s->q8k};

#pragma omp parallel num_threads(s->n_threads)
    {
        const int ith = thread_id(), nth = thread_count();
        embed(m, s, tokens, n, ith, nth);
        rope_angles(m, s, n, pos, ith, nth);
        BARRIER;
        for (int l = 0; l < c->n_layers; l++) {
            const pyllm_layer *L = &m->layers[l];
            size_t row = s->layer_row[l] + (size_t)(pos - (L->sliding ? s->swa_base : 0)); /* pos's cache row */
            float *k = s->key_cache + row * kv_dim;   /* (n, kv_dim) */
            float *v = s->value_cache + row * kv_dim; /* (n, kv_dim) */
            const unsigned acts_qkv = acts_of(&L->wq, &L->wk, &L->wv), acts_o = acts_of(&L->wo, NULL, NULL);
            const unsigned acts_ffn = acts_of(&L->w_gate, &L->w_up, NULL), acts_down = acts_of(&L->w_down, NULL, NULL);

            /* attention block: q, k, v from the normalized input; new keys/values go to the cache */
            rmsnorm_rows(isa, s, s->xb, s->x, L->attn_norm, n, dim, c->norm_eps, acts_qkv, ith, nth);
            BARRIER;
            kern_matmul(isa, &L->wq, &xb, n, s->q, 0, ith, nth);
            kern_matmul(isa, &L->wk, &xb, n, k, 0, ith, nth);
            kern_matmul(isa, &L->wv, &xb, n, v, 0, ith, nth);
            BARRIER;
            bias_norm_rope(m, s, s->q, L->bq, L->q_norm, L, n, c->n_heads, ith, nth);
            bias_norm_rope(m, s, k, L->bk, L->k_norm, L, n, c->n_kv_heads, ith, nth);
            if (L->bv) add_bias(v, L->bv, n, kv_dim, ith, nth);
            BARRIER;
            attention(m, s, l, n, pos, ith, nth); /* -> xb (n, q_dim) */
            BARRIER;
            if (acts_o & QUANTIZED_ACTS) {
                quantize_input(isa, s, s->xb, 0, n, q_dim, acts_o, ith, nth);
                BARRIER;
            }
            if (L->post_attn_norm) { /* x += rmsnorm(attn Wo) */
                kern_matmul(isa, &L->wo, &xb, n, s->xb2, 0, ith, nth);
                BARRIER;
                add_rmsnorm_rows(s->x, s->xb2, L->post_attn_norm, n, dim, c->norm_eps, ith, nth);
            } else {
                kern_matmul(isa, &L->wo, &xb, n, s->x, 1, ith, nth); /* x += attn Wo */
            }
            BARRIER;

            /* feed-forward block: SwiGLU or GeGLU */
            rmsnorm_rows(isa, s, s->xb, s->x, L->ffn_norm, n, dim, c->norm_eps, acts_ffn, ith, nth);
            BARRIER;
            kern_matmul(isa, &L->w_gate, &xb, n, s->hb, 0, ith, nth);
            kern_matmul(isa, &L->w_up, &xb, n, s->hb2, 0, ith, nth);
            BARRIER;
            if (c->ffn_gelu) kern_geglu(isa, s->hb, s->hb2, n, hidden, ith, nth); /* hb = gelu(hb) * hb2 */
            else kern_swiglu(isa, s->hb, s->hb2, n, hidden, ith, nth);             /* hb = silu(hb) * hb2 */
            BARRIER;
            if (acts_down & QUANTIZED_ACTS) {
                quantize_input(isa, s, s->hb, 0, n, hidden, acts_down, ith, nth);
                BARRIER;
            }
            if (L->post_ffn_norm) { /* x += rmsnorm(ffn) */
                kern_matmul(isa, &L->w_down, &hb, n, s->xb2, 0, ith, nth);
                BARRIER;
                add_rmsnorm_rows(s->x, s->xb2, L->post_ffn_norm, n, dim, c->norm_eps, ith, nth);
            } else {
                kern_matmul(isa, &L->w_down, &hb, n, s->x, 1, ith, nth); /* x += ffn */
            }
            BARRIER;
        }

        /* classifier, only for the rows whose logits are wanted */
        if (logits) {
            int first = all_logits ? 0 : n - 1, n_out = n - first;
            rmsnorm_rows(isa, s, s->xb, s->x + (size_t)first * dim, m->w.output_norm, n_out, dim,
                         c->norm_eps, acts_of(&m->w.output, NULL, NULL), ith, nth);
            BARRIER;
            kern_matmul(isa, &m->w.output, &xb, n_out, logits, 0, ith, nth);
        }
    }
}

/* Make room in the sliding layers' caches for n positions from pos: when they would run past the
 * end, move the positions the batch's queries still see (from pos - window + 1) to row 0. */
static void slide_caches(const pyllm_model *m, pyllm_seq *s, int n, int pos) {
    const int window = m->c.sliding_window;
    if (!window || pos + n - s->swa_base <= s->swa_rows) return;
    int keep_from = pos - window + 1 > s->swa_base ? pos - window + 1 : s->swa_base;
    size_t kv_dim = (size_t)m->c.n_kv_heads * m->c.head_dim, skip = (size_t)(keep_from - s->swa_base);
    size_t keep = (size_t)(pos - keep_from);
    for (int l = 0; l < m->c.n_layers; l++) {
        if (!m->layers[l].sliding) continue;
        float *k = s->key_cache + s->layer_row[l] * kv_dim, *v = s->value_cache + s->layer_row[l] * kv_dim;
        memmove(k, k + skip * kv_dim, keep * kv_dim * sizeof(float));
        memmove(v, v + skip * kv_dim, keep * kv_dim * sizeof(float));
    }
    s->swa_base = keep_from;
}

int pyllm_seq_min_resume(const pyllm_seq *s) {
    if (!s || s->swa_base == 0) return 0;
    return s->swa_base + s->m->c.sliding_window - 1;
}

int pyllm_forward(const pyllm_model *m, pyllm_seq *s, const int32_t *tokens, int n_tokens, int pos,
                  float *logits, int all_logits) {
    if (!m || !s || s->m != m || !tokens || !logits || n_tokens < 1 || pos < 0) return PYLLM_ERR_ARG;
    if (n_tokens > s->n_ctx - pos) return PYLLM_ERR_CONTEXT;
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= m->c.vocab_size) return PYLLM_ERR_ARG;
    if (pos == 0) s->swa_base = 0; /* a fresh start: nothing earlier is needed */
    if (pos > 0 && pos < pyllm_seq_min_resume(s)) return PYLLM_ERR_REWIND;
    for (int done = 0; done < n_tokens; done += s->n_batch) {
        int n = n_tokens - done < s->n_batch ? n_tokens - done : s->n_batch;
        slide_caches(m, s, n, pos + done);
        float *out = all_logits ? logits + (size_t)done * m->c.vocab_size
                                : (done + n == n_tokens ? logits : NULL);
        forward_batch(m, s, tokens + done, n, pos + done, out, all_logits);
    }
    return PYLLM_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Construction: the model once, then any number of sequences on it */

static int tensor_ok(const pyllm_tensor *t, int rows, int cols) {
    return t->data && t->rows == rows && t->cols == cols && kern_row_bytes(t->type, cols) > 0;
}

static int check_model(const pyllm_config *c, const pyllm_weights *w) {
    if (c->dim < 1 || c->hidden_dim < 1 || c->n_layers < 1 || c->n_heads < 1 ||
        c->n_kv_heads < 1 || c->head_dim < 2 || c->head_dim % 2 || c->vocab_size < 1 ||
        c->n_heads % c->n_kv_heads || c->rope_dim < 2 || c->rope_dim > c->head_dim || c->rope_dim % 2 ||
        c->rope_long_ctx < 0 || !(c->rope_theta > 0.0f) || !(c->rope_attn_factor > 0.0f) ||
        !(c->norm_eps >= 0.0f) || !(c->embed_scale > 0.0f) || !(c->attn_scale >= 0.0f) ||
        c->sliding_window < 0)
        return PYLLM_ERR_ARG;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    if (!w->output_norm || !w->layers || !tensor_ok(&w->token_embd, c->vocab_size, c->dim) ||
        !tensor_ok(&w->output, c->vocab_size, c->dim))
        return PYLLM_ERR_TYPE;
    for (int l = 0; l < c->n_layers; l++) {
        const pyllm_layer *L = &w->layers[l];
        if (!L->attn_norm || !L->ffn_norm || !tensor_ok(&L->wq, q_dim, c->dim) ||
            !tensor_ok(&L->wk, kv_dim, c->dim) || !tensor_ok(&L->wv, kv_dim, c->dim) ||
            !tensor_ok(&L->wo, c->dim, q_dim) || !tensor_ok(&L->w_gate, c->hidden_dim, c->dim) ||
            !tensor_ok(&L->w_up, c->hidden_dim, c->dim) ||
            !tensor_ok(&L->w_down, c->dim, c->hidden_dim))
            return PYLLM_ERR_TYPE;
        if (L->sliding && c->sliding_window < 1) return PYLLM_ERR_ARG;
    }
    return PYLLM_OK;
}

void pyllm_model_free(pyllm_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->rope_freq);
    free(m->rope_freq_long);
    free(m->rope_freq_swa);
    free(m);
}

int pyllm_model_new(const pyllm_config *c, const pyllm_weights *w, int isa, pyllm_model **out) {
    if (!c || !w || !out) return PYLLM_ERR_ARG;
    *out = NULL;
    if (!kern_isa_available(isa)) return PYLLM_ERR_ISA;
    int err = check_model(c, w);
    if (err) return err;

    pyllm_model *m = calloc(1, sizeof *m);
    if (!m) return PYLLM_ERR_NOMEM;
    m->c = *c;
    m->w = *w;
    m->isa = isa;
    m->layers = malloc((size_t)c->n_layers * sizeof *m->layers);
    const size_t pairs = (size_t)c->rope_dim / 2;
    m->rope_freq = malloc(pairs * sizeof(float));
    m->rope_freq_long = w->rope_freq_long ? malloc(pairs * sizeof(float)) : NULL;
    m->rope_freq_swa = w->rope_freq_swa ? malloc(pairs * sizeof(float)) : NULL;
    if (!m->layers || !m->rope_freq || (w->rope_freq_long && !m->rope_freq_long) ||
        (w->rope_freq_swa && !m->rope_freq_swa)) {
        pyllm_model_free(m);
        return PYLLM_ERR_NOMEM;
    }
    memcpy(m->layers, w->layers, (size_t)c->n_layers * sizeof *m->layers);
    m->w.layers = m->layers;
    /* frequency of pair i: given (a scaled RoPE), else theta^(-2i / rope_dim) rounded to float32 */
    if (w->rope_freq)
        memcpy(m->rope_freq, w->rope_freq, pairs * sizeof(float));
    else
        for (int i = 0; i < c->rope_dim / 2; i++)
            m->rope_freq[i] = (float)(1.0 / pow((double)c->rope_theta, (double)(2 * i) / c->rope_dim));
    if (w->rope_freq_long) memcpy(m->rope_freq_long, w->rope_freq_long, pairs * sizeof(float));
    if (w->rope_freq_swa) memcpy(m->rope_freq_swa, w->rope_freq_swa, pairs * sizeof(float));
    m->w.rope_freq = m->rope_freq;
    m->w.rope_freq_long = m->rope_freq_long;
    m->w.rope_freq_swa = m->rope_freq_swa;
    *out = m;
    return PYLLM_OK;
}

void pyllm_seq_free(pyllm_seq *s) {
    if (!s) return;
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->key_cache);
    free(s->value_cache);
    free(s->layer_row);
    free(s->x);
    free(s->xb2);
    free(s->xb);
    free(s->q);
    free(s->hb);
    free(s->hb2);
    free(s->q8x);
    free(s->q8k);
    free(s->scores);
    free(s);
}

static void *alloc_floats(size_t rows, size_t cols) {
    return calloc(rows * cols, sizeof(float));
}

int pyllm_seq_new(const pyllm_model *m, int n_ctx, int n_threads, pyllm_seq **out) {
    if (!m || !out || n_ctx < 1 || n_threads < 1) return PYLLM_ERR_ARG;
    *out = NULL;
    const pyllm_config *c = &m->c;
    pyllm_seq *s = calloc(1, sizeof *s);
    if (!s) return PYLLM_ERR_NOMEM;
    s->m = m;
    s->n_ctx = n_ctx;
    s->n_threads = n_threads;
    s->n_batch = n_ctx < MAX_BATCH ? n_ctx : MAX_BATCH;
    /* LongRoPE, as llama.cpp chooses: the long factors for a context past the original one */
    s->rope_freq = m->rope_freq_long && n_ctx > c->rope_long_ctx ? m->rope_freq_long : m->rope_freq;

    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = (size_t)c->dim > q_dim ? (size_t)c->dim : q_dim;
    size_t widest = wide > (size_t)c->hidden_dim ? wide : (size_t)c->hidden_dim;
    size_t nb = (size_t)s->n_batch;
    /* a sliding layer keeps the window - 1 positions before a batch and the batch */
    s->swa_rows = c->sliding_window > 0 && (long)c->sliding_window - 1 + s->n_batch < n_ctx
                      ? c->sliding_window - 1 + s->n_batch : n_ctx;
    s->layer_row = malloc((size_t)c->n_layers * sizeof *s->layer_row);
    if (!s->layer_row) {
        pyllm_seq_free(s);
        return PYLLM_ERR_NOMEM;
    }
    size_t cache = 0; /* rows of all layers */
    for (int l = 0; l < c->n_layers; l++) {
        s->layer_row[l] = cache;
        cache += m->layers[l].sliding ? (size_t)s->swa_rows : (size_t)n_ctx;
    }

    s->rope_cos = alloc_floats(2 * nb, (size_t)c->rope_dim / 2);
    s->rope_sin = alloc_floats(2 * nb, (size_t)c->rope_dim / 2);
    s->key_cache = alloc_floats(cache, kv_dim);
    s->value_cache = alloc_floats(cache, kv_dim);
    s->x = alloc_floats(nb, c->dim);
    s->xb2 = alloc_floats(nb, c->dim);
    s->xb = alloc_floats(nb, wide);
    s->q = alloc_floats(nb, q_dim);
    s->hb = alloc_floats(nb, c->hidden_dim);
    s->hb2 = alloc_floats(nb, c->hidden_dim);
    s->q8x = calloc(nb * (widest / QK8X + 1), sizeof(block_q8x));
    s->q8k = calloc(nb * (widest / QK_K + 1), sizeof(block_q8k));
    s->scores = alloc_floats((size_t)n_threads * attend_heads(c), n_ctx);
    if (!s->rope_cos || !s->rope_sin || !s->key_cache || !s->value_cache || !s->x || !s->xb2 || !s->xb ||
        !s->q || !s->hb || !s->hb2 || !s->q8x || !s->q8k || !s->scores) {
        pyllm_seq_free(s);
        return PYLLM_ERR_NOMEM;
    }
    *out = s;
    return PYLLM_OK;
}
