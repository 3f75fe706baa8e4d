// The activation predictor of one layer: logits = W2 · relu(W1 · x + b1) + b2, with f16
// weights W1 [rank][d_in] and W2 [d_out][rank], then the hot neurons it marks active
// (logit > 0) compacted into a list. One warp per output row for both products.

#define PRED_WARPS 4

__device__ __forceinline__ float f16_row_dot(const u16* w, const float* x, int n) {
    float s = 0.0f;
    for (int i = threadIdx.x % WARP; i < n; i += WARP) s += h2f(w[i]) * x[i];
    return warp_sum(s);
}

// h = relu(W1 · x + b1). Grid: ceil(rank / PRED_WARPS) blocks of 32 * PRED_WARPS threads.
extern "C" __global__ void predictor_hidden(const u16* w1, const float* b1, const float* x,
                                            float* hidden, int rank, int d_in) {
    int r = blockIdx.x * PRED_WARPS + threadIdx.x / WARP;
    if (r >= rank) return;
    float s = f16_row_dot(w1 + (size_t)r * d_in, x, d_in);
    if (threadIdx.x % WARP == 0) hidden[r] = fmaxf(s + b1[r], 0.0f);
}

// logits = W2 · h + b2. Grid: ceil(d_out / PRED_WARPS) blocks of 32 * PRED_WARPS threads.
extern "C" __global__ void predictor_logits(const u16* w2, const float* b2, const float* hidden,
                                            float* logits, int d_out, int rank) {
    int r = blockIdx.x * PRED_WARPS + threadIdx.x / WARP;
    if (r >= d_out) return;
    float s = f16_row_dot(w2 + (size_t)r * rank, hidden, rank);
    if (threadIdx.x % WARP == 0) logits[r] = s + b2[r];
}

// The positions k (in 0..n_hot, ascending) of the hot neurons whose logit is positive:
// hot neuron k is neuron hot_ids[k] of the layer. Writes the list and its length (*count).
// One block of COMPACT_THREADS threads; each pass scans COMPACT_THREADS entries.
#define COMPACT_THREADS 1024

extern "C" __global__ void predictor_compact(const float* logits, const u32* hot_ids, int n_hot,
                                             u32* active, u32* count) {
    __shared__ u32 warp_tot[COMPACT_THREADS / WARP];
    __shared__ u32 base;
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (threadIdx.x == 0) base = 0;
    __syncthreads();
    for (int start = 0; start < n_hot; start += COMPACT_THREADS) {
        int k = start + threadIdx.x;
        bool on = k < n_hot && logits[hot_ids[k]] > 0.0f;
        u32 bits = __ballot_sync(FULL_MASK, on);
        u32 before = __popc(bits & ((1u << lane) - 1u));
        if (lane == 0) warp_tot[warp] = __popc(bits);
        __syncthreads();
        u32 off = base;
        for (int w = 0; w < warp; w++) off += warp_tot[w];
        if (on) active[off + before] = (u32)k;
        __syncthreads();
        if (threadIdx.x == 0) {
            u32 t = 0;
            for (int w = 0; w < COMPACT_THREADS / WARP; w++) t += warp_tot[w];
            base += t;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) *count = base;
}
