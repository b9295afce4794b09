// The chunk kernels' bodies, included once per copy by Kernels.c: the baseline
// instruction set and, on x86-64, AVX2 with FMA and AVX-512. GS_NAME(name)
// gives each copy its own names, GS_TARGET its instruction set and
// GS_VECTOR_BYTES its vector width (32 or 64 bytes); the vector types and
// helpers below follow the width, so the bodies are written once for all.

// OP applied to arguments that come from another macro.
#define CALL_(OP, ...) OP(__VA_ARGS__)

#if GS_VECTOR_BYTES == 32
#define NF 8 // float lanes in a vector
#define VF f32x8
#define VD f64x4
#define VI i32x8
#define VU u32x8
#define VH u16x8
#define VW u64x8
#define LANE_INDEX ((VU){0, 1, 2, 3, 4, 5, 6, 7})
#define LOWD(v) __builtin_convertvector(__builtin_shufflevector((v), (v), 0, 1, 2, 3), f64x4)
#define HIGHD(v) __builtin_convertvector(__builtin_shufflevector((v), (v), 4, 5, 6, 7), f64x4)
// Halves of a vector, down to 32 bytes (no-ops at this width).
#define FOLDF(v, OP) (v)
#define FOLDD(v, OP) (v)
#define FOLDI(v, OP) (v)
#elif GS_VECTOR_BYTES == 64
#define NF 16
#define VF f32x16
#define VD f64x8
#define VI i32x16
#define VU u32x16
#define VH u16x16
#define VW u64x16
#define LANE_INDEX ((VU){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
#define LOWD(v) __builtin_convertvector(__builtin_shufflevector((v), (v), 0, 1, 2, 3, 4, 5, 6, 7), f64x8)
#define HIGHD(v) __builtin_convertvector(__builtin_shufflevector((v), (v), 8, 9, 10, 11, 12, 13, 14, 15), f64x8)
#define HALVES8_(v) __builtin_shufflevector((v), (v), 0, 1, 2, 3, 4, 5, 6, 7), __builtin_shufflevector((v), (v), 8, 9, 10, 11, 12, 13, 14, 15)
#define FOLDF(v, OP) CALL_(OP, HALVES8_(v))
#define FOLDD(v, OP) OP(__builtin_shufflevector((v), (v), 0, 1, 2, 3), __builtin_shufflevector((v), (v), 4, 5, 6, 7))
#define FOLDI(v, OP) CALL_(OP, HALVES8_(v))
#else
#error "GS_VECTOR_BYTES must be 32 or 64"
#endif

#define LOADF(p) ({ VF v_; memcpy(&v_, (p), sizeof v_); v_; })
#ifndef GS_MAX_ABS
// max(|a|, |b|), lane by lane.
#define GS_MAX_ABS(a, b) MAXV(__builtin_elementwise_abs(a), __builtin_elementwise_abs(b))
#endif

// Reductions of a vector to one value, via its 32-byte halves.
#define ADD_(a, b) ((a) + (b))
#define HALVES4_(r) __builtin_shufflevector((r), (r), 0, 1, 2, 3), __builtin_shufflevector((r), (r), 4, 5, 6, 7)
#define REDUCE_MINF(v)                                                                 \
    ({                                                                                 \
        f32x8 r_ = FOLDF((v), MINV);                                                   \
        f32x4 q_ = CALL_(MINV, HALVES4_(r_));                                          \
        float m_ = q_[0];                                                              \
        for (int k_ = 1; k_ < 4; k_++) if (q_[k_] < m_) m_ = q_[k_];                   \
        m_;                                                                            \
    })
#define REDUCE_MAXF(v)                                                                 \
    ({                                                                                 \
        f32x8 r_ = FOLDF((v), MAXV);                                                   \
        f32x4 q_ = CALL_(MAXV, HALVES4_(r_));                                          \
        float m_ = q_[0];                                                              \
        for (int k_ = 1; k_ < 4; k_++) if (q_[k_] > m_) m_ = q_[k_];                   \
        m_;                                                                            \
    })
#define REDUCE_SUMD(v) ({ f64x4 r_ = FOLDD((v), ADD_); ((r_[0] + r_[1]) + (r_[2] + r_[3])); })
#define REDUCE_MAXD(v)                                                                 \
    ({                                                                                 \
        f64x4 r_ = FOLDD((v), MAXV);                                                   \
        double m_ = r_[0];                                                             \
        for (int k_ = 1; k_ < 4; k_++) if (r_[k_] > m_) m_ = r_[k_];                   \
        m_;                                                                            \
    })
