/* The resampler's FIR kernel, vectorised across outputs.
 *
 * Output j of a stream is sum_i table[p][i] * x[b - i] over taps i = 0..taps-1, where
 * p = (j*down + centre) % up and b = (j*down + centre) / up. Outputs j, j+up, j+2up, ... (one
 * "phase class") share p, and their b step by `down`: a block of them is computed tap by tap
 * with the coefficient broadcast and one vector lane per output. There are no horizontal
 * sums, so every output adds its taps in the order i = 0..taps-1, each step one rounded
 * float32 multiply and one rounded float32 add (the build passes -ffp-contract=off): the
 * result does not depend on the vector width, and the AVX2 clone, the portable default clone
 * and the numpy twin agree bit for bit.
 *
 * For down > 1 the history is first split into `down` streams, z_r[k] = x[r + k*down], so
 * that a block's samples for one tap sit side by side. Each phase class is computed into its
 * own row, rounded to int16 there, and the rows are interleaved into the output at the end:
 * every pass is contiguous or a fixed-stride pattern the compiler vectorises.
 */
#ifndef VOICE_ENGINE_RESAMPLE_KERNEL_H
#define VOICE_ENGINE_RESAMPLE_KERNEL_H

#include <stdint.h>
#include <string.h>

/* One build serves every x86-64 machine: the loader picks the AVX2 clone where the CPU has
 * it. No FMA and no -march=native, so both clones round exactly like the twin. */
#ifndef RS_CLONES /* predefine it empty to build one variant only, as tests of the kernel do */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define RS_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#endif
#ifndef RS_CLONES
#define RS_CLONES
#endif

#define RS_INLINE static inline __attribute__((always_inline))
#define RS_LANES 8
/* Room past the end of the history and of each row: a block computes whole vectors, so it
 * may read and write up to 2*RS_LANES - 1 floats past the outputs it owns (a 4-vector block
 * owning 2*RS_LANES + 1 of them); those lanes are discarded. */
#define RS_SLACK (4 * RS_LANES)

typedef float rs_v8 __attribute__((vector_size(RS_LANES * sizeof(float))));
typedef int32_t rs_v8i __attribute__((vector_size(RS_LANES * sizeof(int32_t))));
typedef int16_t rs_v8h __attribute__((vector_size(RS_LANES * sizeof(int16_t))));

/* Unaligned loads and stores (macros: vector arguments by value change the psABI). */
#define RS_LOAD(v, p) memcpy(&(v), (p), sizeof(v))
#define RS_STORE(p, v) memcpy((p), &(v), sizeof(v))

/* Widens int16 little-endian samples to float32 (exactly). */
RS_CLONES static void rs_widen(const unsigned char *src, long n, float *dst)
{
    for (long i = 0; i < n; i++) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        int16_t s;
        memcpy(&s, src + 2 * i, 2);
#else
        int16_t s = (int16_t)(uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
#endif
        dst[i] = (float)s;
    }
}

/* n*RS_LANES outputs of one phase class, lane t of vector v being output q = v*RS_LANES + t:
 * out[q] = sum_i coef[i] * src[off[i] + q]. Four vectors keep both the adder latency and the
 * load ports busy on current x86 and ARM cores without spilling the portable SSE2 build. */
#define RS_BLOCK_FN(name, n)                                                                  \
    RS_INLINE void name(const float *coef, long taps, const float *src, const long *off,     \
                        float *out)                                                           \
    {                                                                                         \
        rs_v8 a[n];                                                                           \
        for (int v = 0; v < n; v++)                                                           \
            a[v] = (rs_v8){0};                                                                \
        for (long i = 0; i < taps; i++) {                                                     \
            const float *s = src + off[i];                                                    \
            const float k = coef[i];                                                          \
            rs_v8 c = {k, k, k, k, k, k, k, k};                                               \
            for (int v = 0; v < n; v++) {                                                     \
                rs_v8 x;                                                                      \
                RS_LOAD(x, s + v * RS_LANES);                                                 \
                a[v] = a[v] + c * x;                                                          \
            }                                                                                 \
        }                                                                                     \
        for (int v = 0; v < n; v++)                                                           \
            RS_STORE(out + v * RS_LANES, a[v]);                                               \
    }

RS_BLOCK_FN(rs_block4, 4)
RS_BLOCK_FN(rs_block2, 2)
RS_BLOCK_FN(rs_block1, 1)

