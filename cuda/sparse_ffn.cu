// The GPU half of a sparse FFN over the hot neurons of one layer. Hot rows of gate and up are
// stored compacted (row k is neuron hot_ids[k]) in the model's block format; down is stored
// transposed in f16 so that hot neuron k's column is the contiguous row k of down_t
// [n_hot][d_model]. `active` (from predictor_compact) lists the hot rows to compute, *count
// of them. The CPU's cold partial is added afterwards with `add`.

#define SP_WARPS 4

// act[a] = ffn_act(gate_k · x, up_k · x) for k = active[a], zeroed when the layer's rule
// (rule, t) deems the neuron inactive, exactly as the CPU's sparse executor. One warp per list
// entry; the grid is sized for every hot row and warps past *count return. gate may be null
// for the plain kind.
template <int T>
__device__ __forceinline__ void gate_up_rows(const u8* gate, const u8* up,
                                             unsigned long long row_bytes, int cols,
                                             const u32* active, const u32* count, const float* x,
                                             float* act, int kind, int rule, float t) {
    u32 a = blockIdx.x * SP_WARPS + threadIdx.x / WARP;
    if (a >= *count) return;
    size_t off = (size_t)active[a] * row_bytes;
    float u = row_dot<T>(up + off, x, cols);
    float g = kind == FFN_RELU ? 0.0f : row_dot<T>(gate + off, x, cols);
    if (threadIdx.x % WARP == 0) act[a] = rule_act(kind, rule, t, g, u);
}

#define SPARSE_KERNELS(T, SUF)                                                                \
    extern "C" __global__ void sparse_gate_up_##SUF(                                          \
        const u8* gate, const u8* up, unsigned long long row_bytes, int cols,                 \
        const u32* active, const u32* count, const float* x, float* act, int kind, int rule,  \
        float t) {                                                                            \
        gate_up_rows<T>(gate, up, row_bytes, cols, active, count, x, act, kind, rule, t);     \
    }

FOR_EACH_TYPE(SPARSE_KERNELS)

// y[d] = sum over list entries a of act[a] * down_t[active[a]][d]: the down projection as an
// axpy over the active neurons' contiguous columns. One thread per output value (coalesced
// across d for each neuron); the sum runs in list order, so the result is deterministic.
extern "C" __global__ void sparse_down(const u16* down_t, const u32* active, const u32* count,
                                       const float* act, float* y, int d_model) {
    int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= d_model) return;
    u32 n = *count;
    float s = 0.0f;
    for (u32 a = 0; a < n; a++) s += act[a] * h2f(down_t[(size_t)active[a] * d_model + d]);
    y[d] = s;
}
