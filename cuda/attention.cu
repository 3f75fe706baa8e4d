// Causal attention over the f16 KV cache of one layer ([position][kv_dim] for keys and for
// values), with grouped-query heads and an optional sliding window.

// Append n_val values of k and v (f32) to the cache at kc, vc (f16, rounded to nearest even).
extern "C" __global__ void store_kv(const float* k, const float* v, u16* kc, u16* vc,
                                    long long n_val) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n_val) {
        kc[i] = f2h(k[i]);
        vc[i] = f2h(v[i]);
    }
}

// One block per (query row, head): ATT_WARPS warps each run an online softmax over every
// ATT_WARPS-th allowed key, then the block merges their partial results. Within a warp each
// lane holds head-dim elements lane, lane + 32, ... (head_dim <= 32 * ATT_DIMS). The query is
// rounded to f16 first, as the CPU twin does; scores and the value sums stay in f32.
// q: n_q rows of n_head * head_dim; out: the same shape. window = 0 means no window.
#define ATT_WARPS 4
#define ATT_DIMS 8

extern "C" __global__ void attention(const float* q, const u16* kc, const u16* vc, float* out,
                                     int pos0, int n_head, int n_head_kv, int head_dim,
                                     float scale, int window) {
    __shared__ float s_acc[ATT_WARPS][32 * ATT_DIMS];
    __shared__ float s_max[ATT_WARPS];
    __shared__ float s_sum[ATT_WARPS];
    int i = blockIdx.x / n_head, h = blockIdx.x % n_head;
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int pos = pos0 + i;
    int lo = window > 0 ? max(0, pos + 1 - window) : 0;
    int g = h / (n_head / n_head_kv);
    int kv_dim = n_head_kv * head_dim;
    const float* qh = q + ((size_t)i * n_head + h) * head_dim;

    float qv[ATT_DIMS], acc[ATT_DIMS];
#pragma unroll
    for (int k = 0; k < ATT_DIMS; k++) {
        int d = lane + 32 * k;
        qv[k] = d < head_dim ? h2f(f2h(qh[d])) : 0.0f;
        acc[k] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int j = lo + warp; j <= pos; j += ATT_WARPS) {
        const u16* kr = kc + (size_t)j * kv_dim + (size_t)g * head_dim;
        const u16* vr = vc + (size_t)j * kv_dim + (size_t)g * head_dim;
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < ATT_DIMS; k++) {
            int d = lane + 32 * k;
            if (d < head_dim) s += qv[k] * h2f(kr[d]);
        }
        s = warp_sum(s) * scale;
        float old_scale, w;
        if (s > m) {
            old_scale = expf(m - s);
            w = 1.0f;
            m = s;
        } else {
            old_scale = 1.0f;
            w = expf(s - m);
        }
        l = l * old_scale + w;
#pragma unroll
        for (int k = 0; k < ATT_DIMS; k++) {
            int d = lane + 32 * k;
            if (d < head_dim) acc[k] = acc[k] * old_scale + w * h2f(vr[d]);
        }
    }
#pragma unroll
    for (int k = 0; k < ATT_DIMS; k++) s_acc[warp][lane + 32 * k] = acc[k];
    if (lane == 0) {
        s_max[warp] = m;
        s_sum[warp] = l;
    }
    __syncthreads();
    float mall = NEG_INF;
    for (int w = 0; w < ATT_WARPS; w++) mall = fmaxf(mall, s_max[w]);
    float f[ATT_WARPS];
    float total = 0.0f;
    for (int w = 0; w < ATT_WARPS; w++) {
        // A warp that saw no key has max -inf and sum 0: its factor is 0.
        f[w] = s_sum[w] > 0.0f ? expf(s_max[w] - mall) : 0.0f;
        total += s_sum[w] * f[w];
    }
    float inv = 1.0f / total;
    float* oh = out + ((size_t)i * n_head + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) a += s_acc[w][d] * f[w];
        oh[d] = a * inv;
    }
}
