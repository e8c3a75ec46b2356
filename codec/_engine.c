/* emzip's v4 coding engine: one compiled pass per stripe of a slice (or per stripe of a block).
 *
 * For every voxel, in raster order inside its stripe, the engine gathers the causal context,
 * runs the block's integer model (int32 arithmetic only, so every machine, compiler, thread
 * count and vector width computes the same integers), looks up the rANS table row the model
 * picks and codes the voxel. Encoder and decoder run the same function (CODE_VOXELS), which
 * is what makes them agree: the encoder reads each voxel from the input where the decoder
 * reads it from the stream.
 *
 * The format (docs/format.md, "v4") is specified independently of this file; codec/reference.py
 * decodes it in plain Python and the tests compare the two bit for bit.
 *
 * Context of voxel (z, y, x) in a stripe of rows [y0, y1):
 *  - previous-slice inputs (dz in {1, 2}, |dy|, |dx| <= 3): slice max(z - dz, 0) when z > 0,
 *    coordinates clamped into the slice (edge replication); every input is 0 when z == 0.
 *  - in-slice causal inputs (dy < 0, or dy == 0 and dx < 0; |dy|, |dx| <= 3): rows above y0
 *    read 0; in a row above y, x is clamped into the slice; in row y, x < 0 reads 0.
 * Inputs are grey - 128.
 *
 * rANS: 64-bit state, 32-bit words, PROB_BITS-bit frequencies (ryg's rans64). The encoder
 * writes words backwards; the stream stores them in decoding order, first the two words of
 * the final state (low, high), then the renormalisation words.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PROB_BITS 20
#define PROB_SCALE (1u << PROB_BITS)
#define RANS_L (1ull << 31)
#define N_SYMBOLS 256
#define CUM_STRIDE (N_SYMBOLS + 1)
#define LUT_BITS 10
#define LUT_STRIDE (1u << LUT_BITS)
#define MARGIN 3
#define MEAN_FRACTIONS 4 /* means on a grid of 1/4 grey level: table row = scale * 4 + fraction */
#define MAX_HIDDEN 64
#define MAX_INPUTS 64
#define HEADER_INTS 8
/* Largest extent of a block along any axis (docs/format.md): a decoding thread's scratch grows
 * with the row width, so the width is bounded before anything is allocated. */
#define MAX_EXTENT (1 << 16)
/* Largest |partial sum| of any int32 accumulator the model can reach (codec/v4/freeze.py). */
#define SUM_LIMIT (1ll << 30)
#define INPUT_MAX 128      /* |grey - 128| */
#define ACTIVATION_MAX 255 /* activations are 0..255 */
/* shift_scale 24: every voxel takes scale index 0 (docs/format.md, "shift_scale"). */
#define SHIFT_SCALE_CONSTANT 24

typedef struct {
    int hidden, n_prev, n_cur, shift1, shift2, shift_mean, shift_scale, n_scales;
    const int32_t *off_prev; /* n_prev x (dz, dy, dx) */
    const int32_t *off_cur;  /* n_cur x (dy, dx) */
    const int32_t *w1p;      /* n_prev x hidden, int16 range */
    const int32_t *w1c;      /* n_cur x hidden, int16 range */
    const int32_t *b1;       /* hidden */
    const int32_t *w2;       /* hidden (in) x hidden (out), int16 range */
    const int32_t *b2;       /* hidden */
    const int32_t *w3;       /* 2 x hidden: mean, scale */
    const int32_t *b3;       /* 2 */
    const int32_t *lp;       /* n_prev: the linear skip, int16 range */
    const int32_t *lc;       /* n_cur, int16 range */
    int32_t bl;
} Model;

typedef struct {
    const uint32_t *cum; /* rows x 257 */
    /* rows x LUT_STRIDE, for the first symbol s whose interval reaches slot >> (PROB_BITS - LUT_BITS):
     * s | cum[s] << 8 | (cum[s + 1] - cum[s]) << 32, so that one load usually settles a symbol */
    const uint64_t *lut;
    Py_ssize_t rows;
} Tables;

static int in_int16(const int32_t *v, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (v[i] < -32767 || v[i] > 32767) return 0;
    return 1;
}

static int64_t magnitude(int32_t v) { return v < 0 ? -(int64_t)v : (int64_t)v; }

/* sum over i < n of |v[i * stride]| (int64: at most 64 x 2**31, no overflow). */
static int64_t sum_abs(const int32_t *v, int n, int stride) {
    int64_t sum = 0;
    for (int i = 0; i < n; i++) sum += magnitude(v[(size_t)i * stride]);
    return sum;
}

/* Whether every int32 accumulator stays below SUM_LIMIT for any input (the same bound as
 * codec/v4/freeze.py's check_bounds): then no sum, activation or output of the model can leave
 * int32, in any order of summation. */
static int sums_bounded(const Model *m) {
    const int h = m->hidden;
    for (int j = 0; j < h; j++) {
        const int64_t layer1 = (sum_abs(m->w1p + j, m->n_prev, h) + sum_abs(m->w1c + j, m->n_cur, h)) * INPUT_MAX +
                               magnitude(m->b1[j]);
        const int64_t layer2 = sum_abs(m->w2 + j, h, h) * ACTIVATION_MAX + magnitude(m->b2[j]);
        if (layer1 >= SUM_LIMIT || layer2 >= SUM_LIMIT) return 0;
    }
    const int64_t skip = (sum_abs(m->lp, m->n_prev, 1) + sum_abs(m->lc, m->n_cur, 1)) * INPUT_MAX + magnitude(m->bl);
    const int64_t mean = skip + sum_abs(m->w3, h, 1) * ACTIVATION_MAX + magnitude(m->b3[0]);
    const int64_t scale = sum_abs(m->w3 + h, h, 1) * ACTIVATION_MAX + magnitude(m->b3[1]);
    return mean < SUM_LIMIT && scale < SUM_LIMIT;
}

