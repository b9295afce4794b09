// The chunk kernels' bodies, included twice by Kernels.c: once for the baseline
// instruction set and, on x86-64, once for AVX2 with FMA. GS_NAME(name) gives
// each copy its own names and GS_TARGET its instruction set.

// One pass, two sets of accumulators (16 values per step) so that the additions
// of consecutive steps do not wait on each other. With a shift c (the mean of
// the values seen so far; for a first chunk, the median of its first, middle
// and last values), S1 = Σ (x - c) and
// S2 = Σ (x - c)² in float64 give mean = c + S1 / n and M2 = S2 - S1² / n;
// the shift removes a large common offset, and the cancellation error left is
// about ε (c - mean)² / variance relative, negligible unless c lies some 10^6
// standard deviations from the chunk's mean. Q = Σ x² follows as
// S2 + 2 c S1 + n c² (rounding error relative to Q about ε c² / (mean² + variance)). Any NaN or infinity makes S2 non-finite (float32 values squared and
// summed cannot overflow float64).
GS_TARGET GS_LINKAGE bool GS_NAME(summarize)(const float *p, int64_t n, double center, uint32_t *counts, gs_float_summary *out) {
    if (n <= 0) return false;
    const float x0 = p[0];
    double shift = center;
    if (!__builtin_isfinite(shift)) {
        // No running mean yet: the median of the first, middle and last values, which a
        // single outlier cannot drag away from the bulk of the data.
        double a = p[0], b = p[n / 2], c = p[n - 1];
        shift = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
    }
    const f64x4 s = {shift, shift, shift, shift};
    const f32x8 zero = {0};
    f32x8 low0 = {x0, x0, x0, x0, x0, x0, x0, x0}, low1 = low0, high0 = low0, high1 = low0;
    i32x8 zeros0 = {0}, zeros1 = {0};
    f64x4 s1a = {0}, s1b = {0}, s2a = {0}, s2b = {0};
    int64_t i = 0;
#define SUMMARIZE16(i)                                                                       \
    do {                                                                                     \
        f32x8 v = LOAD8(p + (i)), w = LOAD8(p + (i) + 8);                                    \
        low0 = __builtin_elementwise_min(low0, v);                                           \
        low1 = __builtin_elementwise_min(low1, w);                                           \
        high0 = __builtin_elementwise_max(high0, v);                                         \
        high1 = __builtin_elementwise_max(high1, w);                                         \
        zeros0 -= (i32x8)(v == zero);                                                        \
        zeros1 -= (i32x8)(w == zero);                                                        \
        f64x4 dv0 = LOW4(v) - s, dv1 = HIGH4(v) - s, dw0 = LOW4(w) - s, dw1 = HIGH4(w) - s; \
        s1a += dv0 + dv1;                                                                    \
        s1b += dw0 + dw1;                                                                    \
        s2a += dv0 * dv0 + dv1 * dv1;                                                        \
        s2b += dw0 * dw0 + dw1 * dw1;                                                        \
    } while (0)
    if (counts) {
        // The sketch's scalar increments interleaved with the vector arithmetic:
        // they use different execution units, so they overlap.
        const unsigned char *raw = (const unsigned char *)p;
        for (; i + 16 <= n; i += 16) {
            SUMMARIZE16(i);
            uint32_t k[16];
            memcpy(k, raw + i * 4, sizeof k);
            for (int j = 0; j < 16; j++) counts[k[j] >> 16] += 1;
        }
        for (int64_t j = i; j < n; j++) {
            uint32_t key;
            memcpy(&key, raw + j * 4, sizeof key);
            counts[key >> 16] += 1;
        }
    } else {
        for (; i + 16 <= n; i += 16) SUMMARIZE16(i);
    }
#undef SUMMARIZE16
    f32x8 low = __builtin_elementwise_min(low0, low1), high = __builtin_elementwise_max(high0, high1);
    i32x8 zeroLanes = zeros0 + zeros1;
    f64x4 s1v = s1a + s1b, s2v = s2a + s2b;
    double sum1 = HSUM4(s1v), sum2 = HSUM4(s2v);
    float minimum = low[0], maximum = high[0];
    for (int k = 1; k < 8; k++) {
        if (low[k] < minimum) minimum = low[k];
        if (high[k] > maximum) maximum = high[k];
    }
    int64_t zeros = 0;
    for (int k = 0; k < 8; k++) zeros += zeroLanes[k];
    for (; i < n; i++) {
        float x = p[i];
        if (x < minimum) minimum = x;
        if (x > maximum) maximum = x;
        zeros += x == 0;
        double d = (double)x - shift;
        sum1 += d;
        sum2 += d * d;
    }
    if (!__builtin_isfinite(sum2)) return false;
    const double count = (double)n;
    const double squares = sum2 + 2 * shift * sum1 + count * shift * shift;
    out->zeros = zeros;
    out->min = (double)minimum;
    out->max = (double)maximum;
    out->mean = shift + sum1 / count;
    double m2 = sum2 - sum1 * sum1 / count;
    out->m2 = m2 > 0 ? m2 : 0;
    out->sumSquares = squares > 0 ? squares : 0;
    return true;
}

