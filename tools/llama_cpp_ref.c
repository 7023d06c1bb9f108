/* llama_cpp_ref.c - llama.cpp's predictions on given token ids, for reference fixtures: the argmax
 * of every position over independent chunks, or greedy continuation of a prompt. Token ids come in
 * as whitespace-separated integers so both engines see the same ids (no second tokenizer involved).
 * Built against llama.cpp's library by tools/make_gemma3_references.py:
 *
 *     cc -O2 tools/llama_cpp_ref.c -I LLAMA/include -I LLAMA/ggml/include -L LLAMA/build/bin -lllama \
 *        -Wl,-rpath,LLAMA/build/bin -o llama_cpp_ref
 *     ./llama_cpp_ref top1 MODEL.gguf IDS.txt CHUNK THREADS [KV [ATTN]]    # one argmax per position
 *     ./llama_cpp_ref greedy MODEL.gguf IDS.txt N THREADS [KV [ATTN]]      # N greedy tokens after the prompt
 *
 * KV is the cache's type: f16 (llama.cpp's default) or f32 (pyllm's default). ATTN is fa (flash
 * attention, which llama.cpp's default "auto" picks on this CPU) or nofa (its other attention path).
 *
 *     ./llama_cpp_ref bench MODEL.gguf THREADS N_CTX    # then "pp N" or "tg N" lines on stdin
 *
 * bench keeps the model loaded and answers each line with the seconds of one run, as llama-bench
 * measures it, from an empty cache with llama.cpp's default context settings: pp evaluates N random
 * tokens in batches of 512, tg decodes N tokens one at a time, each the argmax of the last logits
 * (tools/bench.py pairs these runs with pyllm's, both engines loaded, in turn).
 */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int read_ids(const char *path, llama_token **ids) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, cap = 1024, v;
    *ids = malloc(cap * sizeof **ids);
    while (*ids && fscanf(f, "%d", &v) == 1) {
        if (n == cap) *ids = realloc(*ids, (cap *= 2) * sizeof **ids);
        if (*ids) (*ids)[n++] = v;
    }
    fclose(f);
    return *ids ? n : -1;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Decode n tokens at positions pos.. of sequence 0, asking for logits of every row or the last. */
static int decode(struct llama_context *ctx, struct llama_batch *b, const llama_token *toks, int n, int pos,
                  int all) {
    b->n_tokens = n;
    for (int i = 0; i < n; i++) {
        b->token[i] = toks[i];
        b->pos[i] = pos + i;
        b->n_seq_id[i] = 1;
        b->seq_id[i][0] = 0;
        b->logits[i] = all || i == n - 1;
    }
    return llama_decode(ctx, *b);
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The bench mode: one run per stdin line ("pp N" or "tg N"), its seconds on stdout. */
static int bench(const char *path, int threads, int n_ctx) {
    llama_backend_init();
    struct llama_model *model = llama_model_load_from_file(path, llama_model_default_params());
    if (!model) return 1;
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = cp.n_ubatch = 512;
    cp.n_threads = cp.n_threads_batch = threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    struct llama_batch batch = llama_batch_init(512, 0, 1);
    llama_token *toks = malloc(sizeof *toks * (size_t)n_ctx);
    if (!toks) return 1;
    srand(0);
    for (int i = 0; i < n_ctx; i++) toks[i] = rand() % n_vocab;
    char kind[8];
    int n;
    while (scanf("%7s %d", kind, &n) == 2) {
        if (n < 1 || n > n_ctx || (strcmp(kind, "pp") && strcmp(kind, "tg"))) return 2;
        llama_memory_clear(llama_get_memory(ctx), 1);
        double t0 = seconds();
        if (!strcmp(kind, "pp")) {
            for (int i = 0; i < n; i += 512)
                if (decode(ctx, &batch, toks + i, n - i < 512 ? n - i : 512, i, 0)) return 1;
            llama_synchronize(ctx);
        } else {
            llama_token next = toks[0];
            for (int i = 0; i < n; i++) {
                if (decode(ctx, &batch, &next, 1, i, 0)) return 1;
                next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
            }
        }
        printf("%.6f\n", seconds() - t0);
        fflush(stdout);
    }
    free(toks);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "bench")) return bench(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc < 6 || argc > 8 || (strcmp(argv[1], "top1") && strcmp(argv[1], "greedy")) ||
        (argc > 6 && strcmp(argv[6], "f16") && strcmp(argv[6], "f32")) ||
        (argc > 7 && strcmp(argv[7], "fa") && strcmp(argv[7], "nofa"))) {
        fprintf(stderr, "usage: %s top1|greedy MODEL.gguf IDS.txt CHUNK|N THREADS [f16|f32 [fa|nofa]]\n"
                        "       %s bench MODEL.gguf THREADS N_CTX\n", argv[0], argv[0]);
        return 2;
    }
    int top1 = !strcmp(argv[1], "top1"), count = atoi(argv[4]), threads = atoi(argv[5]);
    llama_token *ids = NULL;
    int n_ids = read_ids(argv[3], &ids);
    if (n_ids < 1 || count < 1) {
        fprintf(stderr, "%s: no token ids, or a bad count\n", argv[3]);
        return 1;
    }
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    if (!model) return 1;
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    int n_ctx = top1 ? count : n_ids + count;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = cp.n_ubatch = top1 ? count : n_ids;
    cp.n_threads = cp.n_threads_batch = threads;
    if (argc > 6 && !strcmp(argv[6], "f32")) cp.type_k = cp.type_v = GGML_TYPE_F32;
    if (argc > 7)
        cp.flash_attn_type = strcmp(argv[7], "fa") ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_ENABLED;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    struct llama_batch batch = llama_batch_init(cp.n_batch, 0, 1);
    if (!ctx) return 1;
    if (top1) {
        for (int start = 0; start + count <= n_ids; start += count) {
            llama_memory_clear(llama_get_memory(ctx), 1);
            if (decode(ctx, &batch, ids + start, count, 0, 1)) return 1;
            for (int i = 0; i < count; i++) printf("%d\n", argmax(llama_get_logits_ith(ctx, i), n_vocab));
        }
    } else {
        if (decode(ctx, &batch, ids, n_ids, 0, 0)) return 1;
        for (int i = 0; i < count; i++) {
            llama_token next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
            printf("%d\n", next);
            if (decode(ctx, &batch, &next, 1, n_ids + i, 0)) return 1;
        }
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