/* Parse the flat int32 model array (layout: docs/format.md, MODL). Returns 0 or sets a
 * ValueError. Checks every field's range, the sizes, the context offsets and the bound on the
 * sums (as codec/v4/freeze.py does before any call): arithmetic and memory safety rest on them. */
static int parse_model(const int32_t *p, Py_ssize_t n, Model *m) {
    if (n < HEADER_INTS) goto bad;
    m->hidden = p[0]; m->n_prev = p[1]; m->n_cur = p[2];
    m->shift1 = p[3]; m->shift2 = p[4]; m->shift_mean = p[5]; m->shift_scale = p[6]; m->n_scales = p[7];
    if (m->hidden < 8 || m->hidden > MAX_HIDDEN || m->hidden % 8 != 0 || m->n_prev < 0 || m->n_prev > MAX_INPUTS ||
        m->n_cur < 0 || m->n_cur > MAX_INPUTS || m->shift1 < 1 || m->shift1 > 24 || m->shift2 < 1 || m->shift2 > 24 ||
        m->shift_mean < 5 || m->shift_mean > 24 || m->shift_scale < 1 || m->shift_scale > SHIFT_SCALE_CONSTANT ||
        m->n_scales < 1 || m->n_scales > 1024)
        goto bad;
    {
        Py_ssize_t h = m->hidden, np_ = m->n_prev, nc = m->n_cur;
        Py_ssize_t need = HEADER_INTS + 3 * np_ + 2 * nc + np_ * h + nc * h + h + h * h + h + 2 * h + 2 + np_ + nc + 1;
        if (n != need) goto bad;
        const int32_t *q = p + HEADER_INTS;
        m->off_prev = q; q += 3 * np_;
        m->off_cur = q; q += 2 * nc;
        m->w1p = q; q += np_ * h;
        m->w1c = q; q += nc * h;
        m->b1 = q; q += h;
        m->w2 = q; q += h * h;
        m->b2 = q; q += h;
        m->w3 = q; q += 2 * h;
        m->b3 = q; q += 2;
        m->lp = q; q += np_;
        m->lc = q; q += nc;
        m->bl = *q;
        if (!in_int16(m->w1p, np_ * h) || !in_int16(m->w1c, nc * h) || !in_int16(m->w2, h * h) ||
            !in_int16(m->lp, np_) || !in_int16(m->lc, nc))
            goto bad;
    }
    for (int k = 0; k < m->n_prev; k++) {
        int dz = m->off_prev[3 * k], dy = m->off_prev[3 * k + 1], dx = m->off_prev[3 * k + 2];
        if (dz < 1 || dz > 2 || dy < -MARGIN || dy > MARGIN || dx < -MARGIN || dx > MARGIN) goto bad;
    }
    for (int k = 0; k < m->n_cur; k++) {
        int dy = m->off_cur[2 * k], dx = m->off_cur[2 * k + 1];
        if (dy < -MARGIN || dy > 0 || dx < -MARGIN || dx > MARGIN || (dy == 0 && dx >= 0)) goto bad;
    }
    if (!sums_bounded(m)) {
        PyErr_SetString(PyExc_ValueError, "emzip engine: model sums could leave int32 (over 2**30)");
        return -1;
    }
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "emzip engine: malformed model array");
    return -1;
}

/* The model rearranged for the kernels: layer 1 has hidden + 8 outputs, the last 8 being the
 * linear skip (column `hidden`) and zeros; inputs are taken in pairs (int16), weights
 * interleaved per pair: w[pair][out][2]. The in-slice inputs are split into those in rows above
 * the voxel (known when its row starts, so summed for the whole row at once, like the previous
 * slices) and those in its own row (summed voxel by voxel: the only sequential part). Integer
 * sums do not depend on their order, so the split changes no result. Both kernels read this. */
typedef struct {
    int H, C1;              /* hidden; stride of a voxel's partial sums: H of layer 1, then the skip at [H] */
    int pp, pa, pr;         /* input pairs: previous slices, rows above, own row (odd counts end with a zero input) */
    int na, nr;             /* in-slice inputs in rows above, in the own row */
    int idx_a[MAX_INPUTS], idx_r[MAX_INPUTS]; /* their indices among the in-slice inputs */
    int16_t *w1p, *w1a, *w1r; /* pairs x H x 2 each */
    int16_t *s1p, *s1a, *s1r; /* the skip's weights per pair (2 each), zero-padded to whole groups of 8 pairs */
    int32_t *b1;            /* H */
    int16_t *w2;            /* (H / 2) x H x 2 */
    int32_t *b2;            /* H */
} Prepared;

#define PAIR_GROUP 8 /* pairs per 256-bit vector */
#define PAIR_SLOTS (MAX_INPUTS / 2 + PAIR_GROUP) /* room for a zero-padded last group */

/* Interleave the layer-1 weights of inputs `idx` (all when NULL) into pairs: out[pair][h][2]. */
static int16_t *pair_weights(const int32_t *w, const int *idx, int n, int H) {
    int16_t *out = calloc((size_t)(n / 2 + 1) * H * 2, sizeof(int16_t));
    if (out == NULL) return NULL;
    for (int k = 0; k < n; k++)
        for (int h = 0; h < H; h++) out[((size_t)(k / 2) * H + h) * 2 + (k & 1)] = (int16_t)w[(idx ? idx[k] : k) * H + h];
    return out;
}

/* The skip's weights of inputs `idx` in the order of their pairs, zero-padded to PAIR_SLOTS pairs. */
static int16_t *skip_weights(const int32_t *skip, const int *idx, int n) {
    int16_t *out = calloc((size_t)PAIR_SLOTS * 2, sizeof(int16_t));
    if (out == NULL) return NULL;
    for (int k = 0; k < n; k++) out[k] = (int16_t)skip[idx ? idx[k] : k];
    return out;
}

