// SIMD chunk kernels for the statistics. Written once (KernelBodies.h) with the
// compiler's vector extensions and compiled twice on x86-64, for the baseline
// instruction set (SSE2) and for AVX2 with FMA; the version for the running CPU
// is chosen on first use. The baseline copies keep their own names, so tests can
// compare them with whatever version the machine runs.

#include "GradScopeKernels.h"

#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef int64_t i64x4 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

// Helpers are macros: a function taking or returning a 32-byte vector would have a
// different calling convention in the baseline and the AVX2 versions.
#define LOAD8(p) ({ f32x8 v_; memcpy(&v_, (p), sizeof v_); v_; })
#define LOAD8U(p) ({ u32x8 v_; memcpy(&v_, (p), sizeof v_); v_; })
#define LOW4(v) __builtin_convertvector(__builtin_shufflevector((v), (v), 0, 1, 2, 3), f64x4)
#define HIGH4(v) __builtin_convertvector(__builtin_shufflevector((v), (v), 4, 5, 6, 7), f64x4)
#define HSUM4(v) (((v)[0] + (v)[1]) + ((v)[2] + (v)[3]))

// The sums of eight pairs at `offset` into the accumulator set `k`.
#define DRIFT8(offset, k)                                                          \
    do {                                                                           \
        f32x8 va = LOAD8(pa + (offset)), vb = LOAD8(pb + (offset));                \
        changed##k -= (i32x8)(LOAD8U(pa + (offset)) != LOAD8U(pb + (offset)));     \
        f64x4 aLo = LOW4(va), aHi = HIGH4(va), bLo = LOW4(vb), bHi = HIGH4(vb);    \
        f64x4 dLo = bLo - aLo, dHi = bHi - aHi;                                    \
        squaresA##k += aLo * aLo + aHi * aHi;                                      \
        squaresB##k += bLo * bLo + bHi * bHi;                                      \
        squaresD##k += dLo * dLo + dHi * dHi;                                      \
        f64x4 pLo = aLo * bLo, pHi = aHi * bHi;                                    \
        dot##k += pLo + pHi;                                                       \
        flips##k -= (i64x4)(pLo < zero);                                           \
        flips##k -= (i64x4)(pHi < zero);                                           \
        maxDelta##k = __builtin_elementwise_max(                                   \
            maxDelta##k, __builtin_elementwise_max(__builtin_elementwise_abs(dLo), \
                                                   __builtin_elementwise_abs(dHi)));\
    } while (0)

// The baseline copy.
#define GS_NAME(name) gs_##name##_baseline
#define GS_TARGET
#define GS_LINKAGE
#include "KernelBodies.h"
#undef GS_NAME
#undef GS_TARGET
#undef GS_LINKAGE

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define GS_HAS_AVX2 1
// The AVX2 + FMA copy.
#define GS_NAME(name) gs_##name##_avx2
#define GS_TARGET __attribute__((target("avx2,fma")))
#define GS_LINKAGE static
#include "KernelBodies.h"
#undef GS_NAME
#undef GS_TARGET
#undef GS_LINKAGE
#endif

// 0: not chosen yet, 1: baseline, 2: AVX2.
static _Atomic int chosen = 0;

static int choose(void) {
    int isa = chosen;
    if (isa != 0) return isa;
    isa = 1;
#if GS_HAS_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = 2;
#endif
    chosen = isa;
    return isa;
}

const char *gs_kernels_isa(void) { return choose() == 2 ? "avx2+fma" : "baseline"; }

#if GS_HAS_AVX2
#define DISPATCH(name, ...) (choose() == 2 ? gs_##name##_avx2(__VA_ARGS__) : gs_##name##_baseline(__VA_ARGS__))
#else
#define DISPATCH(name, ...) gs_##name##_baseline(__VA_ARGS__)
#endif

bool gs_summarize_finite_f32(const float *values, int64_t n, double center, uint32_t *counts, gs_float_summary *out) {
    return DISPATCH(summarize, values, n, center, counts, out);
}

void gs_count_keys_f32(const float *values, int64_t n, uint32_t *counts) { DISPATCH(count_keys, values, n, counts); }

bool gs_drift_finite_f32(const float *a, const float *b, int64_t n, gs_drift_sums *out) { return DISPATCH(drift, a, b, n, out); }

void gs_squares_zeros_f32(const float *values, int64_t n, double *squares, int64_t *zeros) {
    DISPATCH(squares_zeros, values, n, squares, zeros);
}

void gs_tune_allocator(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    // And keep freed memory for the next tensor instead of returning it at once.
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
}

void gs_release_free_memory(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}
