/* The BitNet model in C: configuration (borrowed weight pointers), state, forward pass. */
#ifndef NB_MODEL_H
#define NB_MODEL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "threadpool.h"

enum nb_act { NB_RELU2 = 0, NB_SILU = 1 };

/* How the output head runs: from the file's float rows, or from an int8 / 4-bit copy whose best
 * candidates are then recomputed from the float rows (see forward.c). */
enum nb_head { NB_HEAD_EXACT = 0, NB_HEAD_Q8 = 1, NB_HEAD_Q4 = 2 };

/* At most this many query heads share a KV head (n_head / n_head_kv; checked by the spec). */
#define NB_MAX_GQA 64

/* At most this many KV slots (sequences run together). */
#define NB_MAX_SEQ 256

/* Tokens processed together inside one forward call (longer inputs run in several batches). */
#define NB_UBATCH 64

/* Rows of a ternary matrix hold whole 128-weight blocks: a matrix whose input length is not a
 * multiple of 128 (ffn_down of BitNet 3B: n_ff 8640) comes with zero weights up to the next
 * multiple, and its activations are zero-padded to match. */
static inline int nb_padded_cols(int n) { return (n + 127) / 128 * 128; }

typedef struct {
    const uint8_t *data; /* I2_S packed, rows * cols / 4 bytes, row-major */
    float scale;
    int rows, cols;
} nb_tmat;

typedef struct {
    const float *attn_norm, *ffn_norm, *attn_sub_norm, *ffn_sub_norm;
    nb_tmat q, k, v, o, gate, up, down;
} nb_layer;

typedef struct {
    int n_vocab, n_embd, n_ff, n_head, n_head_kv, head_dim, n_layer, ctx_size, n_threads;
    int n_seq; /* KV slots: sequences that can run together, ctx_size positions each */
    float rms_eps, rope_theta;
    int rope_neox, sub_norms, act, head; /* head: enum nb_head */
    int kv_type; /* the KV cache's elements: NB_F32 or NB_F16 (enum nb_dtype); exact passes: f32 */
    const void *tok_embd;
    int tok_embd_type;
    const void *output; /* the head's rows: tok_embd when tied */
    int output_type;
    /* output is a read-only file mapping whose pages may be dropped (quantized heads only):
     * the head build gives them back to the page cache as it goes. */
    int release_head_pages;
    /* When head_fd >= 0, the same rows can be read with pread() at head_offset in that file:
     * the rescored candidates (and the embedding rows of a tied head) are read that way, so
     * the dropped pages stay out of this process (reading through the mapping would fault them
     * back in, 64 KB around each row). */
    int head_fd;
    long long head_offset;
    const float *output_norm;
    const nb_layer *layers; /* n_layer entries, owned by the caller */
    /* A quantized head built earlier (nb_model_head_copy's layout), used in place instead of
     * built from the float rows (so it must outlive the model, like the weights); NULL to build. */
    const void *head_codes;
    const float *head_scales;
} nb_config;

typedef struct nb_model nb_model;

/* Builds the model (KV cache, scratch, thread pool, quantized head if asked). On failure returns NULL
 * and sets *err to a static message. The config's weights must outlive the model. */
nb_model *nb_model_create(const nb_config *cfg, const nb_kernels *kernels, const char **err);
void nb_model_free(nb_model *m);
const char *nb_model_isa(const nb_model *m);
/* Drops the whole pages inside [p, p + n) from this process (madvise DONTNEED): only for
 * read-only file mappings, whose pages fault back in from the page cache. */
void nb_release_pages(const void *p, size_t n);
/* The quantized head's codes and scales and their sizes in bytes (0 and NULL for "exact"). */
void nb_model_head_copy(const nb_model *m, const void **codes, size_t *codes_bytes,
                        const float **scales, size_t *scales_bytes);
/* Sizes in bytes of a quantized head's codes and scales for this config (0 for "exact"). */
void nb_head_copy_sizes(const nb_config *c, size_t *codes_bytes, size_t *scales_bytes);

static inline size_t nb_head_bytes(const nb_config *c) {
    return (size_t)c->n_vocab * (size_t)c->n_embd * (c->output_type == NB_F32 ? 4 : 2);
}

/* Runs tokens[0..n) at positions n_past.. and writes logits (n_vocab floats, or n * n_vocab
 * when all_logits); exact_head computes every logit from the float rows, whatever cfg.head
 * (scoring; with released head pages they fault back in, the caller may drop them again), and
 * keeps the pass's keys and values in f32, whatever cfg.kv_type: a sequence's positions must
 * all come from exact passes or all from the others (positions of the other kind read wrong).
 * Arguments must already be validated. Returns 0, or -1 if the model is busy in another thread. */
int nb_model_forward(nb_model *m, const int32_t *tokens, int n, int n_past, float *logits,
                     int all_logits, int exact_head);

/* Runs tokens[0..n) of several sequences together: token i at position pos[i] of KV slot
 * slot[i] (every ternary matmul once over all of them, attention per slot), and writes the
 * logits of tokens rows[0..nrows) (strictly increasing indices) to logits, n_vocab floats each.
 * The tokens of one slot must come at consecutive positions, in order; token i attends to
 * positions 0..pos[i] of its slot. nb_model_forward is this with slot 0 throughout. Arguments
 * must already be validated. Returns 0, or -1 if the model is busy in another thread. */
int nb_model_forward_batch(nb_model *m, const int32_t *tokens, const int *slot, const int *pos, int n,
                           const int *rows, int nrows, float *logits, int exact_head);

#endif