static int prepare(const Model *m, Prepared *q) {
    const int H = m->hidden, C1 = H + 8; /* the skip's sum sits at [H]; +8 keeps rows of sums aligned */
    q->H = H; q->C1 = C1;
    q->na = q->nr = 0;
    for (int k = 0; k < m->n_cur; k++) {
        if (m->off_cur[2 * k] < 0) q->idx_a[q->na++] = k;
        else q->idx_r[q->nr++] = k;
    }
    q->pp = (m->n_prev + 1) / 2; q->pa = (q->na + 1) / 2; q->pr = (q->nr + 1) / 2;
    q->w1p = pair_weights(m->w1p, NULL, m->n_prev, H);
    q->w1a = pair_weights(m->w1c, q->idx_a, q->na, H);
    q->w1r = pair_weights(m->w1c, q->idx_r, q->nr, H);
    q->s1p = skip_weights(m->lp, NULL, m->n_prev);
    q->s1a = skip_weights(m->lc, q->idx_a, q->na);
    q->s1r = skip_weights(m->lc, q->idx_r, q->nr);
    q->b1 = calloc((size_t)H, sizeof(int32_t));
    q->w2 = calloc((size_t)(H / 2) * H * 2, sizeof(int16_t));
    q->b2 = calloc((size_t)H, sizeof(int32_t));
    if (!q->w1p || !q->w1a || !q->w1r || !q->s1p || !q->s1a || !q->s1r || !q->b1 || !q->w2 || !q->b2) return -1;
    for (int h = 0; h < H; h++) q->b1[h] = m->b1[h];
    for (int i = 0; i < H; i++)
        for (int j = 0; j < H; j++) q->w2[((size_t)(i / 2) * H + j) * 2 + (i & 1)] = (int16_t)m->w2[i * H + j];
    for (int j = 0; j < H; j++) q->b2[j] = m->b2[j];
    return 0;
}

static void release_prepared(Prepared *q) {
    free(q->w1p); free(q->w1a); free(q->w1r); free(q->s1p); free(q->s1a); free(q->s1r);
    free(q->b1); free(q->w2); free(q->b2);
    memset(q, 0, sizeof *q);
}

static inline int32_t activation(int32_t acc, int shift) {
    int32_t v = acc > 0 ? acc : 0;
    v = (v + (1 << (shift - 1))) >> shift;
    return v > 255 ? 255 : v;
}

/* floor(v / 2**shift) for |v| < 2**32 and 0 <= shift <= 30, without a signed right shift (its
 * result for a negative value is implementation-defined) and without a branch: v + 2**(32 + shift)
 * is positive and below 2**63, shifted as unsigned, then 2**32 taken off again. The model's bound
 * (sums_bounded: every sum below 2**30, plus the rounding term) keeps |v| below 2**32. */
static inline int64_t floor_shift(int64_t v, int shift) {
    return (int64_t)((uint64_t)(v + ((int64_t)1 << (32 + shift))) >> shift) - ((int64_t)1 << 32);
}

static inline uint32_t pair_of(int16_t a, int16_t b) { return (uint32_t)(uint16_t)a | ((uint32_t)(uint16_t)b << 16); }

/* pair_of(p[0], p[1]) as one load where the byte order allows it. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PAIR_LOADS 1
#else
#define PAIR_LOADS 0
#endif
static inline uint32_t load_pair(const int16_t *p) {
#if PAIR_LOADS
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return pair_of(p[0], p[1]);
#endif
}

/* ---- portable kernels: plain C, the definition of the arithmetic ---- */

/* acc[0..C1) += sum over pairs of w[pair][o][0] * in[pair].lo + w[pair][o][1] * in[pair].hi */
static inline void layer1_portable(const int16_t *w, int pairs, int C1, const uint32_t *in, int32_t *acc) {
    for (int i = 0; i < pairs; i++) {
        const int32_t a = (int16_t)(in[i] & 0xffff), b = (int16_t)(in[i] >> 16);
        const int16_t *wi = w + (size_t)i * C1 * 2;
        for (int o = 0; o < C1; o++) acc[o] += wi[2 * o] * a + wi[2 * o + 1] * b;
    }
}

/* The skip's sum over `pairs` input pairs: sum of sw[2i] * in[i].lo + sw[2i + 1] * in[i].hi. */
static inline int32_t skip_portable(const int16_t *sw, int pairs, const uint32_t *in) {
    int32_t sum = 0;
    for (int i = 0; i < pairs; i++) sum += sw[2 * i] * (int16_t)(in[i] & 0xffff) + sw[2 * i + 1] * (int16_t)(in[i] >> 16);
    return sum;
}

/* The rest of a voxel's model after the previous-slice part: in-slice inputs of layer 1, both
 * activations, layer 2 and the two outputs. pre: the voxel's C1 layer-1 sums so far; cin: its
 * in-slice input pairs. Writes the skip (lin), the mean row (om) and the scale row (os). */
static inline void voxel_portable(const Model *m, const Prepared *q, const int32_t *pre, const uint32_t *cin,
                                  int32_t *lin, int32_t *om, int32_t *os) {
    const int H = q->H;
    int32_t acc[MAX_HIDDEN + 8], acc2[MAX_HIDDEN];
    uint32_t h1[MAX_HIDDEN / 2];
    memcpy(acc, pre, sizeof(int32_t) * H);
    layer1_portable(q->w1r, q->pr, H, cin, acc);
    for (int h = 0; h < H; h += 2)
        h1[h / 2] = pair_of((int16_t)activation(acc[h], m->shift1), (int16_t)activation(acc[h + 1], m->shift1));
    memcpy(acc2, q->b2, sizeof(int32_t) * H);
    layer1_portable(q->w2, H / 2, H, h1, acc2);
    int32_t sm = m->b3[0], ss = m->b3[1];
    for (int j = 0; j < H; j++) {
        const int32_t v = activation(acc2[j], m->shift2);
        sm += m->w3[j] * v;
        ss += m->w3[H + j] * v;
    }
    *lin = pre[H] + skip_portable(q->s1r, q->pr, cin);
    *om = sm;
    *os = ss;
}

