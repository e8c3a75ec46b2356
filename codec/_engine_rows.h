/* The body of the engine's row loop, included twice by _engine.c: once with the portable
 * kernels, once compiled for AVX2 with the vpmaddwd ones (ROWS_FN, ROWS_ATTR, MADD, SKIP, VOXEL). */
/* Code the voxels of slice z, rows [stripe_y0, y1) of a stripe.
 * decode: dec != NULL (voxels written into vol); encode: rec != NULL (voxels read from vol). */
ROWS_ATTR static void ROWS_FN(uint8_t *vol, int Y, int X, int z, int stripe_y0, int y1, const Model *m, const Prepared *q,
                      const Tables *t, Decoder *dec, Recorder *rec, Scratch *sc) {
    if (dec != NULL && dec->failed) return; /* the stream ran out in an earlier slice */
    const int H = q->H, C1 = q->C1, NP = m->n_prev;
    const int W = X + 2 * MARGIN;
    const int rows = y1 - stripe_y0;
    int16_t *cur = sc->cur;
    /* Current stripe buffer: MARGIN zero rows on top, zero margins until a row is complete. */
    memset(cur, 0, sizeof(int16_t) * (size_t)(rows + MARGIN) * W);
    padded_rows(vol, Y, X, z > 0 ? z - 1 : -1, stripe_y0, y1, sc->prev1);
    padded_rows(vol, Y, X, z > 0 ? (z >= 2 ? z - 2 : 0) : -1, stripe_y0, y1, sc->prev2);
    Py_ssize_t dprev[MAX_INPUTS];
    const int16_t *pbase[MAX_INPUTS];
    for (int k = 0; k < NP; k++) {
        pbase[k] = m->off_prev[3 * k] == 1 ? sc->prev1 : sc->prev2;
        dprev[k] = (Py_ssize_t)m->off_prev[3 * k + 1] * W + m->off_prev[3 * k + 2];
    }
    /* In-slice inputs in rows above the voxel (da) and in its own row (dr), as offsets in `cur`. */
    const int NA = q->na, NR = q->nr;
    Py_ssize_t da[MAX_INPUTS], dr[MAX_INPUTS];
    for (int k = 0; k < NA; k++) da[k] = (Py_ssize_t)m->off_cur[2 * q->idx_a[k]] * W + m->off_cur[2 * q->idx_a[k] + 1];
    for (int k = 0; k < NR; k++) dr[k] = m->off_cur[2 * q->idx_r[k] + 1];
    /* A pair of neighbours side by side in one row is read as one 32-bit word. */
    int prev_adjacent[MAX_INPUTS / 2], above_adjacent[MAX_INPUTS / 2], own_adjacent[MAX_INPUTS / 2];
    for (int i = 0; i < NP / 2; i++)
        prev_adjacent[i] = PAIR_LOADS && pbase[2 * i] == pbase[2 * i + 1] && dprev[2 * i + 1] == dprev[2 * i] + 1;
    for (int i = 0; i < NA / 2; i++) above_adjacent[i] = PAIR_LOADS && da[2 * i + 1] == da[2 * i] + 1;
    for (int i = 0; i < NR / 2; i++) own_adjacent[i] = PAIR_LOADS && dr[2 * i + 1] == dr[2 * i] + 1;
    uint32_t pin[PAIR_SLOTS] = {0}, cin[PAIR_SLOTS] = {0};
    for (int y = stripe_y0; y < y1; y++) {
        if (dec != NULL && dec->failed) return; /* the stream ran out: decode no further (work bounded by bytes) */
        /* Previous-slice part of layer 1 and of the skip, for the whole row. */
        const Py_ssize_t prow = (Py_ssize_t)(y - stripe_y0 + MARGIN) * W + MARGIN;
        for (int x = 0; x < X; x++) {
            int32_t *a = sc->pre + (size_t)x * C1;
            memcpy(a, q->b1, sizeof(int32_t) * H);
            for (int i = 0; i < NP / 2; i++)
                pin[i] = prev_adjacent[i] ? load_pair(pbase[2 * i] + prow + x + dprev[2 * i])
                                          : pair_of(pbase[2 * i][prow + x + dprev[2 * i]],
                                                    pbase[2 * i + 1][prow + x + dprev[2 * i + 1]]);
            if (NP % 2) pin[NP / 2] = pair_of(pbase[NP - 1][prow + x + dprev[NP - 1]], 0);
            MADD(q->w1p, q->pp, H, pin, a);
            a[H] = m->bl + SKIP(q->s1p, q->pp, pin);
        }
        int16_t *crow = cur + (size_t)(y - stripe_y0 + MARGIN) * W + MARGIN;
        /* Rows above the voxel are complete: their part of layer 1 too, for the whole row. */
        for (int x = 0; x < X; x++) {
            for (int i = 0; i < NA / 2; i++)
                pin[i] = above_adjacent[i] ? load_pair(crow + x + da[2 * i])
                                           : pair_of(crow[x + da[2 * i]], crow[x + da[2 * i + 1]]);
            if (NA % 2) pin[NA / 2] = pair_of(crow[x + da[NA - 1]], 0);
            int32_t *a = sc->pre + (size_t)x * C1;
            MADD(q->w1a, q->pa, H, pin, a);
            a[H] += SKIP(q->s1a, q->pa, pin);
        }
        uint8_t *out = vol + ((size_t)z * Y + y) * X;
        for (int x = 0; x < X; x++) {
            for (int i = 0; i < NR / 2; i++)
                cin[i] = own_adjacent[i] ? load_pair(crow + x + dr[2 * i])
                                         : pair_of(crow[x + dr[2 * i]], crow[x + dr[2 * i + 1]]);
            if (NR % 2) cin[NR / 2] = pair_of(crow[x + dr[NR - 1]], 0);
            int32_t lin, om, os;
            VOXEL(m, q, sc->pre + (size_t)x * C1, cin, &lin, &om, &os);
            int64_t mean4 = floor_shift((int64_t)lin + om + ((int64_t)1 << (m->shift_mean - 3)), m->shift_mean - 2) + 512;
            mean4 = mean4 < 0 ? 0 : (mean4 > 1023 ? 1023 : mean4);
            int64_t scale = m->shift_scale == SHIFT_SCALE_CONSTANT /* index 0 (docs/format.md) */
                                ? 0
                                : floor_shift((int64_t)os + ((int64_t)1 << (m->shift_scale - 1)), m->shift_scale);
            scale = scale < 0 ? 0 : (scale >= m->n_scales ? m->n_scales - 1 : scale);
            const Py_ssize_t row = (Py_ssize_t)scale * MEAN_FRACTIONS + (mean4 & (MEAN_FRACTIONS - 1));
            const int base = (int)(mean4 >> 2);
            const uint32_t *cum = t->cum + row * CUM_STRIDE;
            int grey;
            if (dec != NULL) {
                const uint32_t slot = (uint32_t)(dec->state & (PROB_SCALE - 1));
                uint32_t start, freq;
                const int s = find_symbol(t, row, slot, &start, &freq);
                dec->state = (uint64_t)freq * (dec->state >> PROB_BITS) + slot - start;
                if (dec->state < RANS_L) {
                    if (dec->pos < dec->n_words) {
                        dec->state = (dec->state << 32) | dec->words[dec->pos++];
                    } else {
                        dec->failed = 1;
                    }
                }
                grey = (base + s - 128) & 255;
                out[x] = (uint8_t)grey;
            } else {
                grey = out[x];
                const int s = (grey - base + 128) & 255;
                rec->start_freq[2 * rec->count] = cum[s];
                rec->start_freq[2 * rec->count + 1] = cum[s + 1] - cum[s];
                rec->count++;
            }
            crow[x] = (int16_t)(grey - 128);
        }
        /* The row is complete: replicate its edges into its margins for the rows below. */
        for (int k = 1; k <= MARGIN; k++) {
            crow[-k] = crow[0];
            crow[X - 1 + k] = crow[X - 1];
        }
    }
}

