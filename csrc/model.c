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
 * A batch of tokens goes through together (matrix x matrix), from one sequence or from several:
 * each token carries its position and its sequence, the matmuls read every weight once for the
 * whole batch, and each token attends over its own sequence's cache. All threads of the sequence's
 * team (team.h) run the whole pass and meet at a barrier between steps, so a batch costs one
 * hand-over to the team, not one per matmul. Weights are never copied: they stay where the caller
 * mapped them.
 *
 * The model (weights, config, rope frequencies) is read-only once built; everything a pass
 * writes - the KV cache and the scratch buffers - belongs to a sequence (pyllm_seq: one
 * conversation, its cache contiguous) or to a paged cache (pyllm_cache: blocks of a shared pool,
 * many sequences, the caller keeping each one's block table), so any number of them can run on
 * one model at the same time, each from its own thread.
 *
 * The cache of each kind of layer (full, sliding) is a pool of blocks of block_rows positions:
 * position p of a sequence is row (p - base) % block_rows of block table[(p - base) / block_rows].
 * A pyllm_seq has one block per kind, n_ctx rows for full layers; a sliding layer's holds only what
 * its queries can still see: the last sliding_window - 1 positions and one batch. When a batch
 * would run past its end, the positions still visible are moved to its start (every n_batch
 * positions or so), and the sequence remembers the first position it holds (base); earlier
 * positions cannot be resumed from (PYLLM_ERR_REWIND). A paged cache's caller frees the sliding
 * layers' blocks that fall out of the window.
 */
#include "pyllm.h"
#include "kernels/kernels.h"
#include "team.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BATCH 512 /* tokens per pass through the layers; longer inputs go in chunks */

struct pyllm_model {
    pyllm_config c;
    pyllm_weights w;
    pyllm_layer *layers;  /* our copy of the caller's layer table */
    int *kind_index;      /* (n_layers) a layer's index among the layers of its kind (full, sliding) */
    int n_kind[2];        /* layers of each kind */
    int isa;
    float *rope_freq;     /* (rope_dim / 2) rotation frequency of each pair (given, or from theta) */
    float *rope_freq_long;/* (rope_dim / 2) the same for sequences longer than rope_long_ctx, or NULL */
    float *rope_freq_swa; /* (rope_dim / 2) the sliding layers' frequencies, or NULL: rope_freq */
};

/* The keys and values of the layers of one kind (0 full, 1 sliding), in blocks. */
typedef struct {
    unsigned char *k, *v; /* (n_blocks, layers of the kind, block_rows, kv_dim) floats or halves */
    int n_blocks, block_rows;
    size_t elem;          /* bytes of a value: 4 (PYLLM_KV_F32) or 2 (PYLLM_KV_F16) */
} kv_pool;

/* Where one sequence's positions lie in a pool (see the top of the file). */
typedef struct {
    const int32_t *table; /* block of each block_rows positions from base; NULL: block 0 */
    int base;
} kv_map;

/* Scratch of the forward pass: buffers for up to n_batch tokens, and per-thread attention space. */
typedef struct {
    int n_batch, n_threads;
    pyllm_team *team;     /* the n_threads threads every pass runs on */
    int n_ctx;            /* the most positions a sequence may hold */
    const float *rope_freq; /* the model's frequencies for a context of n_ctx (LongRoPE: short or long) */
    float *rope_cos;      /* (2, n_batch, rope_dim / 2) cos and sin of each token's angles, */
    float *rope_sin;      /* shared by every head and layer: [0] full layers, [1] sliding ones */
    float *x;             /* (n_batch, dim) residual stream */
    float *xb2;           /* (n_batch, dim) attention or MLP output before its post-norm */
    float *xb;            /* (n_batch, max(dim, q_dim)) normalized input, then attention output */
    float *q;             /* (n_batch, q_dim) queries */
    float *k, *v;         /* (n_batch, kv_dim) the batch's keys and values, before they go to the cache */
    float *hb;            /* (n_batch, hidden_dim) gate, then silu(gate) * up */
    float *hb2;           /* (n_batch, hidden_dim) up */
    block_q8x *q8x;       /* (n_batch, max width / QK8X) current matmul input, quantized for the */
    block_q8k *q8k;       /* (n_batch, max width / QK_K)  32-value types and for the K-quants */
    float *scores;        /* (n_threads, attend_heads * n_ctx) attention scratch */
    kern_kv_run *runs;    /* (n_threads, max_runs) the cache stretches one attention call reads */
    int max_runs;
    float *kv_f32;        /* (n_threads, 2, n_ctx, head_dim) a half cache's keys and values as floats, or NULL */
    int32_t *pos, *seq;   /* (n_batch) a single sequence's positions and sequence numbers (all 0) */
} work;

/* One pass's tokens: each with its position and sequence, and which rows' output is wanted. */
typedef struct {
    int n;
    const int32_t *tokens, *pos, *seq;
    const kv_map *maps;   /* (sequences, 2) each sequence's map of full and sliding layers */
    float *out;           /* n_out rows: logits (vocab_size) or, with hidden, normed states (dim) */
    const int32_t *out_rows;
    int n_out, hidden;
} batch;

struct pyllm_seq {
    const pyllm_model *m; /* the model this sequence's cache and buffers are shaped for */
    work w;
    kv_pool pools[2];     /* one block each: full layers n_ctx rows, sliding ones swa_rows */
    kv_map maps[2];
    int32_t *rows;        /* (n_batch) output rows 0, 1, ... */
};

struct pyllm_cache {
    const pyllm_model *m;
    work w;
    kv_pool pools[2];
    kv_map *maps;         /* (max_seqs, 2) */
    int max_seqs, table_len;
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
    case PYLLM_ERR_BLOCK: return "a block table names a block outside the cache";
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

/* Values [c0, c1) of row t of a matmul input (cols floats per row; c0 and c1 multiples of the
 * blocks of every format in acts) quantized into the sequence's buffer of each quantized format in
 * acts. */
static void quantize_span(int isa, work *s, const float *x, int t, int c0, int c1, int cols, unsigned acts) {
    const float *row = x + (size_t)t * cols;
    if (acts & ACT_BIT(KERN_ACT_Q8X))
        kern_quantize_rows(isa, KERN_ACT_Q8X, row + c0, 1, c1 - c0, s->q8x + ((size_t)t * cols + c0) / QK8X, 0, 1);
    if (acts & ACT_BIT(KERN_ACT_Q8K))
        kern_quantize_rows(isa, KERN_ACT_Q8K, row + c0, 1, c1 - c0, s->q8k + ((size_t)t * cols + c0) / QK_K, 0, 1);
}

/* Rows [t0, t0 + n) of a matmul input quantized into each format in acts, split among threads. */
static void quantize_input(int isa, work *s, const float *x, int t0, int n, int cols,
                           unsigned acts, int ith, int nth) {
    const float *rows = x + (size_t)t0 * cols;
    if (acts & ACT_BIT(KERN_ACT_Q8X))
        kern_quantize_rows(isa, KERN_ACT_Q8X, rows, n, cols, s->q8x + (size_t)t0 * (cols / QK8X), ith, nth);
    if (acts & ACT_BIT(KERN_ACT_Q8K))
        kern_quantize_rows(isa, KERN_ACT_Q8K, rows, n, cols, s->q8k + (size_t)t0 * (cols / QK_K), ith, nth);
}

/* Values a thread's share of one row comes in: the largest block of the formats in acts (so each
 * thread quantizes whole blocks of what it wrote), or 8 floats. */
static int span_unit(unsigned acts) {
    return acts & ACT_BIT(KERN_ACT_Q8K) ? QK_K : acts & ACT_BIT(KERN_ACT_Q8X) ? QK8X : 8;
}

/* Thread ith's [c0, c1) share of a row of cols values, in whole units (the last may be cut short). */
static void span_share(int cols, int unit, int ith, int nth, int *c0, int *c1) {
    rows_share((cols + unit - 1) / unit, ith, nth, c0, c1);
    *c0 = *c0 * unit < cols ? *c0 * unit : cols;
    *c1 = *c1 * unit < cols ? *c1 * unit : cols;
}

/* 1 / rms(x) of a row of dim values (eps added to the mean square). */
static float rms_scale(const float *x, int dim, float eps) {
    double ss = 0.0;
    for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    return 1.0f / sqrtf((float)(ss / dim) + eps);
}

/* out = x / rms(x) * weight for n rows; each row then quantized into the formats in acts. Fewer
 * rows than threads (a single token) are each split by columns: every thread sums the row's
 * squares itself and writes and quantizes its share, so no thread waits for another's. */
static void rmsnorm_rows(int isa, work *s, float *out, const float *x, const float *weight,
                         int n, int dim, float eps, unsigned acts, int ith, int nth) {
    int lo = 0, hi = n, c0 = 0, c1 = dim;
    if (n >= nth) rows_share(n, ith, nth, &lo, &hi);
    else span_share(dim, span_unit(acts), ith, nth, &c0, &c1);
    for (int t = lo; t < hi; t++) {
        const float *xt = x + (size_t)t * dim;
        float *ot = out + (size_t)t * dim;
        const float scale = rms_scale(xt, dim, eps);
        for (int i = c0; i < c1; i++) ot[i] = xt[i] * scale * weight[i];
        if (c0 < c1) quantize_span(isa, s, out, t, c0, c1, dim, acts);
    }
}

/* x += rmsnorm(y) * weight for n rows of dim values (a post-norm before the residual add); fewer
 * rows than threads split by columns, as in rmsnorm_rows. */
static void add_rmsnorm_rows(float *x, const float *y, const float *weight, int n, int dim, float eps,
                             int ith, int nth) {
    int lo = 0, hi = n, c0 = 0, c1 = dim;
    if (n >= nth) rows_share(n, ith, nth, &lo, &hi);
    else span_share(dim, 8, ith, nth, &c0, &c1);
    for (int t = lo; t < hi; t++) {
        const float *yt = y + (size_t)t * dim;
        float *xt = x + (size_t)t * dim;
        const float scale = rms_scale(yt, dim, eps);
        for (int i = c0; i < c1; i++) xt[i] += yt[i] * scale * weight[i];
    }
}

/* One matmul of a step: y (+)= x W^T, against the step's input quantized as W's type needs or,
 * with float_input, as floats (the classifier's). */
typedef struct {
    const pyllm_tensor *w;
    float *y;
    int accumulate, float_input;
} matmul_job;

/* A single token's matmul goes out in chunks of at least this many bytes of weights (a claim, one
 * cache line passed between cores, costs little beside reading them), and in at most MAX_CHUNKS. */
#define CHUNK_BYTES 65536
#define MAX_CHUNKS 64
/* Of those chunks, this percentage is dealt to the threads in equal shares before any is claimed. */
#define DEALT_PERCENT 50
/* Steps reading fewer bytes of weights than this keep equal shares: there a claim costs about as
 * much as the imbalance it removes (SmolLM2's steps, 0.2-1.2 MB, decoded 2% slower claiming). */
#define CLAIMED_MIN_BYTES (2.0 * 1024 * 1024)

static int chunk_rows(const pyllm_tensor *w) {
    const size_t row_bytes = kern_row_bytes(w->type, w->cols);
    int rows = row_bytes && row_bytes < CHUNK_BYTES ? (int)(CHUNK_BYTES / row_bytes) : 1;
    if (rows < w->rows / MAX_CHUNKS) rows = w->rows / MAX_CHUNKS;
    return (rows + KERN_ROW_ALIGN - 1) / KERN_ROW_ALIGN * KERN_ROW_ALIGN;
}

static void matmul_chunk(int isa, const matmul_job *j, const kern_input *in, int n, int r0, int r1) {
    if (j->float_input) kern_matmul_float_rows(isa, j->w, in->x, n, j->y, j->accumulate, r0, r1);
    else kern_matmul_rows(isa, j->w, in, n, j->y, j->accumulate, r0, r1);
}

/* Chunks in a matmul of chunks of `rows` rows (chunk_rows), the last one short. */
static int chunks_of(const pyllm_tensor *w, int rows) {
    return (w->rows + rows - 1) / rows;
}

/* Chunk c of a step's matmuls (numbered through all of them in order). */
static void matmul_chunk_at(int isa, const matmul_job *jobs, int count, const kern_input *in, int n, int c) {
    for (int i = 0; i < count; i++) {
        const int rows = chunk_rows(jobs[i].w), chunks = chunks_of(jobs[i].w, rows);
        if (c < chunks) {
            const int r0 = c * rows;
            matmul_chunk(isa, &jobs[i], in, n, r0, r0 + rows < jobs[i].w->rows ? r0 + rows : jobs[i].w->rows);
            return;
        }
        c -= chunks;
    }
}

/* The matmuls of one step, all reading one input of n tokens, shared among the team. A batch, and
 * a small step, give each thread an equal share of every matmul's rows. A single token's larger
 * steps (where a thread held up by the machine would hold the whole team at the next barrier) are
 * cut into chunks: DEALT_PERCENT of them dealt in equal shares, the rest claimed one at a time by
 * whichever thread is free. A row's result is the same either way. */
static void matmuls(int isa, const matmul_job *jobs, int count, const kern_input *in, int n, pyllm_team *team,
                    team_cursor *cursor, int ith, int nth) {
    double bytes = 0.0;
    for (int i = 0; i < count; i++) bytes += (double)jobs[i].w->rows * kern_row_bytes(jobs[i].w->type, jobs[i].w->cols);
    if (n > 1 || nth == 1 || bytes < CLAIMED_MIN_BYTES) {
        for (int i = 0; i < count; i++) {
            const matmul_job *j = &jobs[i];
            if (j->float_input) kern_matmul_float(isa, j->w, in->x, n, j->y, j->accumulate, ith, nth);
            else kern_matmul(isa, j->w, in, n, j->y, j->accumulate, ith, nth);
        }
        return;
    }
    int total = 0;
    for (int i = 0; i < count; i++) total += chunks_of(jobs[i].w, chunk_rows(jobs[i].w));
    const int dealt = total * DEALT_PERCENT / 100 / nth * nth;
    for (int c = ith * (dealt / nth); c < (ith + 1) * (dealt / nth); c++) matmul_chunk_at(isa, jobs, count, in, n, c);
    for (int k; (k = team_claim(team, cursor, total - dealt)) >= 0;) matmul_chunk_at(isa, jobs, count, in, n, dealt + k);
}

/* cos and sin of the rotation angles pos[t] * freq[i] of the batch's n tokens, times the
 * attention factor (exactly 1 unless the RoPE scaling sets one). */
static void rope_angles(const pyllm_model *m, work *s, const int32_t *pos, int n, int ith, int nth) {
    const int half = m->c.rope_dim / 2;
    int lo, hi;
    rows_share(n, ith, nth, &lo, &hi);
    for (int set = 0; set < (m->rope_freq_swa ? 2 : 1); set++) {
        const float *freq = set ? m->rope_freq_swa : s->rope_freq;
        size_t at = (size_t)set * s->n_batch * half;
        for (int t = lo; t < hi; t++)
            for (int i = 0; i < half; i++) {
                float angle = (float)pos[t] * freq[i];
                s->rope_cos[at + (size_t)t * half + i] = cosf(angle) * m->c.rope_attn_factor;
                s->rope_sin[at + (size_t)t * half + i] = sinf(angle) * m->c.rope_attn_factor;
            }
    }
}

/* Add the optional bias to head h of token t (vh: its head_dim values), normalize it by the
 * optional per-head RMSNorm weight (Qwen3's q_norm / k_norm), and rotate adjacent pairs of its
 * first rope_dim dimensions by the token's angles (the sliding layers' own set when they have
 * one) unless the layer has no positional encoding (no_rope). */
static void head_bias_norm_rope(const pyllm_model *m, const work *s, float *vh, const float *bias,
                                const float *norm, const pyllm_layer *L, int t, int h) {
    const int head_dim = m->c.head_dim, half = m->c.rope_dim / 2;
    const size_t set = L->sliding && m->rope_freq_swa ? (size_t)s->n_batch * half : 0;
    if (bias)
        for (int i = 0; i < head_dim; i++) vh[i] += bias[h * head_dim + i];
    if (norm) {
        const float scale = rms_scale(vh, head_dim, m->c.norm_eps);
        for (int i = 0; i < head_dim; i++) vh[i] = vh[i] * scale * norm[i];
    }
    for (int i = 0; i < half && !L->no_rope; i++) {
        float c = s->rope_cos[set + (size_t)t * half + i], sn = s->rope_sin[set + (size_t)t * half + i];
        float a = vh[2 * i], b = vh[2 * i + 1];
        vh[2 * i] = a * c - b * sn;
        vh[2 * i + 1] = a * sn + b * c;
    }
}

/* The batch's queries: bias, norm and rotation of every head, split among threads by head. */
static void prepare_queries(const pyllm_model *m, const work *s, const pyllm_layer *L, int n, int ith, int nth) {
    const int n_heads = m->c.n_heads, head_dim = m->c.head_dim;
    int lo, hi;
    rows_share(n * n_heads, ith, nth, &lo, &hi);
    for (int th = lo; th < hi; th++) {
        int t = th / n_heads, h = th % n_heads;
        head_bias_norm_rope(m, s, s->q + (size_t)th * head_dim, L->bq, L->q_norm, L, t, h);
    }
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

/* The first of the n * per_token attention items (token-major) whose preceding work reaches
 * `target`: item i of token t costs the keys its query reads. */
static int attention_cut(const batch *b, int per_token, int window, double target) {
    double done = 0.0;
    for (int t = 0; t < b->n; t++) {
        double each = keys_seen(b->pos[t], window), whole = each * per_token;
        if (done + whole >= target) {
            double rest = ceil((target - done) / each);
            return t * per_token + (int)(rest > 0 ? rest : 0);
        }
        done += whole;
    }
    return b->n * per_token;
}

/* Thread ith's contiguous [lo, hi) share of the attention items, cut so that every thread gets
 * the same work: later queries of a prompt read more of the cache than earlier ones. */
static void attention_share(const batch *b, int per_token, int window, int ith, int nth, int *lo, int *hi) {
    double total = 0.0;
    for (int t = 0; t < b->n; t++) total += (double)keys_seen(b->pos[t], window) * per_token;
    *lo = ith == 0 ? 0 : attention_cut(b, per_token, window, total * ith / nth);
    *hi = ith + 1 == nth ? b->n * per_token : attention_cut(b, per_token, window, total * (ith + 1) / nth);
}

/* Row `pos` of a sequence's cache of layer l, keys (values: the same offset into pool->v). */
static size_t cache_row(const pyllm_model *m, const kv_pool *pool, const kv_map *map, int l, int pos) {
    const size_t kv_dim = (size_t)m->c.n_kv_heads * m->c.head_dim;
    const int kind = m->layers[l].sliding, rel = pos - map->base;
    const size_t block = map->table ? (size_t)map->table[rel / pool->block_rows] : 0;
    return ((block * m->n_kind[kind] + (size_t)m->kind_index[l]) * pool->block_rows +
            (size_t)(rel % pool->block_rows)) * kv_dim;
}

/* The batch's new keys (bias, norm, rotation) and values (bias), each token's row then written to
 * its row of layer l's cache; split among threads by token. */
static void store_kv(const pyllm_model *m, const work *s, const kv_pool *pools, const batch *b, int l,
                     int ith, int nth) {
    const pyllm_layer *L = &m->layers[l];
    const int n_kv_heads = m->c.n_kv_heads, head_dim = m->c.head_dim;
    const size_t kv_dim = (size_t)n_kv_heads * head_dim;
    const kv_pool *pool = &pools[L->sliding];
    int lo, hi;
    rows_share(b->n, ith, nth, &lo, &hi);
    for (int t = lo; t < hi; t++) {
        float *k = s->k + (size_t)t * kv_dim, *v = s->v + (size_t)t * kv_dim;
        for (int h = 0; h < n_kv_heads; h++) head_bias_norm_rope(m, s, k + (size_t)h * head_dim, L->bk, L->k_norm, L, t, h);
        if (L->bv)
            for (size_t i = 0; i < kv_dim; i++) v[i] += L->bv[i];
        size_t at = cache_row(m, pool, &b->maps[2 * b->seq[t] + L->sliding], l, b->pos[t]) * pool->elem;
        if (pool->elem == sizeof(float)) {
            memcpy(pool->k + at, k, kv_dim * sizeof(float));
            memcpy(pool->v + at, v, kv_dim * sizeof(float));
        } else {
            uint16_t *hk = (uint16_t *)(pool->k + at), *hv = (uint16_t *)(pool->v + at);
            for (size_t i = 0; i < kv_dim; i++) {
                hk[i] = fp32_to_fp16(k[i]);
                hv[i] = fp32_to_fp16(v[i]);
            }
        }
    }
}

/* hb = act(hb) * hb2 (SiLU, or GELU in its tanh form) for n tokens, then quantized into the
 * formats in acts for the down projection. A single token's row is split by quantization blocks,
 * so each thread quantizes what it computed; a batch needs a barrier between the two. */
static void gated_activation(const pyllm_model *m, work *s, int n, unsigned acts, int ith, int nth) {
    const int isa = m->isa, hidden = m->c.hidden_dim;
    void (*act)(int, float *, const float *, int, int, int, int) = m->c.ffn_gelu ? kern_geglu : kern_swiglu;
    if (n == 1) {
        int c0, c1;
        span_share(hidden, span_unit(acts), ith, nth, &c0, &c1);
        act(isa, s->hb + c0, s->hb2 + c0, 1, c1 - c0, 0, 1);
        if (c0 < c1) quantize_span(isa, s, s->hb, 0, c0, c1, hidden, acts);
        return;
    }
    act(isa, s->hb, s->hb2, n, hidden, ith, nth);
    if (acts & QUANTIZED_ACTS) {
        team_barrier(s->team);
        quantize_input(isa, s, s->hb, 0, n, hidden, acts, ith, nth);
    }
}

/* Causal attention of the batch's queries, each over its own sequence's cache; a query of a
 * sliding layer sees the last sliding_window positions, itself included (transformers' and
 * llama.cpp's mask: key j is seen from query i when i - window < j <= i). Work is split by
 * (token, key/value head), each item taking all the query heads that share that key/value head,
 * so the cache is read once for them; a lone token by query head, so that threads share its heads
 * evenly (9 heads split 5:4 between two threads; 3 key/value heads would split 2:1). The output
 * is then quantized into the formats in acts for Wo: a lone token's by each thread for its own
 * heads, where a head is made of whole blocks; otherwise after a barrier. */
static void attention(const pyllm_model *m, work *s, const kv_pool *pools, const batch *b, int layer,
                      unsigned acts, int ith, int nth) {
    const pyllm_config *c = &m->c;
    int kv_dim = c->n_kv_heads * c->head_dim, q_dim = c->n_heads * c->head_dim;
    int group = c->n_heads / c->n_kv_heads; /* query heads sharing one key/value head */
    int per_item = b->n == 1 ? 1 : group, items = c->n_heads / per_item; /* query heads per item, items per token */
    int kind = m->layers[layer].sliding, window = kind ? c->sliding_window : 0;
    const kv_pool *pool = &pools[kind];
    float scale = c->attn_scale > 0.0f ? c->attn_scale : 1.0f / sqrtf((float)c->head_dim);
    kern_kv_run *runs = s->runs + (size_t)ith * s->max_runs;
    int lo, hi;
    attention_share(b, items, window, ith, nth, &lo, &hi);
    for (int it = lo; it < hi; it++) {
        int t = it / items, h = it % items * per_item, kvh = h / group;
        int p = b->pos[t], seen = keys_seen(p, window), n_runs = 0;
        const kv_map *map = &b->maps[2 * b->seq[t] + kind];
        int stride = kv_dim;
        if (pool->elem == sizeof(float)) {
            for (int a = p + 1 - seen; a <= p; n_runs++) { /* one run per block */
                int row = (a - map->base) % pool->block_rows, n = pool->block_rows - row;
                n = n < p + 1 - a ? n : p + 1 - a;
                size_t at = (cache_row(m, pool, map, layer, a) + (size_t)kvh * c->head_dim) * sizeof(float);
                runs[n_runs] = (kern_kv_run){(const float *)(pool->k + at), (const float *)(pool->v + at), n};
                a += n;
            }
        } else { /* halves: this head's keys and values as floats, one run */
            float *k = s->kv_f32 + (size_t)ith * 2 * s->n_ctx * c->head_dim, *v = k + (size_t)s->n_ctx * c->head_dim;
            for (int a = p + 1 - seen, j = 0; a <= p; a++, j++) {
                size_t at = (cache_row(m, pool, map, layer, a) + (size_t)kvh * c->head_dim) * pool->elem;
                kern_dequantize_row(m->isa, PYLLM_TYPE_F16, pool->k + at, k + (size_t)j * c->head_dim, c->head_dim);
                kern_dequantize_row(m->isa, PYLLM_TYPE_F16, pool->v + at, v + (size_t)j * c->head_dim, c->head_dim);
            }
            runs[n_runs++] = (kern_kv_run){k, v, seen};
            stride = c->head_dim;
        }
        size_t head = (size_t)h * c->head_dim;
        kern_attend(m->isa, s->q + (size_t)t * q_dim + head, per_item, runs, n_runs, stride, seen,
                    c->head_dim, scale, s->scores + (size_t)ith * attend_heads(c) * s->n_ctx,
                    s->xb + (size_t)t * q_dim + head);
    }
    if (!(acts & QUANTIZED_ACTS)) return;
    if (b->n == 1 && c->head_dim % span_unit(acts) == 0) {
        if (lo < hi) quantize_span(m->isa, s, s->xb, 0, lo * c->head_dim, hi * c->head_dim, q_dim, acts);
        return;
    }
    team_barrier(s->team);
    quantize_input(m->isa, s, s->xb, 0, b->n, q_dim, acts, ith, nth);
}

static void embed(const pyllm_model *m, work *s, const int32_t *tokens, int n, int ith, int nth) {
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

typedef struct {
    const pyllm_model *m;
    work *s;
    const kv_pool *pools;
    const batch *b;
} pass;

/* Thread ith of nth's part of one batch through every layer (see forward_batch). */
static void forward_thread(void *arg, int ith, int nth) {
    const pass *p = arg;
    const pyllm_model *m = p->m;
    work *s = p->s;
    const kv_pool *pools = p->pools;
    const batch *b = p->b;
    const pyllm_config *c = &m->c;
    const int dim = c->dim, isa = m->isa, n = b->n;
    /* the two matmul inputs, as floats and quantized (as the weights reading them need) */
    const kern_input xb = {s->xb, s->q8x, s->q8k}, hb = {s->hb, s->q8x, s->q8k};
    team_cursor cursor = {0};
    embed(m, s, b->tokens, n, ith, nth);
    rope_angles(m, s, b->pos, n, ith, nth);
    team_barrier(s->team);
    for (int l = 0; l < c->n_layers; l++) {
        const pyllm_layer *L = &m->layers[l];
        const unsigned acts_qkv = acts_of(&L->wq, &L->wk, &L->wv), acts_o = acts_of(&L->wo, NULL, NULL);
        const unsigned acts_ffn = acts_of(&L->w_gate, &L->w_up, NULL), acts_down = acts_of(&L->w_down, NULL, NULL);

        /* attention block: q, k, v from the normalized input; new keys/values go to the cache */
        rmsnorm_rows(isa, s, s->xb, s->x, L->attn_norm, n, dim, c->norm_eps, acts_qkv, ith, nth);
        team_barrier(s->team);
        const matmul_job qkv[] = {{&L->wq, s->q, 0, 0}, {&L->wk, s->k, 0, 0}, {&L->wv, s->v, 0, 0}};
        matmuls(isa, qkv, 3, &xb, n, s->team, &cursor, ith, nth);
        team_barrier(s->team);
        prepare_queries(m, s, L, n, ith, nth);
        store_kv(m, s, pools, b, l, ith, nth);
        team_barrier(s->team);
        attention(m, s, pools, b, l, acts_o, ith, nth); /* -> xb (n, q_dim), quantized */
        team_barrier(s->team);
        if (L->post_attn_norm) { /* x += rmsnorm(attn Wo) */
            const matmul_job o = {&L->wo, s->xb2, 0, 0};
            matmuls(isa, &o, 1, &xb, n, s->team, &cursor, ith, nth);
            team_barrier(s->team);
            add_rmsnorm_rows(s->x, s->xb2, L->post_attn_norm, n, dim, c->norm_eps, ith, nth);
        } else {
            const matmul_job o = {&L->wo, s->x, 1, 0}; /* x += attn Wo */
            matmuls(isa, &o, 1, &xb, n, s->team, &cursor, ith, nth);
        }
        team_barrier(s->team);

        /* feed-forward block: SwiGLU or GeGLU */
        rmsnorm_rows(isa, s, s->xb, s->x, L->ffn_norm, n, dim, c->norm_eps, acts_ffn, ith, nth);
        team_barrier(s->team);
        const matmul_job gate_up[] = {{&L->w_gate, s->hb, 0, 0}, {&L->w_up, s->hb2, 0, 0}};
        matmuls(isa, gate_up, 2, &xb, n, s->team, &cursor, ith, nth);
        team_barrier(s->team);
        gated_activation(m, s, n, acts_down, ith, nth); /* hb = act(hb) * hb2, quantized */
        team_barrier(s->team);
        if (L->post_ffn_norm) { /* x += rmsnorm(ffn) */
            const matmul_job down = {&L->w_down, s->xb2, 0, 0};
            matmuls(isa, &down, 1, &hb, n, s->team, &cursor, ith, nth);
            team_barrier(s->team);
            add_rmsnorm_rows(s->x, s->xb2, L->post_ffn_norm, n, dim, c->norm_eps, ith, nth);
        } else {
            const matmul_job down = {&L->w_down, s->x, 1, 0}; /* x += ffn */
            matmuls(isa, &down, 1, &hb, n, s->team, &cursor, ith, nth);
        }
        team_barrier(s->team);
    }

    /* the rows whose output is wanted: normed, then through the classifier unless the
     * hidden states themselves are asked for. The classifier multiplies the floats themselves
     * where its weight type has a kernel for that: 8-bit activations there flip near-tied logits. */
    if (b->n_out > 0) {
        int lo, hi;
        rows_share(b->n_out, ith, nth, &lo, &hi);
        for (int i = lo; i < hi; i++)
            memcpy(s->xb2 + (size_t)i * dim, s->x + (size_t)b->out_rows[i] * dim, (size_t)dim * sizeof(float));
        team_barrier(s->team);
        const int float_classifier = kern_type_float_matmul(m->w.output.type);
        float *normed = b->hidden ? b->out : s->xb;
        rmsnorm_rows(isa, s, normed, s->xb2, m->w.output_norm, b->n_out, dim, c->norm_eps,
                     b->hidden || float_classifier ? 0u : acts_of(&m->w.output, NULL, NULL), ith, nth);
        if (!b->hidden) {
            team_barrier(s->team);
            const matmul_job classifier = {&m->w.output, b->out, 0, float_classifier};
            matmuls(isa, &classifier, 1, &xb, b->n_out, s->team, &cursor, ith, nth);
        }
    }
}

/* One batch of b->n <= n_batch tokens through every layer; the output rows it asks for. All threads
 * of the sequence's team run the whole pass and meet at a barrier between steps. */
static void forward_batch(const pyllm_model *m, work *s, const kv_pool *pools, const batch *b) {
    pass p = {m, s, pools, b};
    team_run(s->team, forward_thread, &p);
}

/* Make room in a sequence's sliding layers for n positions from pos: when they would run past
 * the end of their block, move the positions the batch's queries still see (from
 * pos - window + 1) to row 0. */
static void slide_caches(const pyllm_model *m, pyllm_seq *s, int n, int pos) {
    const int window = m->c.sliding_window;
    kv_pool *pool = &s->pools[1];
    kv_map *map = &s->maps[1];
    if (!window || !m->n_kind[1] || pos + n - map->base <= pool->block_rows) return;
    int keep_from = pos - window + 1 > map->base ? pos - window + 1 : map->base;
    size_t kv_dim = (size_t)m->c.n_kv_heads * m->c.head_dim, skip = (size_t)(keep_from - map->base);
    size_t keep = (size_t)(pos - keep_from), row_bytes = kv_dim * pool->elem;
    size_t layer_bytes = (size_t)pool->block_rows * row_bytes;
    for (int i = 0; i < m->n_kind[1]; i++) {
        unsigned char *k = pool->k + i * layer_bytes, *v = pool->v + i * layer_bytes;
        memmove(k, k + skip * row_bytes, keep * row_bytes);
        memmove(v, v + skip * row_bytes, keep * row_bytes);
    }
    map->base = keep_from;
}

int pyllm_seq_min_resume(const pyllm_seq *s) {
    if (!s || s->maps[1].base == 0) return 0;
    return s->maps[1].base + s->m->c.sliding_window - 1;
}

static int check_tokens(const pyllm_model *m, const int32_t *tokens, int n) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->c.vocab_size) return PYLLM_ERR_ARG;
    return PYLLM_OK;
}

int pyllm_forward(const pyllm_model *m, pyllm_seq *s, const int32_t *tokens, int n_tokens, int pos,
                  float *logits, int all_logits) {
    if (!m || !s || s->m != m || !tokens || !logits || n_tokens < 1 || pos < 0) return PYLLM_ERR_ARG;
    if (n_tokens > s->w.n_ctx - pos) return PYLLM_ERR_CONTEXT;
    if (check_tokens(m, tokens, n_tokens)) return PYLLM_ERR_ARG;
    if (pos == 0) s->maps[1].base = 0; /* a fresh start: nothing earlier is needed */
    if (pos > 0 && pos < pyllm_seq_min_resume(s)) return PYLLM_ERR_REWIND;
    for (int done = 0; done < n_tokens; done += s->w.n_batch) {
        int n = n_tokens - done < s->w.n_batch ? n_tokens - done : s->w.n_batch;
        slide_caches(m, s, n, pos + done);
        for (int t = 0; t < n; t++) s->w.pos[t] = pos + done + t;
        const int last = done + n == n_tokens;
        batch b = {n, tokens + done, s->w.pos, s->w.seq, s->maps,
                   all_logits ? logits + (size_t)done * m->c.vocab_size : logits,
                   all_logits ? s->rows : s->rows + n - 1, all_logits ? n : last, 0};
        forward_batch(m, &s->w, s->pools, &b);
    }
    return PYLLM_OK;
}

/* Whether every block a token of the batch reads or writes is one of the cache's: the full
 * layers' blocks up to its position, the sliding layers' over its window. */
static int check_tables(const pyllm_cache *cc, const int32_t *pos, const int32_t *seq, int n) {
    const pyllm_model *m = cc->m;
    for (int t = 0; t < n; t++)
        for (int kind = 0; kind < 2; kind++) {
            if (!m->n_kind[kind]) continue;
            const kv_pool *pool = &cc->pools[kind];
            const int32_t *table = cc->maps[2 * seq[t] + kind].table;
            int first = kind ? pos[t] + 1 - keys_seen(pos[t], m->c.sliding_window) : 0;
            for (int blk = first / pool->block_rows; blk <= pos[t] / pool->block_rows; blk++)
                if (table[blk] < 0 || table[blk] >= pool->n_blocks) return PYLLM_ERR_BLOCK;
        }
    return PYLLM_OK;
}

int pyllm_cache_forward(const pyllm_model *m, pyllm_cache *cc, int n_tokens, const int32_t *tokens,
                        const int32_t *pos, const int32_t *seq, int n_seqs, const int32_t *tables,
                        const int32_t *swa_tables, int n_out, const int32_t *out_rows, float *out, int hidden) {
    if (!m || !cc || cc->m != m || !tokens || !pos || !seq || !tables || n_tokens < 1 ||
        n_tokens > cc->w.n_batch || n_seqs < 1 || n_seqs > cc->max_seqs || n_out < 0 || n_out > n_tokens ||
        (n_out && (!out_rows || !out)) || (m->n_kind[1] && !swa_tables))
        return PYLLM_ERR_ARG;
    if (check_tokens(m, tokens, n_tokens)) return PYLLM_ERR_ARG;
    for (int t = 0; t < n_tokens; t++) {
        if (seq[t] < 0 || seq[t] >= n_seqs || pos[t] < 0) return PYLLM_ERR_ARG;
        if (pos[t] >= cc->w.n_ctx) return PYLLM_ERR_CONTEXT;
    }
    for (int i = 0; i < n_out; i++)
        if (out_rows[i] < 0 || out_rows[i] >= n_tokens) return PYLLM_ERR_ARG;
    for (int q = 0; q < n_seqs; q++) {
        cc->maps[2 * q] = (kv_map){tables + (size_t)q * cc->table_len, 0};
        cc->maps[2 * q + 1] = (kv_map){swa_tables ? swa_tables + (size_t)q * cc->table_len : NULL, 0};
    }
    int err = check_tables(cc, pos, seq, n_tokens);
    if (err) return err;
    batch b = {n_tokens, tokens, pos, seq, cc->maps, out, out_rows, n_out, hidden != 0};
    forward_batch(m, &cc->w, cc->pools, &b);
    return PYLLM_OK;
}

int pyllm_cache_copy_block(pyllm_cache *cc, int kind, int src, int dst) {
    if (!cc || kind < 0 || kind > 1) return PYLLM_ERR_ARG;
    const kv_pool *pool = &cc->pools[kind];
    if (src < 0 || dst < 0 || src >= pool->n_blocks || dst >= pool->n_blocks) return PYLLM_ERR_BLOCK;
    const pyllm_config *c = &cc->m->c;
    size_t bytes = (size_t)cc->m->n_kind[kind] * pool->block_rows * c->n_kv_heads * c->head_dim * pool->elem;
    memcpy(pool->k + (size_t)dst * bytes, pool->k + (size_t)src * bytes, bytes);
    memcpy(pool->v + (size_t)dst * bytes, pool->v + (size_t)src * bytes, bytes);
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
    free(m->kind_index);
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
    m->kind_index = malloc((size_t)c->n_layers * sizeof *m->kind_index);
    const size_t pairs = (size_t)c->rope_dim / 2;
    m->rope_freq = malloc(pairs * sizeof(float));
    m->rope_freq_long = w->rope_freq_long ? malloc(pairs * sizeof(float)) : NULL;
    m->rope_freq_swa = w->rope_freq_swa ? malloc(pairs * sizeof(float)) : NULL;
    if (!m->layers || !m->kind_index || !m->rope_freq || (w->rope_freq_long && !m->rope_freq_long) ||
        (w->rope_freq_swa && !m->rope_freq_swa)) {
        pyllm_model_free(m);
        return PYLLM_ERR_NOMEM;
    }
    memcpy(m->layers, w->layers, (size_t)c->n_layers * sizeof *m->layers);
    m->w.layers = m->layers;
    for (int l = 0; l < c->n_layers; l++) {
        int kind = m->layers[l].sliding != 0;
        m->layers[l].sliding = kind;
        m->kind_index[l] = m->n_kind[kind]++;
    }
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

static void work_free(work *s) {
    team_free(s->team);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->x);
    free(s->xb2);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->hb);
    free(s->hb2);
    free(s->q8x);
    free(s->q8k);
    free(s->scores);
    free(s->runs);
    free(s->kv_f32);
    free(s->pos);
    free(s->seq);
}

static void *alloc_floats(size_t rows, size_t cols) {
    return calloc(rows * cols, sizeof(float));
}

/* Scratch for passes of up to n_batch tokens over sequences of up to n_ctx positions, whose caches
 * come in blocks of at least min_block_rows rows. */
static int work_init(const pyllm_model *m, work *s, int n_ctx, int n_batch, int n_threads, int min_block_rows,
                     int kv_type) {
    const pyllm_config *c = &m->c;
    s->n_ctx = n_ctx;
    s->n_threads = n_threads;
    s->n_batch = n_batch;
    /* LongRoPE, as llama.cpp chooses: the long factors for a context past the original one */
    s->rope_freq = m->rope_freq_long && n_ctx > c->rope_long_ctx ? m->rope_freq_long : m->rope_freq;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = (size_t)c->dim > q_dim ? (size_t)c->dim : q_dim;
    size_t widest = wide > (size_t)c->hidden_dim ? wide : (size_t)c->hidden_dim;
    size_t nb = (size_t)n_batch;
    s->max_runs = n_ctx / min_block_rows + 2;
    s->rope_cos = alloc_floats(2 * nb, (size_t)c->rope_dim / 2);
    s->rope_sin = alloc_floats(2 * nb, (size_t)c->rope_dim / 2);
    s->x = alloc_floats(nb, c->dim);
    s->xb2 = alloc_floats(nb, c->dim);
    s->xb = alloc_floats(nb, wide);
    s->q = alloc_floats(nb, q_dim);
    s->k = alloc_floats(nb, kv_dim);
    s->v = alloc_floats(nb, kv_dim);
    s->hb = alloc_floats(nb, c->hidden_dim);
    s->hb2 = alloc_floats(nb, c->hidden_dim);
    s->q8x = calloc(nb * (widest / QK8X + 1), sizeof(block_q8x));
    s->q8k = calloc(nb * (widest / QK_K + 1), sizeof(block_q8k));
    s->scores = alloc_floats((size_t)n_threads * attend_heads(c), n_ctx);
    s->runs = calloc((size_t)n_threads * s->max_runs, sizeof *s->runs);
    s->pos = calloc(nb, sizeof *s->pos);
    s->seq = calloc(nb, sizeof *s->seq);
    if (team_new(n_threads, &s->team)) return PYLLM_ERR_NOMEM;
    if (kv_type == PYLLM_KV_F16 && !(s->kv_f32 = alloc_floats((size_t)n_threads * 2 * n_ctx, c->head_dim)))
        return PYLLM_ERR_NOMEM;
    if (!s->rope_cos || !s->rope_sin || !s->x || !s->xb2 || !s->xb || !s->q || !s->k || !s->v || !s->hb ||
        !s->hb2 || !s->q8x || !s->q8k || !s->scores || !s->runs || !s->pos || !s->seq)
        return PYLLM_ERR_NOMEM;
    return PYLLM_OK;
}

/* A pool of n_blocks blocks of block_rows rows for the layers of one kind (none: nothing allocated). */
static int pool_init(const pyllm_model *m, kv_pool *pool, int kind, int n_blocks, int block_rows, int kv_type) {
    pool->n_blocks = n_blocks;
    pool->block_rows = block_rows;
    pool->elem = kv_type == PYLLM_KV_F16 ? sizeof(uint16_t) : sizeof(float);
    if (!m->n_kind[kind] || !n_blocks) return PYLLM_OK;
    size_t values = (size_t)n_blocks * m->n_kind[kind] * block_rows * m->c.n_kv_heads * m->c.head_dim;
    pool->k = calloc(values, pool->elem);
    pool->v = calloc(values, pool->elem);
    return pool->k && pool->v ? PYLLM_OK : PYLLM_ERR_NOMEM;
}

void pyllm_seq_free(pyllm_seq *s) {
    if (!s) return;
    work_free(&s->w);
    for (int kind = 0; kind < 2; kind++) {
        free(s->pools[kind].k);
        free(s->pools[kind].v);
    }
    free(s->rows);
    free(s);
}

int pyllm_seq_new(const pyllm_model *m, int n_ctx, int n_threads, int kv_type, pyllm_seq **out) {
    if (!m || !out || n_ctx < 1 || n_threads < 1 || (kv_type != PYLLM_KV_F32 && kv_type != PYLLM_KV_F16))
        return PYLLM_ERR_ARG;
    *out = NULL;
    const pyllm_config *c = &m->c;
    pyllm_seq *s = calloc(1, sizeof *s);
    if (!s) return PYLLM_ERR_NOMEM;
    s->m = m;
    const int n_batch = n_ctx < MAX_BATCH ? n_ctx : MAX_BATCH;
    /* a sliding layer keeps the window - 1 positions before a batch and the batch */
    const int swa_rows = c->sliding_window > 0 && (long)c->sliding_window - 1 + n_batch < n_ctx
                             ? c->sliding_window - 1 + n_batch : n_ctx;
    int err = work_init(m, &s->w, n_ctx, n_batch, n_threads, swa_rows, kv_type);
    if (!err) err = pool_init(m, &s->pools[0], 0, 1, n_ctx, kv_type);
    if (!err) err = pool_init(m, &s->pools[1], 1, 1, swa_rows, kv_type);
    s->rows = calloc((size_t)n_batch, sizeof *s->rows);
    if (!err && !s->rows) err = PYLLM_ERR_NOMEM;
    if (err) {
        pyllm_seq_free(s);
        return err;
    }
    for (int t = 0; t < n_batch; t++) s->rows[t] = t;
    s->maps[0] = (kv_map){NULL, 0};
    s->maps[1] = (kv_map){NULL, 0};
    *out = s;
    return PYLLM_OK;
}

void pyllm_cache_free(pyllm_cache *cc) {
    if (!cc) return;
    work_free(&cc->w);
    for (int kind = 0; kind < 2; kind++) {
        free(cc->pools[kind].k);
        free(cc->pools[kind].v);
    }
    free(cc->maps);
    free(cc);
}

int pyllm_cache_new(const pyllm_model *m, int n_blocks, int n_swa_blocks, int block_rows, int n_ctx,
                    int max_seqs, int n_batch, int n_threads, int kv_type, pyllm_cache **out) {
    if (!m || !out || (kv_type != PYLLM_KV_F32 && kv_type != PYLLM_KV_F16) || n_blocks < 0 || n_swa_blocks < 0 || block_rows < 1 || n_ctx < 1 || max_seqs < 1 ||
        n_batch < 1 || n_batch > MAX_BATCH * 8 || n_threads < 1 || (m->n_kind[0] && n_blocks < 1) ||
        (m->n_kind[1] && n_swa_blocks < 1))
        return PYLLM_ERR_ARG;
    *out = NULL;
    pyllm_cache *cc = calloc(1, sizeof *cc);
    if (!cc) return PYLLM_ERR_NOMEM;
    cc->m = m;
    cc->max_seqs = max_seqs;
    cc->table_len = (n_ctx + block_rows - 1) / block_rows;
    int err = work_init(m, &cc->w, n_ctx, n_batch, n_threads, block_rows, kv_type);
    if (!err) err = pool_init(m, &cc->pools[0], 0, n_blocks, block_rows, kv_type);
    if (!err) err = pool_init(m, &cc->pools[1], 1, n_swa_blocks, block_rows, kv_type);
    /* a paged cache is a server's memory budget: take all of it now, so that the process's memory
     * stays what it was configured to be rather than growing as blocks are first used */
    for (int kind = 0; !err && kind < 2; kind++)
        if (cc->pools[kind].k) {
            size_t bytes = (size_t)cc->pools[kind].n_blocks * m->n_kind[kind] * block_rows * m->c.n_kv_heads *
                           m->c.head_dim * cc->pools[kind].elem;
            memset(cc->pools[kind].k, 0, bytes);
            memset(cc->pools[kind].v, 0, bytes);
        }
    cc->maps = calloc((size_t)max_seqs * 2, sizeof *cc->maps);
    if (!err && !cc->maps) err = PYLLM_ERR_NOMEM;
    if (err) {
        pyllm_cache_free(cc);
        return err;
    }
    *out = cc;
    return PYLLM_OK;
}