/* `count` outputs of one phase class into out[0 .. count). */
RS_INLINE void rs_phase(const float *coef, long taps, const float *src, const long *off,
                        long count, float *out)
{
    long q = 0;
    for (; count - q > 2 * RS_LANES; q += 4 * RS_LANES)
        rs_block4(coef, taps, src + q, off, out + q);
    if (count - q > RS_LANES)
        rs_block2(coef, taps, src + q, off, out + q);
    else if (count > q)
        rs_block1(coef, taps, src + q, off, out + q);
}

/* Four phase classes of at most RS_LANES outputs each (as when `up` is large, or a chunk is
 * tiny), one vector per class so that four accumulations overlap. Class v's newest sample is
 * stream (b[v] % down) at b[v] / down; stepping one tap back moves to the previous stream, and
 * from stream 0 to the last stream one position earlier. */
RS_INLINE void rs_classes4(const float *const coef[4], long taps, const float *src, long down,
                           long stride, const long b[4], float *const out[4])
{
    long r[4], off[4];
    rs_v8 a[4];
    for (int v = 0; v < 4; v++) {
        r[v] = b[v] % down;
        off[v] = r[v] * stride + b[v] / down;
        a[v] = (rs_v8){0};
    }
    for (long i = 0; i < taps; i++)
        for (int v = 0; v < 4; v++) {
            const float k = coef[v][i];
            rs_v8 c = {k, k, k, k, k, k, k, k}, x;
            RS_LOAD(x, src + off[v]);
            a[v] = a[v] + c * x;
            if (r[v] == 0) {
                r[v] = down - 1;
                off[v] += (down - 1) * stride - 1;
            } else {
                r[v]--;
                off[v] -= stride;
            }
        }
    for (int v = 0; v < 4; v++)
        RS_STORE(out[v], a[v]);
}

/* Rounds half to even and clips to int16, as numpy's rint then clip do. Adding and taking
 * away 1.5 * 2^23 rounds a float32 in [-32768, 32767] to an integer in the default
 * nearest-even mode, without a libm call; vector compares keep it branch-free. */
RS_INLINE void rs_round(const float *src, long n, int16_t *dst)
{
    const rs_v8 hi = (rs_v8){0} + 32767.0f, lo = (rs_v8){0} - 32768.0f;
    const rs_v8 magic = (rs_v8){0} + 12582912.0f;
    for (long j = 0; j < n; j += RS_LANES) {
        rs_v8 r;
        RS_LOAD(r, src + j);
        rs_v8i below = r < hi, above = r > lo;
        r = (rs_v8)((below & (rs_v8i)r) | (~below & (rs_v8i)hi));
        r = (rs_v8)((above & (rs_v8i)r) | (~above & (rs_v8i)lo));
        r = (r + magic) - magic;
        rs_v8h s = __builtin_convertvector(__builtin_convertvector(r, rs_v8i), rs_v8h);
        RS_STORE(dst + j, s);
    }
}

/* dst[q*up + c] = rows[c*per + q] for the n outputs, as int16 LE. A constant `up` lets the
 * compiler turn this into shuffles. */
RS_INLINE void rs_weave(const int16_t *rows, long per, long up, long n, unsigned char *dst)
{
    long whole = n / up;
    for (long q = 0; q < whole; q++)
        for (long c = 0; c < up; c++) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(dst + 2 * (q * up + c), rows + c * per + q, 2);
#else
            uint16_t s = (uint16_t)rows[c * per + q];
            dst[2 * (q * up + c)] = (unsigned char)(s & 0xFF);
            dst[2 * (q * up + c) + 1] = (unsigned char)(s >> 8);
#endif
        }
    for (long j = whole * up; j < n; j++) {
        uint16_t s = (uint16_t)rows[(j - whole * up) * per + whole];
        dst[2 * j] = (unsigned char)(s & 0xFF);
        dst[2 * j + 1] = (unsigned char)(s >> 8);
    }
}

/* dst[r*stride + k] = x[r + k*down] for k < stride, zeros past the end of x. */
RS_INLINE void rs_split(const float *x, long len, long down, long stride, float *z)
{
    long whole = len / down;
    for (long k = 0; k < whole; k++)
        for (long r = 0; r < down; r++)
            z[r * stride + k] = x[k * down + r];
    for (long r = 0; r < down; r++)
        for (long k = whole; k < stride; k++)
            z[r * stride + k] = r + k * down < len ? x[r + k * down] : 0.0f;
}

/* Scratch layout for one call: the down streams, one row of floats and one of int16 per
 * phase class, and the tap offsets; each region 32-byte aligned relative to the start. */
