/* analyze.h: what the attention heads of a trained model actually do, read
 * through each backend's own forward (the code path training uses). After a
 * model forward in evaluation mode on held-out data, every layer's backend is
 * run again on the q and k the model gave it, with its routes kept
 * (ATTN_KEEP_ROUTES: centroids do not move) and V set to one-hot blocks, so
 * the outputs are the columns of the effective probability matrix P (n x n
 * per head): dense gives the full causal softmax, local its block band,
 * routing the average over the clusters that picked the query (an all-zero
 * row when none did, or when none of them showed it a key: an "unrouted"
 * row, left out of every average and counted). From P, per layer and head:
 * the entropy of each query's distribution; for sparse heads the share of
 * the dense softmax mass (double precision, from the head's own q and k)
 * that falls on the keys the head sees (P[i,j] > 0), and the same for a
 * random key set of the same size as the floor; per layer the Jensen-Shannon
 * divergence between every pair of heads, grouped by head kind; and the
 * backend's own statistics (cluster sizes, unrouted and multi-routed shares,
 * k-means objective) averaged over the evaluation batches.
 *
 * Units: entropies and divergences in nats (natural log), as the Routing
 * Transformer paper's JSD table, so a JSD is at most ln 2 = 0.6931.
 * Cost: every layer costs ceil(seq / head_dim) extra forwards of its backend
 * plus O(batch * heads * seq^2 * head_dim) for the dense softmax and
 * O(batch * heads^2 * seq^2) for the pairwise divergences, with
 * batch * heads * seq^2 floats of P held per layer: an evaluation-sized tool.
 *
 * A key a sparse head can see but whose weight underflows to exactly 0 (a
 * logit more than 87 below the row's maximum, where core/util/vexp.h's exp gives
 * 0) is counted as hidden; at such a gap its dense weight is below 1e-38. */
#ifndef RB_ANALYZE_H
#define RB_ANALYZE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "attn/attn.h"
#include "util/common.h"
#include "util/metric.h"
#include "model/train.h"

/* The kind of each of a's heads (kinds has a->p.heads entries), from the
 * backend's `uses` bits and validated parameters: with ATTN_USES_LOCAL_HEADS
 * the first p.local_heads heads are local and the rest routing (hybrid's
 * layout; its lsh heads, content-based too, are counted with the routing
 * ones); otherwise ATTN_USES_CLUSTERS means routing, ATTN_USES_WINDOW
 * local, neither dense. */
void analyze_head_kinds(const attn *a, int *kinds);

/* 1 when the head's keys are its queries (routing heads of a backend whose
 * validated p.share_qk is 1): the dense reference then uses k = q. */
int analyze_head_shares_qk(const attn *a, int kind);

/* ---- per-row measures (P rows need not sum to 1: they are normalised) ---- */

/* Entropy (nats) of row p (n). NAN for an all-zero row. */
double analyze_entropy(const float *p, int n);
/* Jensen-Shannon divergence (nats) of rows p and q (n). NAN if either is all zero. */
double analyze_jsd(const float *p, const float *q, int n);
/* Dense mass (pd, a distribution over n keys) on the keys with p[j] > 0. */
double analyze_kept_mass(const float *p, const double *pd, int n);
/* Dense mass on `size` keys drawn without replacement from keys 0..allowed-1
 * with rng; idx is scratch of allowed ints. */
double analyze_random_mass(const double *pd, int allowed, int size, int *idx, rb_rng *rng);

/* Dense softmax of one head in double: pd (n,n) row i = softmax over j of
 * q_i . keys_j / sqrt(d) (j <= i when causal, zeros beyond). q, keys (n,d). */
void analyze_dense_probs(double *pd, const float *q, const float *keys, int n, int d, int causal);

/* The effective probabilities P (B,H,n,n) of a's last forward on q, k (as
 * the model passed them, [B,H,n,d]), by ceil(n/d) forwards of a with
 * ATTN_KEEP_ROUTES and one-hot V. vbuf, obuf: (B,H,n,d) scratch. */
void analyze_probs(float *P, float *vbuf, float *obuf, attn *a, const float *q, const float *k);

/* ---- accumulating over layers and batches ---- */

#define ANALYZE_MAX_STATS 16

