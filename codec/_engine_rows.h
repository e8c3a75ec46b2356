/* The body of the engine's row loop, included twice by _engine.c: once with the portable
 * multiply-add, once compiled for AVX2 with the vpmaddwd one (ROWS_FN, ROWS_ATTR, MADD). */
/* Code the voxels of slice z, rows [stripe_y0, y1) of a stripe.
 * decode: dec != NULL (voxels written into vol); encode: rec != NULL (voxels read from vol). */
ROWS_ATTR static void ROWS_FN(uint8_t *vol, int Y, int X, int z, int stripe_y0, int y1, const Model *m, const Prepared *q,
                      const Tables *t, Decoder *dec, Recorder *rec, Scratch *sc) {
    const int H = q->H, C1 = q->C1, NP = m->n_prev, NC = m->n_cur;
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
    Py_ssize_t dcur[MAX_INPUTS + 1];
    for (int k = 0; k < NC; k++) dcur[k] = (Py_ssize_t)m->off_cur[2 * k] * W + m->off_cur[2 * k + 1];
    uint32_t pin[MAX_INPUTS / 2 + 1] = {0}, cin[MAX_INPUTS / 2 + 1] = {0}, h1[MAX_HIDDEN / 2];
    int32_t acc[MAX_HIDDEN + 8], acc2[MAX_HIDDEN];
    const Py_ssize_t max_row = (Py_ssize_t)m->n_scales * 16 - 1;
    for (int y = stripe_y0; y < y1; y++) {
        /* Previous-slice part of layer 1 and of the skip, for the whole row. */
        const Py_ssize_t prow = (Py_ssize_t)(y - stripe_y0 + MARGIN) * W + MARGIN;
        for (int x = 0; x < X; x++) {
            int32_t *a = sc->pre + (size_t)x * C1;
            memcpy(a, q->b1, sizeof(int32_t) * C1);
            for (int i = 0; i < NP / 2; i++)
                pin[i] = pair_of(pbase[2 * i][prow + x + dprev[2 * i]], pbase[2 * i + 1][prow + x + dprev[2 * i + 1]]);
            if (NP % 2) pin[NP / 2] = pair_of(pbase[NP - 1][prow + x + dprev[NP - 1]], 0);
            MADD(q->w1p, q->pp, C1, pin, a);
        }
        int16_t *crow = cur + (size_t)(y - stripe_y0 + MARGIN) * W + MARGIN;
        uint8_t *out = vol + ((size_t)z * Y + y) * X;
        for (int x = 0; x < X; x++) {
            memcpy(acc, sc->pre + (size_t)x * C1, sizeof(int32_t) * C1);
            for (int i = 0; i < NC / 2; i++) cin[i] = pair_of(crow[x + dcur[2 * i]], crow[x + dcur[2 * i + 1]]);
            if (NC % 2) cin[NC / 2] = pair_of(crow[x + dcur[NC - 1]], 0);
            MADD(q->w1c, q->pc, C1, cin, acc);
            for (int h = 0; h < H; h += 2)
                h1[h / 2] = pair_of((int16_t)activation(acc[h], m->shift1), (int16_t)activation(acc[h + 1], m->shift1));
            memcpy(acc2, q->b2, sizeof(int32_t) * H);
            MADD(q->w2, H / 2, H, h1, acc2);
            int32_t om = m->b3[0], os = m->b3[1];
            for (int j = 0; j < H; j++) {
                const int32_t v = activation(acc2[j], m->shift2);
                om += m->w3[j] * v;
                os += m->w3[H + j] * v;
            }
            int64_t mean16 =
                floor_shift((int64_t)acc[H] + om + ((int64_t)1 << (m->shift_mean - 5)), m->shift_mean - 4) + 2048;
            mean16 = mean16 < 0 ? 0 : (mean16 > 4095 ? 4095 : mean16);
            int64_t scale = floor_shift((int64_t)os + ((int64_t)1 << (m->shift_scale - 1)), m->shift_scale);
            scale = scale < 0 ? 0 : (scale >= m->n_scales ? m->n_scales - 1 : scale);
            Py_ssize_t row = (Py_ssize_t)scale * 16 + (mean16 & 15);
            if (row > max_row) row = max_row;
            const int base = (int)(mean16 >> 4);
            const uint32_t *cum = t->cum + row * CUM_STRIDE;
            int grey;
            if (dec != NULL) {
                const uint32_t slot = (uint32_t)(dec->state & (PROB_SCALE - 1));
                const int s = find_symbol(t, row, slot);
                const uint32_t start = cum[s], freq = cum[s + 1] - cum[s];
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