typedef struct {
    long stride; /* floats per stream */
    long per;    /* entries per row */
    size_t streams, rows, pcm, off, size; /* byte offsets, and the total */
} rs_layout;

static inline size_t rs_align(size_t n) { return (n + 31) & ~(size_t)31; }

/* Lanes the widest block of a phase class of `count` outputs spans (see rs_phase). */
static inline long rs_span(long count)
{
    return count > 2 * RS_LANES ? 4 * RS_LANES : count > RS_LANES ? 2 * RS_LANES : RS_LANES;
}

static inline rs_layout rs_plan_scratch(long up, long down, long taps, long len, long n_out)
{
    rs_layout l;
    long most = (n_out + up - 1) / up; /* outputs in the largest phase class */
    l.stride = down > 1 ? (len + down - 1) / down + rs_span(most) : 0;
    l.per = most + RS_SLACK;
    l.streams = 0;
    l.rows = rs_align((size_t)(down * l.stride) * sizeof(float));
    l.pcm = l.rows + rs_align((size_t)(up * l.per) * sizeof(float));
    l.off = l.pcm + rs_align((size_t)(up * l.per) * sizeof(int16_t));
    l.size = l.off + rs_align((size_t)taps * sizeof(long));
    return l;
}

/* Bytes of scratch space rs_run needs. */
static inline size_t rs_scratch_size(long up, long down, long taps, long len, long n_out)
{
    return rs_plan_scratch(up, down, taps, len, n_out).size;
}

/* Outputs j0 .. j0+n_out-1 into dst as int16 LE.
 *
 * x[0 .. len) is the history from absolute input index `start`, followed by RS_SLACK zeros;
 * it reaches back taps-1 samples before the newest sample of output j0. scratch holds
 * rs_scratch_size(...) bytes.
 */
RS_CLONES static void rs_run(const float *table, long up, long down, long centre, long taps,
                             int64_t j0, long n_out, const float *x, long len, int64_t start,
                             unsigned char *scratch, unsigned char *dst)
{
    rs_layout l = rs_plan_scratch(up, down, taps, len, n_out);
    float *rows = (float *)(scratch + l.rows);
    int16_t *pcm = (int16_t *)(scratch + l.pcm);
    long *off = (long *)(scratch + l.off);
    const float *src = x;
    if (down > 1) {
        float *z = (float *)(scratch + l.streams);
        if (down == 2)
            rs_split(x, len, 2, l.stride, z);
        else if (down == 3)
            rs_split(x, len, 3, l.stride, z);
        else
            rs_split(x, len, down, l.stride, z);
        src = z;
    }
    long classes = up < n_out ? up : n_out;
    if ((n_out + up - 1) / up <= RS_LANES) {
        /* Every class fits one vector: take them four at a time; a last, short group
         * repeats its first class into a discarded row. */
        float spare[RS_LANES];
        for (long c = 0; c < classes; c += 4) {
            const float *coef[4];
            float *out[4];
            long b[4];
            for (int v = 0; v < 4; v++) {
                long cv = c + v < classes ? c + v : c;
                int64_t pos = (j0 + cv) * down + centre;
                coef[v] = table + (pos % up) * taps;
                b[v] = (long)(pos / up - start);
                out[v] = cv == c + v ? rows + cv * l.per : spare;
            }
            rs_classes4(coef, taps, src, down, l.stride, b, out);
        }
    } else {
        for (long c = 0; c < classes; c++) {
            int64_t pos = (j0 + c) * down + centre;
            long b = (long)(pos / up - start), r = b % down, k = b / down;
            for (long i = 0; i < taps; i++) {
                off[i] = r * l.stride + k; /* b - i when down == 1 */
                if (--r < 0) {
                    r = down - 1;
                    k--;
                }
            }
            rs_phase(table + (pos % up) * taps, taps, src, off, (n_out - c + up - 1) / up,
                     rows + c * l.per);
        }
    }
    for (long c = 0; c < classes; c++)
        rs_round(rows + c * l.per, (n_out - c + up - 1) / up, pcm + c * l.per);
    if (up == 1)
        rs_weave(pcm, l.per, 1, n_out, dst);
    else if (up == 2)
        rs_weave(pcm, l.per, 2, n_out, dst);
    else if (up == 3)
        rs_weave(pcm, l.per, 3, n_out, dst);
    else if (up == 4)
        rs_weave(pcm, l.per, 4, n_out, dst);
    else
        rs_weave(pcm, l.per, up, n_out, dst);
}

#endif
