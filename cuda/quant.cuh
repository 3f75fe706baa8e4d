// Dequantisation of one 32-value chunk of a weight row, for every weight type the CUDA backend
// keeps in its file format (the layouts are llama.cpp's; src/quant/layout.rs has them in Rust).
// Chunk c covers values 32c..32c+32 of the row; for the K-quants that is sub-block c % 8 of
// super-block c / 8. `cols` is only used by the float types, whose rows need not be a
// multiple of 32 (values past the end read as 0).

#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 4
#define T_Q8_0 5
#define T_Q4_K 6
#define T_Q6_K 7

template <int T> struct Quant;

template <> struct Quant<T_F32> {
    static __device__ __forceinline__ void dq(const u8* row, int c, int cols, float* y) {
        const float* r = (const float*)row;
#pragma unroll
        for (int i = 0; i < 32; i++) {
            int e = 32 * c + i;
            y[i] = e < cols ? r[e] : 0.0f;
        }
    }
};

template <> struct Quant<T_F16> {
    static __device__ __forceinline__ void dq(const u8* row, int c, int cols, float* y) {
        const u16* r = (const u16*)row;
#pragma unroll
        for (int i = 0; i < 32; i++) {
            int e = 32 * c + i;
            y[i] = e < cols ? h2f(r[e]) : 0.0f;
        }
    }
};

// Q4_0: f16 d, 16 bytes of nibbles; value j is low nibble of byte j (j < 16) or high nibble
// of byte j - 16, minus 8, times d.
template <> struct Quant<T_Q4_0> {
    static __device__ __forceinline__ void dq(const u8* row, int c, int, float* y) {
        const u8* b = row + 18 * c;
        float d = ld_f16(b);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[2 + j];
            y[j] = (float)((int)(q & 0xF) - 8) * d;
            y[j + 16] = (float)((int)(q >> 4) - 8) * d;
        }
    }
};

// Q4_1: f16 d, f16 m, 16 bytes of nibbles; value = q * d + m.
template <> struct Quant<T_Q4_1> {
    static __device__ __forceinline__ void dq(const u8* row, int c, int, float* y) {
        const u8* b = row + 20 * c;
        float d = ld_f16(b), m = ld_f16(b + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[4 + j];
            y[j] = (float)(q & 0xF) * d + m;
            y[j + 16] = (float)(q >> 4) * d + m;
        }
    }
};

// Q5_0: f16 d, 32 high bits (u32), 16 bytes of nibbles; value = (q | h << 4) - 16, times d.
template <> struct Quant<T_Q5_0> {
    static __device__ __forceinline__ void dq(const u8* row, int c, int, float* y) {
        const u8* b = row + 22 * c;
        float d = ld_f16(b);
        u32 h = ld_u32(b + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[6 + j];
            int lo = (q & 0xF) | (((h >> j) & 1) << 4);
            int hi = (q >> 4) | (((h >> (j + 16)) & 1) << 4);
            y[j] = (float)(lo - 16) * d;
            y[j + 16] = (float)(hi - 16) * d;
        }
    }
};

// Q8_0: f16 d, 32 signed bytes.
template <> struct Quant<T_Q8_0> {
    static __device__ __forceinline__ void dq(const u8* row, int c, int, float* y) {
        const u8* b = row + 34 * c;
        float d = ld_f16(b);
#pragma unroll
        for (int j = 0; j < 32; j++) y[j] = (float)(i8)b[2 + j] * d;
    }
};

// Q4_K super-block (256 values, 144 bytes): f16 d, f16 dmin, 12 bytes of packed 6-bit scales
// and mins, 128 bytes of nibbles. Sub-block s (32 values) uses scale sc[s] and min m[s]; its
// codes are the low nibbles of qs[32*(s/2)..] for even s, the high nibbles for odd s.
template <> struct Quant<T_Q4_K> {
    static __device__ __forceinline__ void dq(const u8* row, int c, int, float* y) {
        const u8* b = row + 144 * (c >> 3);
        int s = c & 7;
        float d = ld_f16(b), dmin = ld_f16(b + 2);
        const u8* sc = b + 4;
        int scale, mn;
        if (s < 4) {
            scale = sc[s] & 63;
            mn = sc[s + 4] & 63;
        } else {
            scale = (sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4);
            mn = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
        }
        float dl = d * (float)scale, ml = dmin * (float)mn;
        const u8* qs = b + 16 + 32 * (s >> 1);
        int shift = 4 * (s & 1);
#pragma unroll
        for (int l = 0; l < 32; l++) y[l] = dl * (float)((qs[l] >> shift) & 0xF) - ml;
    }
};

// Q6_K super-block (256 values, 210 bytes): ql[128] low nibbles, qh[64] high 2-bit pairs,
// 16 signed 8-bit scales (one per 16 values), f16 d at byte 208. Value e (in 0..256) sits in
// half n = e/128 at quarter t = (e%128)/32, lane l = e%32: low bits are nibble (t/2) of
// ql[64n + 32(t%2) + l], high bits are bits 2t..2t+1 of qh[32n + l]; code minus 32.
template <> struct Quant<T_Q6_K> {
    static __device__ __forceinline__ void dq(const u8* row, int c, int, float* y) {
        const u8* b = row + 210 * (c >> 3);
        int s = c & 7;
        int n = s >> 2, t = s & 3;
        float d = ld_f16(b + 208);
        const u8* ql = b + 64 * n + 32 * (t & 1);
        const u8* qh = b + 128 + 32 * n;
        const i8* scales = (const i8*)(b + 192);
        int lshift = 4 * (t >> 1), hshift = 2 * t;
        float d0 = d * (float)scales[2 * s], d1 = d * (float)scales[2 * s + 1];
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int q = ((ql[l] >> lshift) & 0xF) | (((qh[l] >> hshift) & 3) << 4);
            y[l] = (l < 16 ? d0 : d1) * (float)(q - 32);
        }
    }
};

// Dot product of one weight row with x, summed over the warp (every lane gets the result).
// Lane i takes chunks i, i+32, ...
template <int T>
__device__ __forceinline__ float row_dot(const u8* row, const float* x, int cols) {
    int nch = (cols + 31) / 32;
    float acc = 0.0f;
    for (int c = threadIdx.x % WARP; c < nch; c += WARP) {
        float v[32];
        Quant<T>::dq(row, c, cols, v);
        const float* xc = x + 32 * c;
        int n = min(32, cols - 32 * c);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 32; i++)
            if (i < n) s += v[i] * xc[i];
        acc += s;
    }
    return warp_sum(acc);
}

// Instantiate MACRO(T, suffix) for every weight type: one extern "C" kernel per type.
#define FOR_EACH_TYPE(MACRO)                                                                  \
    MACRO(T_F32, f32)                                                                         \
    MACRO(T_F16, f16)                                                                         \
    MACRO(T_Q4_0, q4_0)                                                                       \
    MACRO(T_Q4_1, q4_1)                                                                       \
    MACRO(T_Q5_0, q5_0)                                                                       \
    MACRO(T_Q8_0, q8_0)                                                                       \
    MACRO(T_Q4_K, q4_k)                                                                       \
    MACRO(T_Q6_K, q6_k)
