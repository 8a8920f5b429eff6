/* metric.h: the vocabulary shared by what produces measurements (the model,
 * the analysis, the runner) and what stores and reads them (store, report):
 * one named value at a step, and the names of attention head kinds and of
 * their pairs, which the analysis writes into metric names
 * ("analyze.L0.jsd.local_routing") and the report reads back. Keeping the
 * names here lets both sides agree without the report depending on the
 * model. */
#ifndef RB_METRIC_H
#define RB_METRIC_H

typedef struct {
    int step;      /* -1: a summary value of the whole trial (stored as NULL) */
    char name[64];
    double value;  /* non-finite values are stored as NULL */
} rb_metric;

/* Head kinds: a labelling for the tables, not behaviour. */
enum { ANALYZE_HEAD_DENSE = 0, ANALYZE_HEAD_LOCAL = 1, ANALYZE_HEAD_ROUTING = 2, ANALYZE_NKINDS = 3 };
/* Pairs of kinds (a <= b), in the order of the paper's table then the rest. */
enum {
    ANALYZE_PAIR_LL = 0, /* local-local */
    ANALYZE_PAIR_LR,     /* local-routing */
    ANALYZE_PAIR_RR,     /* routing-routing */
    ANALYZE_PAIR_DD,     /* dense-dense */
    ANALYZE_PAIR_DL,     /* dense-local */
    ANALYZE_PAIR_DR,     /* dense-routing */
    ANALYZE_NPAIRS
};

const char *analyze_kind_name(int kind);   /* "dense", "local", "routing" */
const char *analyze_pair_name(int pair);   /* "local_local", ... */
int analyze_pair_of(int kind_a, int kind_b);

#endif
