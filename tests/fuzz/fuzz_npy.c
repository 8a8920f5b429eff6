/* fuzz_npy.c: the .npy reader (core/util/npy.c: the preamble, the header's
 * Python dict, the data against the shape) as `routebench attn --load` and
 * `routebench import` call it. The input is a whole .npy file, read through
 * a memory file three ways: any shape as float32, four dimensions as int32
 * (attn --load's q.npy), and an exact shape (import's arrays). Checked: what
 * is read is what the file holds, and writing it back with npy_write and
 * reading that gives the same shape and bytes. */
#include "fuzz.h"

#include "util/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_once();
    const char *path = fuzz_memfile(0, data, size);
    char err[1024];
    int shape[NPY_MAX_DIMS], ndim = -1;
    void *arr = NULL;

    if (npy_read(path, "<f4", NULL, -1, &arr, shape, &ndim, err, sizeof err) == 0) {
        FUZZ_CHECK(ndim >= 0 && ndim <= NPY_MAX_DIMS);
        size_t count = 1;
        for (int i = 0; i < ndim; i++) {
            FUZZ_CHECK(shape[i] >= 0);
            count *= (size_t)shape[i];
        }
        FUZZ_CHECK(count * 4 <= size); /* the data came from the file */
        FUZZ_CHECK((count == 0) == (arr == NULL));
        if (count) FUZZ_CHECK(memcmp(arr, data + size - count * 4, count * 4) == 0); /* the data ends the file */
        /* the same into a caller's buffer */
        void *dst = malloc(count ? count * 4 : 1);
        if (!dst) abort();
        FUZZ_CHECK(npy_read_into(path, "<f4", shape, ndim, dst, err, sizeof err) == 0);
        if (count) FUZZ_CHECK(memcmp(dst, arr, count * 4) == 0);
        /* round trip through the writer */
        const char *back = fuzz_memfile(1, "", 0);
        FUZZ_CHECK(npy_write(back, "<f4", shape, ndim, arr, err, sizeof err) == 0);
        int shape2[NPY_MAX_DIMS], ndim2 = -1;
        void *arr2 = NULL;
        FUZZ_CHECK(npy_read(back, "<f4", shape, ndim, &arr2, shape2, &ndim2, err, sizeof err) == 0);
        FUZZ_CHECK(ndim2 == ndim && memcmp(shape2, shape, (size_t)ndim * sizeof(int)) == 0);
        if (count) FUZZ_CHECK(memcmp(arr2, arr, count * 4) == 0);
        free(arr2);
        free(dst);
        free(arr);
    } else {
        FUZZ_CHECK(arr == NULL && err[0]);
    }

    arr = NULL;
    if (npy_read(path, "<i4", NULL, 4, &arr, shape, &ndim, err, sizeof err) == 0) FUZZ_CHECK(ndim == 4);
    free(arr);

    static const int want[2] = {2, 3};
    float buf[6];
    if (npy_read_into(path, "<f4", want, 2, buf, err, sizeof err) == 0) FUZZ_CHECK(size >= sizeof buf);
    return 0;
}