/* ---- AVX2 kernels: the same sums with vpmaddwd (int16 x int16 -> int32, exact) ---- */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_KERNEL 1
#define AVX2_INLINE __attribute__((target("avx2"), always_inline)) static inline
/* acc[0 .. 8 CHUNKS) += the pairs' products; CHUNKS a constant, so the sums stay in registers. */
#define DEFINE_MADD_AVX2(CHUNKS)                                                                              \
    AVX2_INLINE void madd_avx2_##CHUNKS(const int16_t *w, int pairs, const uint32_t *in, int32_t *acc) {      \
        __m256i a[CHUNKS];                                                                                    \
        for (int j = 0; j < CHUNKS; j++) a[j] = _mm256_loadu_si256((const __m256i *)(acc + 8 * j));           \
        for (int i = 0; i < pairs; i++) {                                                                     \
            const __m256i p = _mm256_set1_epi32((int)in[i]);                                                  \
            const int16_t *wi = w + (size_t)i * CHUNKS * 16;                                                  \
            for (int j = 0; j < CHUNKS; j++)                                                                  \
                a[j] = _mm256_add_epi32(a[j],                                                                 \
                                        _mm256_madd_epi16(p, _mm256_loadu_si256((const __m256i *)(wi + 16 * j)))); \
        }                                                                                                     \
        for (int j = 0; j < CHUNKS; j++) _mm256_storeu_si256((__m256i *)(acc + 8 * j), a[j]);                \
    }
DEFINE_MADD_AVX2(1)
DEFINE_MADD_AVX2(2)
DEFINE_MADD_AVX2(3)
DEFINE_MADD_AVX2(4)
DEFINE_MADD_AVX2(5)
DEFINE_MADD_AVX2(8)
DEFINE_MADD_AVX2(9)

AVX2_INLINE int32_t sum_avx2(__m256i v);

/* skip_portable's sum, 8 pairs per vpmaddwd (the weights past `pairs` are zero). */
AVX2_INLINE int32_t skip_avx2(const int16_t *sw, int pairs, const uint32_t *in) {
    __m256i sum = _mm256_setzero_si256();
    for (int i = 0; i < pairs; i += PAIR_GROUP)
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(in + i)),
                                                      _mm256_loadu_si256((const __m256i *)(sw + 2 * i))));
    return sum_avx2(sum);
}

AVX2_INLINE void layer1_avx2(const int16_t *w, int pairs, int C1, const uint32_t *in, int32_t *acc) {
    switch (C1 / 8) {
        case 1: madd_avx2_1(w, pairs, in, acc); break;
        case 2: madd_avx2_2(w, pairs, in, acc); break;
        case 3: madd_avx2_3(w, pairs, in, acc); break;
        case 4: madd_avx2_4(w, pairs, in, acc); break;
        case 5: madd_avx2_5(w, pairs, in, acc); break;
        case 8: madd_avx2_8(w, pairs, in, acc); break;
        case 9: madd_avx2_9(w, pairs, in, acc); break;
        default: layer1_portable(w, pairs, C1, in, acc);
    }
}

AVX2_INLINE __m256i activation_avx2(__m256i acc, __m128i shift, __m256i half) {
    const __m256i v = _mm256_sra_epi32(_mm256_add_epi32(_mm256_max_epi32(acc, _mm256_setzero_si256()), half), shift);
    return _mm256_min_epi32(v, _mm256_set1_epi32(255));
}

AVX2_INLINE int32_t sum_avx2(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* voxel_portable's sums, fused for H = 8 * NH: every accumulator stays in a register. */
#define DEFINE_VOXEL_AVX2(NH)                                                                                   \
    AVX2_INLINE void voxel_avx2_##NH(const Model *m, const Prepared *q, const int32_t *pre, const uint32_t *cin, \
                                     int32_t *lin, int32_t *om, int32_t *os) {                                  \
        __m256i a[NH], b[NH];                                                                                   \
        uint32_t h1[4 * NH + 4];                                                                                \
        for (int j = 0; j < NH; j++) a[j] = _mm256_loadu_si256((const __m256i *)(pre + 8 * j));                \
        for (int i = 0; i < q->pr; i++) {                                                                       \
            const __m256i p = _mm256_set1_epi32((int)cin[i]);                                                   \
            const int16_t *wi = q->w1r + (size_t)i * NH * 16;                                                   \
            for (int j = 0; j < NH; j++)                                                                        \
                a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(p, _mm256_loadu_si256((const __m256i *)(wi + 16 * j)))); \
        }                                                                                                       \
        *lin = pre[8 * NH] + skip_avx2(q->s1r, q->pr, cin);                                                     \
        const __m128i s1 = _mm_cvtsi32_si128(m->shift1), s2 = _mm_cvtsi32_si128(m->shift2);                     \
        const __m256i half1 = _mm256_set1_epi32(1 << (m->shift1 - 1)), half2 = _mm256_set1_epi32(1 << (m->shift2 - 1)); \
        for (int j = 0; j < NH; j += 2) {                                                                       \
            const __m256i lo = activation_avx2(a[j], s1, half1);                                                \
            const __m256i hi = j + 1 < NH ? activation_avx2(a[j + 1], s1, half1) : _mm256_setzero_si256();      \
            _mm256_storeu_si256((__m256i *)(h1 + 4 * j), _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8)); \
        }                                                                                                       \
        __m256i c[NH]; /* a second set of sums: two shorter dependency chains */                            \
        for (int j = 0; j < NH; j++) {                                                                          \
            b[j] = _mm256_loadu_si256((const __m256i *)(q->b2 + 8 * j));                                        \
            c[j] = _mm256_setzero_si256();                                                                      \
        }                                                                                                       \
        for (int i = 0; i < 4 * NH; i += 2) {                                                                   \
            const __m256i p = _mm256_set1_epi32((int)h1[i]), r = _mm256_set1_epi32((int)h1[i + 1]);             \
            const int16_t *wi = q->w2 + (size_t)i * NH * 16;                                                    \
            for (int j = 0; j < NH; j++) {                                                                      \
                b[j] = _mm256_add_epi32(b[j], _mm256_madd_epi16(p, _mm256_loadu_si256((const __m256i *)(wi + 16 * j)))); \
                c[j] = _mm256_add_epi32(c[j], _mm256_madd_epi16(r, _mm256_loadu_si256((const __m256i *)(wi + NH * 16 + 16 * j)))); \
            }                                                                                                   \
        }                                                                                                       \
        for (int j = 0; j < NH; j++) b[j] = _mm256_add_epi32(b[j], c[j]);                                       \
        __m256i sm = _mm256_setzero_si256(), ss = _mm256_setzero_si256();                                       \
        for (int j = 0; j < NH; j++) {                                                                          \
            const __m256i v = activation_avx2(b[j], s2, half2);                                                 \
            sm = _mm256_add_epi32(sm, _mm256_mullo_epi32(v, _mm256_loadu_si256((const __m256i *)(m->w3 + 8 * j)))); \
            ss = _mm256_add_epi32(ss, _mm256_mullo_epi32(v, _mm256_loadu_si256((const __m256i *)(m->w3 + 8 * NH + 8 * j)))); \
        }                                                                                                       \
        *om = m->b3[0] + sum_avx2(sm);                                                                          \
        *os = m->b3[1] + sum_avx2(ss);                                                                          \
    }
