// Numerically stable softmax of each row of `cols` values, in place. One block per row.

#define SOFTMAX_THREADS 256

__device__ float block_reduce(float v, bool is_max, float* scratch) {
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    v = is_max ? warp_max(v) : warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float ident = is_max ? NEG_INF : 0.0f;
        float t = lane < (int)(blockDim.x / WARP) ? scratch[lane] : ident;
        t = is_max ? warp_max(t) : warp_sum(t);
        if (lane == 0) scratch[0] = t;
    }
    __syncthreads();
    float r = scratch[0];
    __syncthreads();
    return r;
}

extern "C" __global__ void softmax(float* x, int cols) {
    __shared__ float scratch[SOFTMAX_THREADS / WARP];
    float* r = x + (size_t)blockIdx.x * cols;
    float m = NEG_INF;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, r[i]);
    m = block_reduce(m, true, scratch);
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float e = expf(r[i] - m);
        r[i] = e;
        s += e;
    }
    s = block_reduce(s, false, scratch);
    float inv = 1.0f / s;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) r[i] *= inv;
}
