/* metric.c: names of head kinds and pairs (metric.h). */
#include "util/metric.h"

const char *analyze_kind_name(int kind) {
    static const char *const names[ANALYZE_NKINDS] = {"dense", "local", "routing"};
    return kind >= 0 && kind < ANALYZE_NKINDS ? names[kind] : "?";
}

const char *analyze_pair_name(int pair) {
    static const char *const names[ANALYZE_NPAIRS] = {"local_local", "local_routing", "routing_routing",
                                                      "dense_dense", "dense_local",   "dense_routing"};
    return pair >= 0 && pair < ANALYZE_NPAIRS ? names[pair] : "?";
}

int analyze_pair_of(int a, int b) {
    if (a > b) {
        int t = a;
        a = b, b = t;
    }
    if (a == ANALYZE_HEAD_LOCAL) return b == ANALYZE_HEAD_LOCAL ? ANALYZE_PAIR_LL : ANALYZE_PAIR_LR;
    if (a == ANALYZE_HEAD_ROUTING) return ANALYZE_PAIR_RR;
    return b == ANALYZE_HEAD_DENSE ? ANALYZE_PAIR_DD : b == ANALYZE_HEAD_LOCAL ? ANALYZE_PAIR_DL : ANALYZE_PAIR_DR;
}