GS_TARGET GS_LINKAGE void GS_NAME(count_keys)(const float *values, int64_t n, uint32_t *counts) {
    const unsigned char *raw = (const unsigned char *)values;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t k[4];
        memcpy(k, raw + i * 4, sizeof k);
        counts[k[0] >> 16] += 1;
        counts[k[1] >> 16] += 1;
        counts[k[2] >> 16] += 1;
        counts[k[3] >> 16] += 1;
    }
    for (; i < n; i++) {
        uint32_t k;
        memcpy(&k, raw + i * 4, sizeof k);
        counts[k >> 16] += 1;
    }
}

// Sixteen pairs per step into two sets of accumulators, so that consecutive
// steps do not wait on each other's additions.
GS_TARGET GS_LINKAGE bool GS_NAME(drift)(const float *pa, const float *pb, int64_t n, gs_drift_sums *out) {
    const f64x4 zero = {0};
    f64x4 squaresA0 = zero, squaresA1 = zero, squaresB0 = zero, squaresB1 = zero, squaresD0 = zero, squaresD1 = zero;
    f64x4 dot0 = zero, dot1 = zero, maxDelta0 = zero, maxDelta1 = zero;
    i32x8 changed0 = {0}, changed1 = {0};
    i64x4 flips0 = {0}, flips1 = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        DRIFT8(i, 0);
        DRIFT8(i + 8, 1);
    }
    if (i + 8 <= n) {
        DRIFT8(i, 0);
        i += 8;
    }
    f64x4 squaresA = squaresA0 + squaresA1, squaresB = squaresB0 + squaresB1, squaresDelta = squaresD0 + squaresD1;
    f64x4 dot = dot0 + dot1, maxDelta = __builtin_elementwise_max(maxDelta0, maxDelta1);
    i64x4 flipLanes = flips0 + flips1;
    i32x8 changedLanes = changed0 + changed1;
    gs_drift_sums s;
    s.squaresA = HSUM4(squaresA);
    s.squaresB = HSUM4(squaresB);
    s.squaresDelta = HSUM4(squaresDelta);
    s.dot = HSUM4(dot);
    s.maxAbsDelta = 0;
    for (int k = 0; k < 4; k++) if (maxDelta[k] > s.maxAbsDelta) s.maxAbsDelta = maxDelta[k];
    s.changed = 0;
    for (int k = 0; k < 8; k++) s.changed += changedLanes[k];
    s.signFlips = flipLanes[0] + flipLanes[1] + flipLanes[2] + flipLanes[3];
    for (; i < n; i++) {
        double a = (double)pa[i], b = (double)pb[i], d = b - a;
        s.squaresA += a * a;
        s.squaresB += b * b;
        s.squaresDelta += d * d;
        double product = a * b;
        s.dot += product;
        if (product < 0) s.signFlips += 1;
        double m = d < 0 ? -d : d;
        if (m > s.maxAbsDelta) s.maxAbsDelta = m;
        uint32_t ua, ub;
        memcpy(&ua, pa + i, 4);
        memcpy(&ub, pb + i, 4);
        if (ua != ub) s.changed += 1;
    }
    // A NaN or an infinity makes the sums NaN or infinite (squares of finite float32 values cannot overflow).
    if (!__builtin_isfinite(s.squaresA + s.squaresB + s.squaresDelta + s.dot)) return false;
    *out = s;
    return true;
}

GS_TARGET GS_LINKAGE void GS_NAME(squares_zeros)(const float *p, int64_t n, double *squares, int64_t *zeros) {
    f64x4 q = {0};
    i32x8 zeroLanes = {0};
    const f32x8 zero = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        f32x8 v = LOAD8(p + i);
        f64x4 lo = LOW4(v), hi = HIGH4(v);
        q += lo * lo + hi * hi;
        zeroLanes -= (i32x8)(v == zero);
    }
    double sum = HSUM4(q);
    int64_t z = 0;
    for (int k = 0; k < 8; k++) z += zeroLanes[k];
    for (; i < n; i++) {
        double x = (double)p[i];
        sum += x * x;
        z += p[i] == 0;
    }
    *squares = sum;
    *zeros = z;
}