DEFINE_VOXEL_AVX2(1)
DEFINE_VOXEL_AVX2(2)
DEFINE_VOXEL_AVX2(4)

AVX2_INLINE void voxel_avx2(const Model *m, const Prepared *q, const int32_t *pre, const uint32_t *cin, int32_t *lin,
                            int32_t *om, int32_t *os) {
    switch (q->H) {
        case 8: voxel_avx2_1(m, q, pre, cin, lin, om, os); break;
        case 16: voxel_avx2_2(m, q, pre, cin, lin, om, os); break;
        case 32: voxel_avx2_4(m, q, pre, cin, lin, om, os); break;
        default: voxel_portable(m, q, pre, cin, lin, om, os);
    }
}
#endif

static int kernel_is_avx2 = 0;
/* Rows [y0 - M, y1 + M) of slice `z` as grey - 128, (y1 - y0 + 2M) x (X + 2M), coordinates
 * clamped into the slice (edges replicated); zeros if z < 0. */
static void padded_rows(const uint8_t *vol, int Y, int X, int z, int y0, int y1, int16_t *out) {
    const int W = X + 2 * MARGIN;
    for (int py = 0; py < y1 - y0 + 2 * MARGIN; py++) {
        int16_t *row = out + (size_t)py * W;
        if (z < 0) {
            memset(row, 0, sizeof(int16_t) * W);
            continue;
        }
        int y = y0 + py - MARGIN;
        y = y < 0 ? 0 : (y >= Y ? Y - 1 : y);
        const uint8_t *src = vol + ((size_t)z * Y + y) * X;
        for (int px = 0; px < W; px++) {
            int x = px - MARGIN;
            x = x < 0 ? 0 : (x >= X ? X - 1 : x);
            row[px] = (int16_t)((int)src[x] - 128);
        }
    }
}

typedef struct {
    uint64_t state;
    Py_ssize_t pos; /* next word to read */
    const uint32_t *words;
    Py_ssize_t n_words;
    int failed;
} Decoder;

typedef struct {
    uint32_t *start_freq; /* encoder: per voxel (start, freq) pairs, in coding order */
    Py_ssize_t count;
} Recorder;

/* The symbol whose interval holds `slot` in table row `row`, with its start and frequency. */
static inline int find_symbol(const Tables *t, Py_ssize_t row, uint32_t slot, uint32_t *start, uint32_t *freq) {
    const uint64_t e = t->lut[row * LUT_STRIDE + (slot >> (PROB_BITS - LUT_BITS))];
    int s = (int)(e & 255);
    *start = (uint32_t)(e >> 8) & 0xFFFFFF;
    *freq = (uint32_t)(e >> 32);
    if (slot - *start >= *freq) { /* the bucket holds a boundary and slot lies past it */
        const uint32_t *cum = t->cum + row * CUM_STRIDE;
        while (cum[s + 1] <= slot) s++;
        *start = cum[s];
        *freq = cum[s + 1] - cum[s];
    }
    return s;
}

typedef struct {
    int16_t *prev1, *prev2, *cur;
    int32_t *pre; /* X x C1: layer-1 sums (and the skip) over the previous-slice inputs */
} Scratch;

#define ROWS_FN code_rows_portable
#define ROWS_ATTR
#define MADD layer1_portable
#define SKIP skip_portable
#define VOXEL voxel_portable
#include "_engine_rows.h"
#undef ROWS_FN
#undef ROWS_ATTR
#undef MADD
#undef SKIP
#undef VOXEL
#ifdef HAVE_AVX2_KERNEL
#define ROWS_FN code_rows_avx2
#define ROWS_ATTR __attribute__((target("avx2")))
#define MADD layer1_avx2
#define SKIP skip_avx2
#define VOXEL voxel_avx2
#include "_engine_rows.h"
#undef ROWS_FN
#undef ROWS_ATTR
#undef MADD
#undef SKIP
#undef VOXEL
#endif

typedef void (*RowsFn)(uint8_t *, int, int, int, int, int, const Model *, const Prepared *, const Tables *, Decoder *,
                       Recorder *, Scratch *);
static RowsFn code_rows = code_rows_portable;

/* PyArg "O&" converter: a Python int within C int range into *out; TypeError for a non-int,
 * ValueError for one out of range (never OverflowError: callers catch ValueError). */
static int int_arg(PyObject *obj, void *out) {
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "emzip engine: expected an int, got %s", Py_TYPE(obj)->tp_name);
        return 0;
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) return 0;
    if (overflow || v < -(long long)MAX_EXTENT * 64 || v > (long long)MAX_EXTENT * 64) {
        PyErr_SetString(PyExc_ValueError, "emzip engine: integer argument out of range");
        return 0;
    }
    *(int *)out = (int)v;
    return 1;
}

/* Every table row a model may pick is a valid rANS row: cum[0] = 0, cum[256] = 2**PROB_BITS,
 * every frequency >= 1; and each LUT entry is exactly the first symbol whose interval reaches
 * its bucket, with that symbol's start and frequency. Cheap (about 0.3 ms for 512 rows); it is
 * what keeps find_symbol inside the row and the encoder from dividing by zero. */