#define REDUCE_SUMI(v) ({ i32x8 r_ = FOLDI((v), ADD_); __builtin_reduce_add(__builtin_convertvector(r_, i64x8)); })

// Add float64 vectors to the accumulators name##0, name##1, ... With 64-byte
// vectors (AVX-512, 32 registers) each has its own accumulator, so that more
// chains of additions run side by side; with 32-byte vectors (16 registers, and
// the baseline splits each vector in two) they are added together first and the
// other accumulators stay zero, or the accumulators would not fit in the
// registers (a spilled accumulator puts a store and a load in its chain).
#if GS_VECTOR_BYTES == 64
#define SUM2(name, a, b) (name##0 += (a), name##1 += (b))
#define SUM4(name, a, b, c, d) (name##0 += (a), name##1 += (b), name##2 += (c), name##3 += (d))
#else
#define SUM2(name, a, b) (name##0 += (a) + (b))
#define SUM4(name, a, b, c, d) (name##0 += ((a) + (b)) + ((c) + (d)))
#endif

// The norms-only drift of pairs (a earlier, b later), written once for drift_norms() below and
// for the summary's pass that takes it along, so that both give the same sums to the bit: its
// accumulators; one vector step of pairs at j, the later values already loaded in b; and its end,
// the accumulated sums into s and then the pairs from j to n one by one.
#define DRIFT_NORMS_STATE                                                                   \
    VD squaresA0 = {0}, squaresA1 = {0}, squaresB0 = {0}, squaresB1 = {0}, squaresD0 = {0}, \
       squaresD1 = {0};                                                                     \
    VI changedLanes = {0}
#define DRIFT_NORMS_STEP(pa, j, b)                                                          \
    do {                                                                                    \
        VF va_ = LOADF((pa) + (j)), vb_ = (b);                                              \
        changedLanes -= (VI)((VU)va_ != (VU)vb_);                                           \
        VD aLo_ = LOWD(va_), aHi_ = HIGHD(va_), bLo_ = LOWD(vb_), bHi_ = HIGHD(vb_);        \
        VD dLo_ = bLo_ - aLo_, dHi_ = bHi_ - aHi_;                                          \
        SUM2(squaresA, aLo_ * aLo_, aHi_ * aHi_);                                           \
        SUM2(squaresB, bLo_ * bLo_, bHi_ * bHi_);                                           \
        SUM2(squaresD, dLo_ * dLo_, dHi_ * dHi_);                                           \
    } while (0)
#define DRIFT_NORMS_END(pa, pb, j, n, s)                                                    \
    do {                                                                                    \
        s = (gs_drift_sums){0};                                                             \
        s.squaresA = REDUCE_SUMD(squaresA0 + squaresA1);                                    \
        s.squaresB = REDUCE_SUMD(squaresB0 + squaresB1);                                    \
        s.squaresDelta = REDUCE_SUMD(squaresD0 + squaresD1);                                \
        s.changed = REDUCE_SUMI(changedLanes);                                              \
        for (; (j) < (n); (j)++) {                                                          \
            double a_ = (double)(pa)[j], b_ = (double)(pb)[j], d_ = b_ - a_;                \
            s.squaresA += a_ * a_;                                                          \
            s.squaresB += b_ * b_;                                                          \
            s.squaresDelta += d_ * d_;                                                      \
            uint32_t ua_, ub_;                                                              \
            memcpy(&ua_, (pa) + (j), 4);                                                    \
            memcpy(&ub_, (pb) + (j), 4);                                                    \
            if (ua_ != ub_) s.changed += 1;                                                 \
        }                                                                                   \
    } while (0)

// Each step of the summary takes two vectors, a block of 2 NF values.
#define BLOCK (2 * NF)

