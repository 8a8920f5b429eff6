/* npy.h: reading and writing NumPy .npy files, so a pass or a model can be
 * handed to PyTorch/JAX/NumPy and back (`routebench attn --save/--load`,
 * `routebench export/import`). Only what routebench stores is supported:
 * little-endian float32 ('<f4') and int32 ('<i4'), C order. Files are written
 * in format version 1.0 with the header padded so the data starts at a
 * multiple of 64 bytes; versions 1.0, 2.0 (and 3.0, which differs only in the
 * header's text encoding) are read. Anything else - not a .npy file, another
 * dtype, Fortran order, a shape other than the caller's, a truncated file -
 * is refused with a message that names the file and says what was wrong. */
#ifndef RB_NPY_H
#define RB_NPY_H

#include <stddef.h>

#define NPY_MAX_DIMS 16

/* Write data (C order, shape[0..ndim-1], ndim 0..NPY_MAX_DIMS; ndim 0 is a
 * scalar with one element) as dtype "<f4" or "<i4" to path. 0, or -1 with a
 * message (cannot create, disk full, ...). */
int npy_write(const char *path, const char *dtype, const int *shape, int ndim, const void *data, char *err,
              size_t errlen);

/* Read path, which must hold want_dtype ("<f4" or "<i4"). When want_shape is
 * not NULL the file's shape must be exactly want_shape[0..want_ndim-1]; with
 * want_shape NULL any shape is taken, but a want_ndim >= 0 still requires that
 * many dimensions (-1 = any). On success *data is a new 64-byte aligned
 * buffer (free with free(); NULL for an empty array), shape[0..*ndim-1] the
 * file's shape (shape has room for NPY_MAX_DIMS) and 0 is returned; else -1
 * with a message and *data = NULL. */
int npy_read(const char *path, const char *want_dtype, const int *want_shape, int want_ndim, void **data,
             int *shape, int *ndim, char *err, size_t errlen);

/* Read path into the caller's buffer dst, which holds exactly the elements
 * of shape[0..ndim-1]; the file must have that dtype and shape. 0 or -1. */
int npy_read_into(const char *path, const char *dtype, const int *shape, int ndim, void *dst, char *err,
                  size_t errlen);

/* "(2, 3)" / "(5,)" / "()" into buf, for messages and manifests. Returns buf. */
char *npy_shape_str(char *buf, size_t buflen, const int *shape, int ndim);

/* A directory of .npy files being written, remembered for its manifest's
 * "arrays" object (name -> file, dtype, shape). */
#define NPY_LIST_MAX 4096
typedef struct {
    int n;
    struct {
        char name[96];
        char dtype[4];
        int ndim;
        int shape[NPY_MAX_DIMS];
    } a[NPY_LIST_MAX];
} npy_list;

/* Write dir/name.npy and remember it. 0 or -1 with a message. */
int npy_list_put(npy_list *l, const char *dir, const char *name, const char *dtype, const int *shape, int ndim,
                 const void *data, char *err, size_t errlen);
/* The "arrays" member: {"q": {"file": "q.npy", "dtype": "<f4", "shape": [...]}, ...}. */
struct rb_jw;
void npy_list_json(struct rb_jw *w, const npy_list *l);

#endif