static int check_tables(const Tables *t) {
    for (Py_ssize_t r = 0; r < t->rows; r++) {
        const uint32_t *cum = t->cum + r * CUM_STRIDE;
        const uint64_t *lut = t->lut + r * LUT_STRIDE;
        if (cum[0] != 0 || cum[N_SYMBOLS] != PROB_SCALE) return -1;
        for (int s = 0; s < N_SYMBOLS; s++)
            if (cum[s + 1] <= cum[s]) return -1;
        int s = 0;
        for (uint32_t b = 0; b < LUT_STRIDE; b++) {
            const uint32_t first_slot = b << (PROB_BITS - LUT_BITS);
            while (cum[s + 1] <= first_slot) s++;
            const uint64_t expected = (uint64_t)s | ((uint64_t)cum[s] << 8) | ((uint64_t)(cum[s + 1] - cum[s]) << 32);
            if (lut[b] != expected) return -1;
        }
    }
    return 0;
}

typedef struct {
    Py_buffer vol, model, cum, lut;
    Model m;
    Prepared q;
    Tables t;
    int Z, Y, X;
} Common;

static void release_common(Common *c) {
    release_prepared(&c->q);
    if (c->vol.obj) PyBuffer_Release(&c->vol);
    if (c->model.obj) PyBuffer_Release(&c->model);
    if (c->cum.obj) PyBuffer_Release(&c->cum);
    if (c->lut.obj) PyBuffer_Release(&c->lut);
}

/* PyObject_GetBuffer, with a BufferError (read-only, say) given as the TypeError it is to a caller. */
static int get_buffer(PyObject *obj, Py_buffer *view, int flags, const char *what) {
    if (PyObject_GetBuffer(obj, view, flags) == 0) return 0;
    if (PyErr_ExceptionMatches(PyExc_BufferError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "emzip engine: %s must be a C-contiguous%s buffer", what,
                     flags & PyBUF_WRITABLE ? ", writable" : "");
    }
    view->obj = NULL;
    return -1;
}

static int setup_common(Common *c, PyObject *vol, int writable, PyObject *model, PyObject *cum, PyObject *lut) {
    memset(&c->vol, 0, sizeof(Py_buffer) * 4);
    memset(&c->q, 0, sizeof c->q);
    if (get_buffer(vol, &c->vol, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS : PyBUF_C_CONTIGUOUS, "volume") < 0)
        return -1;
    if (get_buffer(model, &c->model, PyBUF_C_CONTIGUOUS, "model") < 0) return -1;
    if (get_buffer(cum, &c->cum, PyBUF_C_CONTIGUOUS, "cum table") < 0) return -1;
    if (get_buffer(lut, &c->lut, PyBUF_C_CONTIGUOUS, "lut table") < 0) return -1;
    if (c->Z < 1 || c->Y < 1 || c->X < 1 || c->Z > MAX_EXTENT || c->Y > MAX_EXTENT || c->X > MAX_EXTENT) {
        PyErr_SetString(PyExc_ValueError, "emzip engine: block extent out of range (1 to MAX_EXTENT per axis)");
        return -1;
    }
    if ((Py_ssize_t)c->Z * c->Y * c->X != c->vol.len) {
        PyErr_SetString(PyExc_ValueError, "emzip engine: volume buffer does not match its shape");
        return -1;
    }
    if ((uintptr_t)c->model.buf % 4 || (uintptr_t)c->cum.buf % 4 || (uintptr_t)c->lut.buf % 8) {
        PyErr_SetString(PyExc_ValueError, "emzip engine: model or table buffer is not aligned to its items");
        return -1;
    }
    if (c->model.len % 4 != 0 || parse_model((const int32_t *)c->model.buf, c->model.len / 4, &c->m) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "emzip engine: malformed model array");
        return -1;
    }
    c->t.rows = c->cum.len / (Py_ssize_t)(4 * CUM_STRIDE);
    if (c->cum.len != c->t.rows * 4 * CUM_STRIDE || c->lut.len != c->t.rows * LUT_STRIDE * 8 ||
        c->t.rows != (Py_ssize_t)c->m.n_scales * MEAN_FRACTIONS) {
        PyErr_SetString(PyExc_ValueError, "emzip engine: tables do not match the model");
        return -1;
    }
    c->t.cum = (const uint32_t *)c->cum.buf;
    c->t.lut = (const uint64_t *)c->lut.buf;
    if (check_tables(&c->t) < 0) {
        PyErr_SetString(PyExc_ValueError, "emzip engine: malformed rANS tables");
        return -1;
    }
    if (prepare(&c->m, &c->q) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int alloc_scratch(Scratch *s, const Common *c, int rows) {
    const size_t plane = (size_t)(rows + 2 * MARGIN) * (c->X + 2 * MARGIN);
    s->prev1 = malloc(sizeof(int16_t) * plane);
    s->prev2 = malloc(sizeof(int16_t) * plane);
    s->cur = malloc(sizeof(int16_t) * (size_t)(rows + MARGIN) * (c->X + 2 * MARGIN));
    s->pre = malloc(sizeof(int32_t) * (size_t)c->X * c->q.C1);
    if (!s->prev1 || !s->prev2 || !s->cur || !s->pre) return -1;
    return 0;
}

static void free_scratch(Scratch *s) {
    free(s->prev1); free(s->prev2); free(s->cur); free(s->pre);
    memset(s, 0, sizeof *s);
}

/* encode_stripe(volume, Z, Y, X, y0, y1, model, cum, lut) -> bytes: the stripe's rANS stream
 * over all slices (words in decoding order, little-endian). */
static PyObject *encode_stripe(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *vol, *model, *cum, *lut;
    Common c;
    int y0, y1;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "OO&O&O&O&O&OOO", &vol, int_arg, &c.Z, int_arg, &c.Y, int_arg, &c.X, int_arg, &y0,
                          int_arg, &y1, &model, &cum, &lut))
        return NULL;
    if (setup_common(&c, vol, 0, model, cum, lut) < 0) { release_common(&c); return NULL; }
    if (y0 < 0 || y1 > c.Y || y0 >= y1) {
        release_common(&c);
        PyErr_SetString(PyExc_ValueError, "emzip engine: bad stripe rows");
        return NULL;
    }
    const Py_ssize_t count = (Py_ssize_t)c.Z * (y1 - y0) * c.X;
    Scratch s;
    memset(&s, 0, sizeof s);
    Recorder rec = {malloc(sizeof(uint32_t) * 2 * (size_t)count), 0};
    /* Worst case: PROB_BITS bits per symbol plus the final state. */
    const Py_ssize_t cap = count * PROB_BITS / 32 + 8;
    uint32_t *words = malloc(sizeof(uint32_t) * (size_t)cap);
    int ok = rec.start_freq != NULL && words != NULL && alloc_scratch(&s, &c, y1 - y0) == 0;
    Py_ssize_t n = 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        for (int z = 0; z < c.Z; z++)
            code_rows((uint8_t *)c.vol.buf, c.Y, c.X, z, y0, y1, &c.m, &c.q, &c.t, NULL, &rec, &s);
        /* rANS encodes in reverse; words are produced last-to-first and written from the end. */
        uint64_t x = RANS_L;
        Py_ssize_t at = cap;
        for (Py_ssize_t i = count - 1; i >= 0; i--) {
            const uint64_t start = rec.start_freq[2 * i], freq = rec.start_freq[2 * i + 1];
            const uint64_t x_max = ((RANS_L >> PROB_BITS) << 32) * freq;
            if (x >= x_max) {
                words[--at] = (uint32_t)x;
                x >>= 32;
            }
            x = ((x / freq) << PROB_BITS) + (x % freq) + start;
        }
        words[--at] = (uint32_t)(x >> 32);
        words[--at] = (uint32_t)x;
        n = cap - at;
        memmove(words, words + at, sizeof(uint32_t) * (size_t)n);
        Py_END_ALLOW_THREADS
    }
    free(rec.start_freq);
    free_scratch(&s);
    release_common(&c);
    if (!ok) {
        free(words);
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize((const char *)words, n * 4);
    free(words);
    return result;
}

