// Dense products with quantised weights: `out = x Wᵀ` (x: n_tok rows of cols f32; W: rows
// weight rows in a block format; out: n_tok rows of `rows`), and the embedding lookup.
//
// One warp per weight row. matvec (decode) takes one token; matmul (prefill) takes a tile of
// MM_TILE tokens per launch row, so each weight chunk is dequantised once for the whole tile.
// Grid: x = ceil(rows / MM_WARPS), y = ceil(n_tok / tile); block: 32 * MM_WARPS threads.

#define MM_WARPS 4
#define MM_TILE 8

template <int T, int NT>
__device__ __forceinline__ void mm_rows(const u8* w, unsigned long long row_bytes, int rows,
                                        int cols, const float* x, float* out, int n_tok) {
    int r = blockIdx.x * MM_WARPS + threadIdx.x / WARP;
    if (r >= rows) return;
    int t0 = blockIdx.y * NT;
    int nt = min(NT, n_tok - t0);
    const u8* wr = w + (size_t)r * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    int nch = (cols + 31) / 32;
    for (int c = threadIdx.x % WARP; c < nch; c += WARP) {
        float v[32];
        Quant<T>::dq(wr, c, cols, v);
        int n = min(32, cols - 32 * c);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < nt) {
                const float* xc = x + (size_t)(t0 + t) * cols + 32 * c;
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < 32; i++)
                    if (i < n) s += v[i] * xc[i];
                acc[t] += s;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float s = warp_sum(acc[t]);
        if (t < nt && threadIdx.x % WARP == 0) out[(size_t)(t0 + t) * rows + r] = s;
    }
}

// Embedding rows: out[i] = dequantised row tokens[i] of the table, times scale.
// Grid: x = n_tok, y = ceil(chunks / blockDim.x); one thread per 32-value chunk.
template <int T>
__device__ __forceinline__ void embed_rows(const u8* table, unsigned long long row_bytes,
                                           int n_vocab, int cols, const u32* tokens,
                                           float scale, float* out) {
    int i = blockIdx.x;
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    int nch = (cols + 31) / 32;
    u32 tok = tokens[i];
    if (c >= nch || tok >= (u32)n_vocab) return;
    float v[32];
    Quant<T>::dq(table + (size_t)tok * row_bytes, c, cols, v);
    int n = min(32, cols - 32 * c);
    float* o = out + (size_t)i * cols + 32 * c;
#pragma unroll
    for (int j = 0; j < 32; j++)
        if (j < n) o[j] = v[j] * scale;
}

#define MM_KERNELS(T, SUF)                                                                    \
    extern "C" __global__ void matvec_##SUF(const u8* w, unsigned long long row_bytes,          \
                                            int rows, int cols, const float* x, float* out,   \
                                            int n_tok) {                                      \
        mm_rows<T, 1>(w, row_bytes, rows, cols, x, out, n_tok);                               \
    }                                                                                         \
    extern "C" __global__ void matmul_##SUF(const u8* w, unsigned long long row_bytes,          \
                                            int rows, int cols, const float* x, float* out,   \
                                            int n_tok) {                                      \
        mm_rows<T, MM_TILE>(w, row_bytes, rows, cols, x, out, n_tok);                         \
    }                                                                                         \
    extern "C" __global__ void embed_##SUF(const u8* table, unsigned long long row_bytes,       \
                                           int n_vocab, int cols, const u32* tokens,          \
                                           float scale, float* out) {                         \
        embed_rows<T>(table, row_bytes, n_vocab, cols, tokens, scale, out);                   \
    }

FOR_EACH_TYPE(MM_KERNELS)
