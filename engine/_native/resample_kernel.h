/* The resampler's FIR loops, vectorised across outputs.
 *
 * Outputs of one phase share their coefficients and their newest input steps by `down`, so a
 * block of RS_BLOCK outputs is computed tap by tap with the coefficient broadcast: no
 * horizontal sums, and every output still adds its taps in the order i = 0..K-1, one rounded
 * multiply and one rounded add each (the build passes -ffp-contract=off). The result is the
 * same for any vector width, so the AVX2 clone, the portable default and the numpy twin agree
 * bit for bit. For down > 1 the input is first split into `down` streams so that every load
 * is contiguous.
 */
#ifndef VOICE_ENGINE_RESAMPLE_KERNEL_H
#define VOICE_ENGINE_RESAMPLE_KERNEL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define RS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define RS_CLONES
#endif

#define RS_BLOCK 32

typedef float rs_v8 __attribute__((vector_size(32)));

/* Unaligned vector load and store (macros: passing vectors by value warns about the ABI). */
#define RS_LOAD(v, p) memcpy(&(v), (p), sizeof(rs_v8))
#define RS_STORE(p, v) memcpy((p), &(v), sizeof(rs_v8))

/* Round half to even and clip to int16, as numpy's rint and clip do. Adding and taking
 * away 1.5 * 2^23 leaves a float32 in [-32768, 32767] rounded to an integer in the current
 * (nearest-even) mode, with no libm call and in a form the compiler vectorises. */
static inline int16_t rs_round(float acc)
{
    float r = acc > 32767.0f ? 32767.0f : (acc < -32768.0f ? -32768.0f : acc);
    const float magic = 12582912.0f; /* not folded away: -ffast-math is never on */
    return (int16_t)((r + magic) - magic);
}

static inline void rs_put(unsigned char *dst, long at, int16_t s)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst + 2 * at, &s, 2);
#else
    dst[2 * at] = (unsigned char)(s & 0xFF);
    dst[2 * at + 1] = (unsigned char)(((uint16_t)s >> 8) & 0xFF);
#endif
}

/* RS_BLOCK outputs: out[q] = sum_i coef[i] * x[b + q*down - i], x[k*down + r] = z[r][k],
 * rounded and clipped to int16. */
RS_CLONES static void rs_block(const float *coef, long taps, const float *const *z, long down,
                               long b, int16_t *out)
{
    float sums[RS_BLOCK];
    rs_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    long r = b % down, k = b / down;
    for (long i = 0; i < taps; i++) {
        const float *s = z[r] + k;
        rs_v8 c = (rs_v8){0} + coef[i], x0, x1, x2, x3;
        RS_LOAD(x0, s);
        RS_LOAD(x1, s + 8);
        RS_LOAD(x2, s + 16);
        RS_LOAD(x3, s + 24);
        a0 = a0 + c * x0;
        a1 = a1 + c * x1;
        a2 = a2 + c * x2;
        a3 = a3 + c * x3;
        if (--r < 0) {
            r = down - 1;
            k--;
        }
    }
    RS_STORE(sums, a0);
    RS_STORE(sums + 8, a1);
    RS_STORE(sums + 16, a2);
    RS_STORE(sums + 24, a3);
    /* A plain loop over a fixed count: the compiler vectorises the clip and the rounding. */
    for (int t = 0; t < RS_BLOCK; t++)
        out[t] = rs_round(sums[t]);
}

/* n_out outputs from absolute index j0 into dst (int16 LE). x[0] is absolute input `start`;
 * z must hold room for len + down floats when down > 1. */
static void rs_run(const float *table, long up, long down, long centre, long taps,
                   int64_t j0, long n_out, const float *x, long len, int64_t start,
                   float *z, unsigned char *dst)
{
    const float *streams[down > 0 ? down : 1];
    int16_t block[RS_BLOCK];
    long stride = len / down + 1;
    if (down == 1) {
        streams[0] = x;
    } else {
        for (long r = 0; r < down; r++) {
            float *zr = z + r * stride;
            for (long k = 0, at = r; at < len; k++, at += down)
                zr[k] = x[at];
            streams[r] = zr;
        }
    }
    for (long c = 0; c < up && c < n_out; c++) {
        int64_t pos = (j0 + c) * down + centre;
        const float *coef = table + (pos % up) * taps;
        long b = (long)(pos / up - start);
        long count = (n_out - c + up - 1) / up;
        long q = 0;
        for (; q + RS_BLOCK <= count; q += RS_BLOCK) {
            rs_block(coef, taps, streams, down, b + q * down, block);
            for (long t = 0; t < RS_BLOCK; t++)
                rs_put(dst, c + (q + t) * up, block[t]);
        }
        for (; q < count; q++) {
            const float *s = x + b + q * down;
            float acc = 0.0f;
            for (long i = 0; i < taps; i++)
                acc = acc + coef[i] * s[-i];
            rs_put(dst, c + q * up, rs_round(acc));
        }
    }
}

#endif
