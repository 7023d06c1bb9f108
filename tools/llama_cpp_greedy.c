/* llama_cpp_greedy.c - llama.cpp's greedy choices on a GGUF, for comparing pyllm with it token by
 * token: reads a prompt from a file, evaluates it in one batch with logits at every position,
 * then generates n tokens greedily, and prints JSON: the prompt's token ids (llama.cpp's
 * tokenizer, BOS added as the model says), the argmax after every prompt position, and the
 * generated ids with each step's top-two logit margin. A developer tool built against libllama
 * (tools/make_gemma3_llama_cpp.py builds and runs it); not part of pyllm.
 *
 *   cc -O2 tools/llama_cpp_greedy.c -I$LLAMA/include -I$LLAMA/ggml/include -L$LLAMA/build/bin -lllama
 *   ./a.out model.gguf prompt.txt n_predict n_ctx n_threads
 */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>

static int argmax(const float *x, int n, float *margin) {
    int best = 0, second = -1;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) { second = best; best = i; }
        else if (second < 0 || x[i] > x[second]) second = i;
    }
    *margin = second < 0 ? 0.0f : x[best] - x[second];
    return best;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s model.gguf prompt.txt n_predict n_ctx n_threads\n", argv[0]);
        return 2;
    }
    int n_predict = atoi(argv[3]), n_ctx = atoi(argv[4]), n_threads = atoi(argv[5]);
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;

    llama_backend_init();
    struct llama_model *model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t)n_ctx;
    cp.n_threads = cp.n_threads_batch = n_threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }

    llama_token *ids = malloc(sizeof *ids * (size_t)n_ctx);
    int n = llama_tokenize(vocab, text, (int32_t)len, ids, n_ctx, true, false);
    if (n < 0 || n + n_predict > n_ctx) { fprintf(stderr, "prompt too long\n"); return 1; }

    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch)) { fprintf(stderr, "decode failed\n"); return 1; }

    printf("{\"prompt_ids\": [");
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("],\n \"prompt_argmax\": [");
    float margin;
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", argmax(llama_get_logits_ith(ctx, i), n_vocab, &margin));
    printf("],\n \"generated_ids\": [");
    llama_token next = argmax(llama_get_logits_ith(ctx, n - 1), n_vocab, &margin);
    float *margins = malloc(sizeof *margins * (size_t)n_predict);
    for (int step = 0; step < n_predict; step++) {
        margins[step] = margin;
        printf("%s%d", step ? ", " : "", next);
        if (llama_decode(ctx, llama_batch_get_one(&next, 1))) { fprintf(stderr, "decode failed\n"); return 1; }
        next = argmax(llama_get_logits_ith(ctx, -1), n_vocab, &margin);
    }
    printf("],\n \"generated_margins\": [");
    for (int step = 0; step < n_predict; step++) printf("%s%.4f", step ? ", " : "", margins[step]);
    printf("]}\n");

    llama_batch_free(batch);
    free(ids);
    free(margins);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