/* A barrier for the decoding threads (pthread_barrier_t is missing on some platforms). */
typedef struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int parties, waiting, generation;
    int open; /* set once every thread that could be started has been: the work is then shared out */
} Barrier;

static void barrier_wait(Barrier *b) {
    pthread_mutex_lock(&b->mutex);
    const int generation = b->generation;
    if (++b->waiting == b->parties) {
        b->waiting = 0;
        b->generation++;
        pthread_cond_broadcast(&b->cond);
    } else {
        while (generation == b->generation) pthread_cond_wait(&b->cond, &b->mutex);
    }
    pthread_mutex_unlock(&b->mutex);
}

typedef struct {
    int y0, y1;
    Decoder dec;
} StripeJob;

typedef struct {
    Common *c;
    StripeJob *jobs;
    int n_jobs, n_threads, index, max_rows;
    Barrier *barrier;
    int failed; /* this worker could not allocate its scratch */
} Worker;

/* One decoding thread: stripes index, index + n_threads, ... of every slice, slice after slice;
 * the barrier keeps every thread on the same slice (a slice reads the two before it). */
static void *decode_worker(void *arg) {
    Worker *w = (Worker *)arg;
    Common *c = w->c;
    pthread_mutex_lock(&w->barrier->mutex);
    while (!w->barrier->open) pthread_cond_wait(&w->barrier->cond, &w->barrier->mutex);
    pthread_mutex_unlock(&w->barrier->mutex);
    Scratch s;
    memset(&s, 0, sizeof s);
    if (alloc_scratch(&s, c, w->max_rows) < 0) w->failed = 1;
    for (int z = 0; z < c->Z; z++) {
        if (!w->failed)
            for (int j = w->index; j < w->n_jobs; j += w->n_threads)
                if (!w->jobs[j].dec.failed) code_rows((uint8_t *)c->vol.buf, c->Y, c->X, z, w->jobs[j].y0, w->jobs[j].y1, &c->m, &c->q, &c->t,
                          &w->jobs[j].dec, NULL, &s);
        if (w->n_threads > 1) barrier_wait(w->barrier);
    }
    free_scratch(&s);
    return NULL;
}

/* decode_block(volume, Z, Y, X, model, cum, lut, stripes, threads) -> None.
 * stripes: a sequence of (y0, y1, words) covering the rows in order, words in decoding order.
 * Decodes the whole block into volume (writable) on `threads` threads; raises ValueError naming
 * the stripe whose stream ends early or does not end where its voxels do. */
