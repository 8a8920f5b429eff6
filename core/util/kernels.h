/* kernels.h: the model's layers as plain forward/backward functions in the
 * style of llm.c: outputs first, then inputs, then sizes; no allocation and
 * no hidden state. Backward functions ACCUMULATE (+=) into their gradient
 * outputs, so the caller zeroes gradients explicitly. Any gradient pointer may
 * be NULL when that gradient is not wanted. Shapes are given beside pointers;
 * N is the number of rows (batch * seq), C the row width. */
#ifndef RB_KERNELS_H
#define RB_KERNELS_H

#include <stddef.h>

/* out (N,OC) = inp (N,C) @ weight^T + bias; weight is (OC,C), bias (OC) or NULL.
 * Through rb_sgemm (gemm.h). */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC);
/* out = res + bias + inp @ weight^T (res (N,OC) or NULL): the residual and bias
 * are written first and the product added to them in one sgemm (beta = 1) */
void matmul_forward_add(float *out, const float *inp, const float *weight, const float *bias, const float *res,
                        int N, int C, int OC);
/* dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += column sums of dout */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC);
/* The same, but dinp = dout @ weight is written, not added to (sgemm beta = 0,
 * so the caller need not zero it); dweight and dbias still accumulate. */
void matmul_backward_set(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                         const float *weight, int N, int C, int OC);

/* out (N,C) = (inp - mean) * rstd * weight + bias per row; weight and bias may
 * be NULL (layer norm without gain / without bias). mean, rstd (N) are saved
 * for backward. eps = 1e-5. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);

/* GELU, tanh approximation (as GPT-2), elementwise over n values */
void gelu_forward(float *out, const float *inp, size_t n);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
/* dinp = gelu'(inp) * dout, written not added; dinp may alias dout */
void gelu_backward_set(float *dinp, const float *inp, const float *dout, size_t n);

/* row softmax: out (N,C) = softmax(inp) along C, max-subtracted, row sums in double */
void softmax_forward(float *out, const float *inp, int N, int C);
/* dinp += out * (dout - sum(dout * out)) per row */
void softmax_backward(float *dinp, const float *dout, const float *out, int N, int C);

/* out (N,C) = wte[tokens[n]] (wte is (V,C)) */
void embedding_forward(float *out, const int *tokens, const float *wte, int N, int C);
/* dwte[tokens[n]] += dout[n] */
void embedding_backward(float *dwte, const float *dout, const int *tokens, int N, int C);

/* Cross-entropy over logits (N,V) with integer targets (N) and a per-position
 * weight mask (N, NULL = all ones). losses (N) gets -log softmax(logits)[target]
 * (0 where the mask is 0). Returns sum(mask*loss)/sum(mask), accumulated in
 * double; 0 when the mask is all zero. */
double crossentropy_forward(float *losses, const float *logits, const int *targets, const float *mask, int N,
                            int V);
/* dlogits += scale * mask[n] * (softmax(logits[n]) - onehot(target[n])). The
 * caller passes scale = 1/sum(mask) for the mean loss. */
void crossentropy_backward(float *dlogits, const float *logits, const int *targets, const float *mask,
                           float scale, int N, int V);
/* The same written, not added (0 on masked rows); dlogits may alias logits,
 * so the logits' memory can hold their gradient. */
void crossentropy_backward_set(float *dlogits, const float *logits, const int *targets, const float *mask,
                               float scale, int N, int V);

/* out = a + b; da += dout; db += dout */
void residual_forward(float *out, const float *a, const float *b, size_t n);
void residual_backward(float *da, float *db, const float *dout, size_t n);

/* Global gradient-norm clipping: returns the L2 norm of g (n values, summed in
 * double) and, when max_norm > 0 and the norm exceeds it, scales g in place so
 * its norm is max_norm. */
double clip_grad_norm(float *g, size_t n, double max_norm);

/* AdamW step t (1-based) over n parameters, decoupled weight decay applied to
 * every parameter whose decay mask is 1 (mask NULL = all). m and v are the
 * moment buffers. */
void adamw_update(float *params, const float *grads, float *m, float *v, const unsigned char *decay_mask,
                  size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, int t);
/* The same with every gradient multiplied by gscale first (the clipping
 * factor, so clipping needs no pass of its own over the gradients); the
 * gradients are left as they were. gscale 1 gives adamw_update's bits. */
void adamw_update_scaled(float *params, const float *grads, float *m, float *v, const unsigned char *decay_mask,
                         size_t n, float gscale, float lr, float beta1, float beta2, float eps, float weight_decay,
                         int t);

#endif