// One pass, two vectors (16 or 32 values) per step, each step asking for the lines
// 2 KiB ahead (prefetches never fault, so reading past the end is harmless): the
// values often come straight from a file's mapping in the page cache, not from a
// buffer already in the cache, and the hardware's prefetcher stops at each 4 KiB
// page. With 64-byte vectors,
// separate accumulators for each half of each vector (SUM4), so that the
// additions of consecutive steps do not wait on each other. With a shift c (the
// mean of the values seen so far; for a first chunk, the median of its first,
// middle and last values), S1 = Σ (x - c) and S2 = Σ (x - c)² in float64 give
// mean = c + S1 / n and M2 = S2 - S1² / n; the shift removes a large common
// offset, and the cancellation error left is about ε (c - mean)² / variance
// relative, negligible unless c lies some 10^6 standard deviations from the
// chunk's mean. Q = Σ x² follows as S2 + 2 c S1 + n c² (rounding error relative
// to Q about ε c² / (mean² + variance)). Any NaN or infinity makes S2 non-finite
// (float32 values squared and summed cannot overflow float64). Min and max skip
// NaN (such a chunk is refused anyway) and may keep either zero of ±0; the zero
// count counts both.
//
// The sketch's key counts (counts[bits >> 16] += 1 per value) are scalar
// read-modify-writes of a 256 KiB table, bound by the store unit at about one
// value per cycle, while the moments use the vector units: the increments for
// each block are interleaved with the block's vector arithmetic so that both
// run at once (a second loop over the chunk after the moments would add the two
// times up). Increments of one and the same counter wait on each other through
// memory, so a chunk where many values share a key (zeros, in sparse tensors)
// would be bound by that chain of latencies (half the values zero: two to four
// times slower). So when the chunk's first 64 values hold 10% zeros or more
// (below that the plain loop is a little faster), each zero's key is redirected,
// in the vector step, to a counter of its own lane (key j for lane j of the
// block, so that consecutive zeros do not land on the same counter), the scalar
// increments read these keys from a small ring two blocks behind, and the
// per-lane zero counts undo the redirection at the end: counts[j] -= zeros in
// lane j, and the +0 and -0 go to keys 0 and 0x8000. The counts are identical
// either way.
//
// With `withDrift` (a constant: the compiler makes one copy with, one without), the same pass
// also takes the drift's norms and changed count of the pairs (pa[i], p[i]), as drift_norms()
// below does: the values of p are loaded and widened once for both, and the drift's vector
// steps fill the vector units while the key counts hold the store unit. Its vector steps run
// in the same order on the same accumulators as drift_norms() (one vector of pairs after the
// other), so its sums are those to the bit; `*driftFinite` tells whether they are finite.
static inline __attribute__((always_inline)) GS_TARGET bool GS_NAME(summarize_pass)(
    const float *p, int64_t n, double center, uint32_t *counts, gs_float_summary *out, const float *pa, gs_drift_sums *drift,
    bool *driftFinite, const bool withDrift) {
    if (n <= 0) {
        if (withDrift) {
            *drift = (gs_drift_sums){0};
            *driftFinite = true;
        }
        return false;
    }
    const float x0 = p[0];
    double shift = center;
    if (!__builtin_isfinite(shift)) {
        // No running mean yet: the median of the first, middle and last values, which a
        // single outlier cannot drag away from the bulk of the data.
        double a = p[0], b = p[n / 2], c = p[n - 1];
        shift = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
    }
    const VD s = (VD){0} + shift;
    const VF zero = {0};
    VF low = zero + x0, high = low;
    VI zeros0 = {0}, zeros1 = {0};
    // The smallest nonzero magnitude, as bits (|x| of a float orders as its bits without the sign);
    // zero lanes become all ones, which no finite value reaches.
    VU lowMagnitude = (VU){0} + 0xFFFFFFFFu;
    VD s10 = {0}, s11 = {0}, s12 = {0}, s13 = {0}, s20 = {0}, s21 = {0}, s22 = {0}, s23 = {0};
    // The drift's accumulators, unused without it.
    DRIFT_NORMS_STATE;
    int64_t i = 0;
    // One block at i; KEYS may use the two vectors v, w and their zero masks zv, zw.
#define SUMMARIZE_BLOCK(i, KEYS)                                                    \
    do {                                                                            \
        __builtin_prefetch((const char *)(p + (i)) + 2048);                          \
        __builtin_prefetch((const char *)(p + (i) + BLOCK) + 2047);                  \
        VF v = LOADF(p + (i)), w = LOADF(p + (i) + NF);                             \
        low = MINV(MINV(v, w), low);                                                \
        high = MAXV(MAXV(v, w), high);                                              \
        VI zv = (VI)(v == zero), zw = (VI)(w == zero);                              \
        zeros0 -= zv;                                                               \
        zeros1 -= zw;                                                               \
        lowMagnitude = MINV(MINV(((VU)v & 0x7FFFFFFFu) | (VU)zv, ((VU)w & 0x7FFFFFFFu) | (VU)zw), lowMagnitude); \
        VD dv0 = LOWD(v) - s, dv1 = HIGHD(v) - s, dw0 = LOWD(w) - s, dw1 = HIGHD(w) - s; \
        SUM4(s1, dv0, dv1, dw0, dw1);                                               \
        SUM4(s2, dv0 * dv0, dv1 * dv1, dw0 * dw0, dw1 * dw1);                       \
        KEYS                                                                        \
        if (withDrift) {                                                            \
            __builtin_prefetch((const char *)(pa + (i)) + 2048);                     \
            __builtin_prefetch((const char *)(pa + (i) + BLOCK) + 2047);             \
            DRIFT_NORMS_STEP(pa, (i), v);                                           \
            DRIFT_NORMS_STEP(pa, (i) + NF, w);                                      \
        }                                                                           \
    } while (0)
    if (!counts) {
        for (; i + BLOCK <= n; i += BLOCK) SUMMARIZE_BLOCK(i, );
    } else {
        const unsigned char *raw = (const unsigned char *)p;
        // Hidden from the optimiser, so that keys are read with scalar loads rather
        // than extracted from the vector registers (which takes the vector units).
        __asm__("" : "+r"(raw));
#define KEY(j) ({ uint32_t k_; memcpy(&k_, raw + (j) * 4, 4); k_ >> 16; })
        int64_t head = n < 64 ? n : 64, headZeros = 0;
        for (int64_t j = 0; j < head; j++) headZeros += p[j] == 0;
        if (headZeros * 10 < head) {
            for (; i + BLOCK <= n; i += BLOCK) {
                SUMMARIZE_BLOCK(i, );
                for (int j = 0; j < BLOCK; j++) counts[KEY(i + j)] += 1;
            }
        } else {
            enum { RING = 4 * BLOCK, LAG = 2 * BLOCK };
            uint16_t ring[RING] __attribute__((aligned(GS_VECTOR_BYTES)));
            uint16_t *keys = ring;
            const VU lanes0 = LANE_INDEX, lanes1 = LANE_INDEX + NF;
            VI negativeZeros = {0};
            // The keys of the block at i, zeros redirected to their lanes, into the ring.
#define REDIRECTED_KEYS(i)                                                                  \
    do {                                                                                    \
        VU kv = (VU)(((VI)((VU)v >> 16) & ~zv) | ((VI)lanes0 & zv));                        \
        VU kw = (VU)(((VI)((VU)w >> 16) & ~zw) | ((VI)lanes1 & zw));                        \
        VH hv = __builtin_convertvector(kv, VH), hw = __builtin_convertvector(kw, VH);      \
        memcpy(keys + ((i) & (RING - 1)), &hv, sizeof hv);                                  \
        memcpy(keys + ((i) & (RING - 1)) + NF, &hw, sizeof hw);                             \
        negativeZeros -= (VI)((VU)v == 0x80000000u) + (VI)((VU)w == 0x80000000u);          \
    } while (0);
            for (; i < LAG && i + BLOCK <= n; i += BLOCK) SUMMARIZE_BLOCK(i, REDIRECTED_KEYS(i));
            for (; i + BLOCK <= n; i += BLOCK) {
                SUMMARIZE_BLOCK(i, REDIRECTED_KEYS(i));
                // Again hidden, so that the keys are loaded from the ring.
                __asm__("" : "+r"(keys));
                const uint16_t *block = keys + ((i - LAG) & (RING - 1));
                for (int j = 0; j < BLOCK; j++) counts[block[j]] += 1;
            }
#undef REDIRECTED_KEYS
            for (int64_t j = i < LAG ? 0 : i - LAG; j < i; j++) counts[keys[j & (RING - 1)]] += 1;
            uint32_t lanes[2 * NF];
            memcpy(lanes, &zeros0, sizeof zeros0);
            memcpy(lanes + NF, &zeros1, sizeof zeros1);
            for (int j = 0; j < 2 * NF; j++) counts[j] -= lanes[j];
            int64_t allZeros = REDUCE_SUMI(zeros0 + zeros1), negative = REDUCE_SUMI(negativeZeros);
            counts[0] += (uint32_t)(allZeros - negative);
            counts[0x8000] += (uint32_t)negative;
        }
        for (int64_t j = i; j < n; j++) counts[KEY(j)] += 1;
#undef KEY
    }
#undef SUMMARIZE_BLOCK
    if (withDrift) {
        // The pairs after the last block: one more vector step when a vector's worth is left,
        // then one by one, as drift_norms() ends.
        int64_t j = i;
        if (j + NF <= n) {
            DRIFT_NORMS_STEP(pa, j, LOADF(p + j));
            j += NF;
        }
        gs_drift_sums d;
        DRIFT_NORMS_END(pa, p, j, n, d);
        *drift = d;
        *driftFinite = __builtin_isfinite(d.squaresA + d.squaresB + d.squaresDelta);
    }
    double sum1 = REDUCE_SUMD((s10 + s11) + (s12 + s13)), sum2 = REDUCE_SUMD((s20 + s21) + (s22 + s23));
    float minimum = REDUCE_MINF(low), maximum = REDUCE_MAXF(high);
    int64_t zeros = REDUCE_SUMI(zeros0 + zeros1);
    uint32_t lowBits = 0xFFFFFFFFu;
    {
        uint32_t lanes[NF];
        memcpy(lanes, &lowMagnitude, sizeof lanes);
        for (int k = 0; k < NF; k++) if (lanes[k] < lowBits) lowBits = lanes[k];
    }
    for (; i < n; i++) {
        float x = p[i];
        uint32_t bits;
        memcpy(&bits, p + i, 4);
        bits &= 0x7FFFFFFFu;
        if (bits != 0 && bits < lowBits) lowBits = bits;
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
    out->minMagnitudeBits = lowBits;
    out->min = (double)minimum;
    out->max = (double)maximum;
    out->mean = shift + sum1 / count;
    double m2 = sum2 - sum1 * sum1 / count;
    out->m2 = m2 > 0 ? m2 : 0;
    out->sumSquares = squares > 0 ? squares : 0;
    return true;
}

GS_TARGET GS_LINKAGE bool GS_NAME(summarize)(const float *p, int64_t n, double center, uint32_t *counts, gs_float_summary *out) {
    return GS_NAME(summarize_pass)(p, n, center, counts, out, NULL, NULL, NULL, false);
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

// One vector of pairs (8 or 16) per step; with 64-byte vectors each half has its
// own accumulators, eight chains of additions side by side (SUM2). Every sum is
// taken in float64. The counts come from the bit patterns: a pair changed when
// they differ; a sign flip is a pair whose signs differ with neither value ±0,
// which is exactly when the float64 product a·b is negative (the product of two
// float32 is exact in float64: it neither rounds to zero nor overflows).
GS_TARGET GS_LINKAGE bool GS_NAME(drift)(const float *pa, const float *pb, int64_t n, gs_drift_sums *out) {
    const VD zero = {0};
    const VF zeroF = {0};
    VD squaresA0 = zero, squaresA1 = zero, squaresB0 = zero, squaresB1 = zero;
    VD squaresD0 = zero, squaresD1 = zero, dot0 = zero, dot1 = zero, maxDelta = zero;
    VI changedLanes = {0}, flipLanes = {0};
    int64_t i = 0;
    for (; i + NF <= n; i += NF) {
        VF va = LOADF(pa + i), vb = LOADF(pb + i);
        VU ua = (VU)va, ub = (VU)vb;
        changedLanes -= (VI)(ua != ub);
        flipLanes -= (VI)((VI)(ua ^ ub) < 0) & (VI)(va != zeroF) & (VI)(vb != zeroF);
        VD aLo = LOWD(va), aHi = HIGHD(va), bLo = LOWD(vb), bHi = HIGHD(vb);
        VD dLo = bLo - aLo, dHi = bHi - aHi;
        SUM2(squaresA, aLo * aLo, aHi * aHi);
        SUM2(squaresB, bLo * bLo, bHi * bHi);
        SUM2(squaresD, dLo * dLo, dHi * dHi);
        SUM2(dot, aLo * bLo, aHi * bHi);
        maxDelta = MAXV(GS_MAX_ABS(dLo, dHi), maxDelta);
    }
    gs_drift_sums s;
    s.squaresA = REDUCE_SUMD(squaresA0 + squaresA1);
    s.squaresB = REDUCE_SUMD(squaresB0 + squaresB1);
    s.squaresDelta = REDUCE_SUMD(squaresD0 + squaresD1);
    s.dot = REDUCE_SUMD(dot0 + dot1);
    s.maxAbsDelta = REDUCE_MAXD(maxDelta);
    s.changed = REDUCE_SUMI(changedLanes);
    s.signFlips = REDUCE_SUMI(flipLanes);
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

// The drift's sums without the dot product, the largest |b - a| and the sign flips (zero
// in the result), for a caller that keeps only the norms and the changed count: the same
// vector steps and accumulators as drift() above, so the sums it gives are those to the bit,
// at about two thirds of the cost.
GS_TARGET GS_LINKAGE bool GS_NAME(drift_norms)(const float *pa, const float *pb, int64_t n, gs_drift_sums *out) {
    DRIFT_NORMS_STATE;
    int64_t i = 0;
    for (; i + NF <= n; i += NF) DRIFT_NORMS_STEP(pa, i, LOADF(pb + i));
    gs_drift_sums s;
    DRIFT_NORMS_END(pa, pb, i, n, s);
    if (!__builtin_isfinite(s.squaresA + s.squaresB + s.squaresDelta)) return false;
    *out = s;
    return true;
}

// Two vectors per step, four chains of float64 additions.
GS_TARGET GS_LINKAGE void GS_NAME(squares_zeros)(const float *p, int64_t n, double *squares, int64_t *zeros) {
    VD q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0};
    VI zeros0 = {0}, zeros1 = {0};
    const VF zero = {0};
    int64_t i = 0;
    for (; i + 2 * NF <= n; i += 2 * NF) {
        VF v = LOADF(p + i), w = LOADF(p + i + NF);
        VD v0 = LOWD(v), v1 = HIGHD(v), w0 = LOWD(w), w1 = HIGHD(w);
        q0 += v0 * v0;
        q1 += v1 * v1;
        q2 += w0 * w0;
        q3 += w1 * w1;
        zeros0 -= (VI)(v == zero);
        zeros1 -= (VI)(w == zero);
    }
    double sum = REDUCE_SUMD((q0 + q1) + (q2 + q3));
    int64_t z = REDUCE_SUMI(zeros0 + zeros1);
    for (; i < n; i++) {
        double x = (double)p[i];
        sum += x * x;
        z += p[i] == 0;
    }
    *squares = sum;
    *zeros = z;
}

// The sum of n 32-bit counts (a sketch table's range), in 64-bit lanes: two vectors of counts per
// step, each widened and added to its own accumulator.
GS_TARGET GS_LINKAGE uint64_t GS_NAME(sum_counts)(const uint32_t *counts, int64_t n) {
    VW total0 = {0}, total1 = {0};
    int64_t i = 0;
    for (; i + 2 * NF <= n; i += 2 * NF) {
        VU a, b;
        memcpy(&a, counts + i, sizeof a);
        memcpy(&b, counts + i + NF, sizeof b);
        total0 += __builtin_convertvector(a, VW);
        total1 += __builtin_convertvector(b, VW);
    }
    uint64_t lanes[NF], total = 0;
    VW both = total0 + total1;
    memcpy(lanes, &both, sizeof lanes);
    for (int k = 0; k < NF; k++) total += lanes[k];
    for (; i < n; i++) total += counts[i];
    return total;
}

#undef NF
#undef VF
#undef VW
#undef VD
#undef VI
#undef VU
#undef VH
#undef LANE_INDEX
#undef LOWD
#undef HIGHD
#undef FOLDF
#undef FOLDD
#undef FOLDI
#undef HALVES8_
#undef HALVES4_
#undef CALL_
#undef LOADF
#undef GS_MAX_ABS
#undef ADD_
#undef REDUCE_MINF
#undef REDUCE_MAXF
#undef REDUCE_SUMD
#undef REDUCE_MAXD
#undef REDUCE_SUMI
#undef BLOCK
#undef SUM2
#undef SUM4
#undef DRIFT_NORMS_STATE
#undef DRIFT_NORMS_STEP
#undef DRIFT_NORMS_END

// summarize() of p and drift_norms() of the pairs (pa[i], p[i]), each result bit for bit the one
// its own kernel gives: the return value is summarize()'s, `*driftFinite` drift_norms()'s. In one
// pass, unless GS_SEPARATE_DRIFT: the baseline copy, whose vectors are split in two, has too few
// registers for both passes' accumulators and is faster calling the two kernels.
GS_TARGET GS_LINKAGE bool GS_NAME(summarize_drift)(
    const float *p, const float *pa, int64_t n, double center, uint32_t *counts, gs_float_summary *out, gs_drift_sums *drift,
    bool *driftFinite) {
#ifdef GS_SEPARATE_DRIFT
    bool finite = GS_NAME(summarize)(p, n, center, counts, out);
    *driftFinite = GS_NAME(drift_norms)(pa, p, n, drift);
    return finite;
#else
    return GS_NAME(summarize_pass)(p, n, center, counts, out, pa, drift, driftFinite, true);
#endif
}