typedef struct {
    int L, H;
    int *kinds;                       /* (L,H) */
    int *analysed;                    /* (L) layers that have been given data */
    attn_params layer_p[TRAIN_MAX_LAYERS];        /* each layer's resolved parameters */
    const char *layer_backend[TRAIN_MAX_LAYERS];  /* and its backend's name */
    /* per (l,h) sums over routed rows and their counts */
    double *ent_sum, *kept_sum, *rand_sum; /* (L,H) */
    double *rows, *unrouted;          /* (L,H) counts */
    /* per layer, per pair of heads (h1 < h2): JSD sum and rows */
    double *jsd_sum, *jsd_rows;       /* (L,H,H) */
    /* backend statistics per layer: sums over batches */
    int nstats[TRAIN_MAX_LAYERS];
    char stat_names[TRAIN_MAX_LAYERS][ANALYZE_MAX_STATS][48];
    double stat_sum[TRAIN_MAX_LAYERS][ANALYZE_MAX_STATS];
    int stat_batches[TRAIN_MAX_LAYERS];
    /* scratch, grown on demand */
    float *P, *vbuf, *obuf;
    size_t P_floats, io_floats;
    double *pd;                       /* (nthreads, n, n) */
    int *idx;                         /* (nthreads, n) */
    size_t pd_doubles;
    uint64_t seed;
    double loss_sum;                  /* analyze_checkpoint: cross-entropy (nats) summed over batches */
    int loss_batches;
} analyze_acc;

/* L <= TRAIN_MAX_LAYERS layers of H heads; seed drives the random floor. */
analyze_acc *analyze_acc_create(int L, int H, uint64_t seed);
void analyze_acc_free(analyze_acc *acc);

/* Analyse layer l whose backend a has just run forward on q, k (B,H,n,d):
 * recovers P, adds every head's measures and the layer's statistics to acc.
 * a->p.heads must be acc->H. Runs a's forward again (its saved state for
 * backward is overwritten). 0, or -1 with a message (no memory). */
int analyze_layer(analyze_acc *acc, int l, attn *a, const float *q, const float *k, char *err, size_t errlen);

/* Summary of one layer (means over routed rows and heads of the kind). NAN
 * where there is nothing to average (no head of that kind). */
double analyze_head_entropy(const analyze_acc *acc, int l, int h);
double analyze_head_kept(const analyze_acc *acc, int l, int h);
double analyze_head_random(const analyze_acc *acc, int l, int h);
/* Mean over the heads of kind k of layer l (l = -1: over all layers). */
double analyze_kind_kept(const analyze_acc *acc, int l, int kind);
double analyze_kind_random(const analyze_acc *acc, int l, int kind);
/* JSD of a pair group in layer l: mean and standard deviation over the head
 * pairs of that group (each pair's JSD a mean over rows both heads route);
 * *npairs gets how many pairs. l = -1: over the pairs of every layer. */
double analyze_pair_jsd(const analyze_acc *acc, int l, int pair, double *std, int *npairs);

/* Every measure as trial metrics (step -1): analyze.L<l>.H<h>.entropy,
 * .kept_mass, .random_mass, .unrouted_rows, .rows; analyze.L<l>.kept_mass.
 * <kind>, analyze.L<l>.random_mass.<kind>, analyze.L<l>.jsd.<pair> (+ .std),
 * analyze.L<l>.<backend stat>; and over all layers analyze.kept_mass.<kind>,
 * analyze.random_mass.<kind>, analyze.jsd.<pair> (+ .std), and
 * analyze.eval_loss when loss_batches > 0. Returns how many
 * were written (at most max). */
int analyze_metrics(const analyze_acc *acc, rb_metric *out, int max);
/* An upper bound of analyze_metrics' count for acc. */
int analyze_metrics_max(const analyze_acc *acc);

/* Human-readable tables: per layer and head, the JSD table in the paper's
 * form (layers x local-local, local-routing, routing-routing, mean ± std),
 * the kept mass against the random floor, and the backend statistics. */
void analyze_print(FILE *f, const analyze_acc *acc);

/* ---- a whole model ---- */

typedef struct {
    int batches;  /* evaluation micro-batches (of c->batch sequences) */
    int split;    /* TASK_VAL (default) or TASK_TEST */
} analyze_options;

/* Load checkpoint ckpt into the model of c (the configuration it was trained
 * with; checked here), run `batches` micro-batches of split's held-out data
 * through it in evaluation mode and analyse every layer into *out (made
 * here; free with analyze_acc_free). 0, or -1 with a message (bad
 * configuration, checkpoint of another configuration, missing corpus). */
int analyze_checkpoint(const train_config *c, const char *ckpt, const analyze_options *o, analyze_acc **out,
                       char *err, size_t errlen);

#endif
