/* test_common.c: the measurement helpers of core/util/common.c that every timing
 * and memory figure rests on: the median, and the peak RSS window that the
 * runner restarts for each trial. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util/common.h"
#include "tap.h"

#define MIB (1024.0 * 1024.0)

/* touches `bytes` of fresh anonymous memory, then returns it to the kernel */
static void touch_and_release(size_t bytes) {
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    memset(p, 1, bytes);
    munmap(p, bytes);
}

static void test_median(void) {
    double a[] = {5, 1, 4, 2, 3};
    ok(rb_median(a, 5) == 3.0, "median of 5 values is the middle one");
    double b[] = {4, 1, 3, 2};
    ok(rb_median(b, 4) == 2.5, "median of 4 values is the mean of the middle two");
}

static void test_peak(void) {
    size_t before = rb_peak_rss();
    touch_and_release((size_t)96 << 20);
    size_t high = rb_peak_rss();
    ok(high >= before + (size_t)(80 * MIB), "touching 96 MiB raises the peak (%.1f -> %.1f MiB)", before / MIB,
       high / MIB);
    if (rb_reset_peak_rss() != 0) {
        ok(1, "# SKIP the kernel cannot reset the peak (no /proc/self/clear_refs)");
        ok(1, "# SKIP");
        return;
    }
    size_t after = rb_peak_rss();
    ok(after + (size_t)(64 * MIB) <= high,
       "after the reset the peak is back near the current RSS (%.1f MiB, was %.1f MiB)", after / MIB, high / MIB);
    touch_and_release((size_t)32 << 20);
    size_t again = rb_peak_rss();
    ok(again >= after + (size_t)(24 * MIB) && again + (size_t)(40 * MIB) < high,
       "a new 32 MiB allocation shows in the new window only (%.1f MiB)", again / MIB);
}

int main(void) {
    test_median();
    test_peak();
    return tap_done();
}