static PyObject *decode_block(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *vol, *model, *cum, *lut, *stripes_obj;
    Common c;
    int threads;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "OO&O&O&OOOOO&", &vol, int_arg, &c.Z, int_arg, &c.Y, int_arg, &c.X, &model, &cum, &lut,
                          &stripes_obj, int_arg, &threads))
        return NULL;
    if (setup_common(&c, vol, 1, model, cum, lut) < 0) {
        release_common(&c);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(stripes_obj, "stripes must be a sequence of (y0, y1, words)");
    if (seq == NULL) {
        release_common(&c);
        return NULL;
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    StripeJob *jobs = calloc((size_t)(n > 0 ? n : 1), sizeof(StripeJob));
    Py_buffer *words = calloc((size_t)(n > 0 ? n : 1), sizeof(Py_buffer));
    PyObject *result = NULL;
    Py_ssize_t got = 0;
    int max_rows = 1, expected_y0 = 0;
    if (jobs == NULL || words == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, got);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_Format(PyExc_TypeError, "stripe %zd: expected a tuple (y0, y1, words)", got);
            goto done;
        }
        PyObject *words_obj = PyTuple_GET_ITEM(item, 2);
        if (!int_arg(PyTuple_GET_ITEM(item, 0), &jobs[got].y0) || !int_arg(PyTuple_GET_ITEM(item, 1), &jobs[got].y1))
            goto done;
        if (get_buffer(words_obj, &words[got], PyBUF_C_CONTIGUOUS, "a stripe's words") < 0) goto done;
        StripeJob *j = &jobs[got];
        if (j->y0 != expected_y0 || j->y1 <= j->y0 || j->y1 > c.Y || words[got].len % 4 != 0 || words[got].len < 8 ||
            (uintptr_t)words[got].buf % 4) {
            PyErr_Format(PyExc_ValueError, "stripe %zd: bad rows or a stream too short for its initial state", got);
            got++;
            goto done;
        }
        expected_y0 = j->y1;
        if (j->y1 - j->y0 > max_rows) max_rows = j->y1 - j->y0;
        j->dec.words = (const uint32_t *)words[got].buf;
        j->dec.n_words = words[got].len / 4;
        j->dec.state = (uint64_t)j->dec.words[0] | ((uint64_t)j->dec.words[1] << 32);
        j->dec.pos = 2;
    }
    if (n == 0 || expected_y0 != c.Y) {
        PyErr_SetString(PyExc_ValueError, "stripes do not cover the block's rows");
        goto done;
    }
    if (threads < 1) threads = 1;
    if (threads > n) threads = (int)n;
    {
        Worker workers[64];
        pthread_t ids[64];
        Barrier barrier = {.parties = 1, .waiting = 0, .generation = 0, .open = 0};
        int started = 0, failed = 0;
        if (threads > 64) threads = 64;
        pthread_mutex_init(&barrier.mutex, NULL);
        pthread_cond_init(&barrier.cond, NULL);
        Py_BEGIN_ALLOW_THREADS
        for (int i = 0; i < threads; i++) workers[i] = (Worker){&c, jobs, (int)n, threads, i, max_rows, &barrier, 0};
        for (int i = 1; i < threads; i++) {
            if (pthread_create(&ids[i], NULL, decode_worker, &workers[i]) != 0) break;
            started++;
        }
        /* Share the stripes among the threads that did start, then let them go. */
        pthread_mutex_lock(&barrier.mutex);
        for (int i = 0; i <= started; i++) workers[i].n_threads = started + 1;
        barrier.parties = started + 1;
        barrier.open = 1;
        pthread_cond_broadcast(&barrier.cond);
        pthread_mutex_unlock(&barrier.mutex);
        decode_worker(&workers[0]);
        for (int i = 1; i <= started; i++) pthread_join(ids[i], NULL);
        Py_END_ALLOW_THREADS
        pthread_mutex_destroy(&barrier.mutex);
        pthread_cond_destroy(&barrier.cond);
        for (int i = 0; i <= started; i++) failed |= workers[i].failed;
        if (failed) {
            PyErr_SetString(PyExc_MemoryError, "emzip engine: no memory for a decoding thread's scratch");
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const Decoder *d = &jobs[i].dec;
        if (d->failed) {
            PyErr_Format(PyExc_ValueError, "stripe %zd: stream ran out of words before its voxels did", i);
            goto done;
        }
        if (d->state != RANS_L || d->pos != d->n_words) {
            PyErr_Format(PyExc_ValueError, "stripe %zd: stream does not end where its voxels do", i);
            goto done;
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    for (Py_ssize_t i = 0; i < got && words != NULL; i++)
        if (words[i].obj) PyBuffer_Release(&words[i]);
    free(words);
    free(jobs);
    Py_DECREF(seq);
    release_common(&c);
    return result;
}

/* use_kernel("portable" | "avx2" | "auto") -> name of the kernel now in use. Both compute the
 * same integers; the tests switch between them to show it. */
static PyObject *use_kernel(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    int want_avx2 = 0;
    if (strcmp(name, "portable") == 0) {
        want_avx2 = 0;
    } else if (strcmp(name, "avx2") == 0 || strcmp(name, "auto") == 0) {
#ifdef HAVE_AVX2_KERNEL
        __builtin_cpu_init();
        want_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
        if (!want_avx2 && strcmp(name, "avx2") == 0) {
            PyErr_SetString(PyExc_RuntimeError, "this CPU or build has no AVX2 kernel");
            return NULL;
        }
    } else {
        PyErr_SetString(PyExc_ValueError, "kernel must be 'portable', 'avx2' or 'auto'");
        return NULL;
    }
#ifdef HAVE_AVX2_KERNEL
    code_rows = want_avx2 ? code_rows_avx2 : code_rows_portable;
#endif
    kernel_is_avx2 = want_avx2;
    return PyUnicode_FromString(kernel_is_avx2 ? "avx2" : "portable");
}

static PyMethodDef methods[] = {
    {"use_kernel", use_kernel, METH_VARARGS, "Select the multiply-add kernel: 'portable', 'avx2' or 'auto'."},
    {"encode_stripe", encode_stripe, METH_VARARGS, "Encode one stripe of every slice; returns the rANS words."},
    {"decode_block", decode_block, METH_VARARGS, "Decode a block's stripes in place, on threads."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "codec._engine", "emzip v4 coding engine", -1, methods};

PyMODINIT_FUNC PyInit__engine(void) {
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
#ifdef HAVE_AVX2_KERNEL
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        code_rows = code_rows_avx2;
        kernel_is_avx2 = 1;
    }
#endif
    PyModule_AddIntConstant(mod, "PROB_BITS", PROB_BITS);
    PyModule_AddIntConstant(mod, "LUT_BITS", LUT_BITS);
    PyModule_AddIntConstant(mod, "MARGIN", MARGIN);
    PyModule_AddIntConstant(mod, "MEAN_FRACTIONS", MEAN_FRACTIONS);
    PyModule_AddIntConstant(mod, "MAX_HIDDEN", MAX_HIDDEN);
    PyModule_AddIntConstant(mod, "MAX_INPUTS", MAX_INPUTS);
    PyModule_AddIntConstant(mod, "MAX_EXTENT", MAX_EXTENT);
    return mod;
}
