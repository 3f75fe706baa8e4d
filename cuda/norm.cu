// RMS normalisation of segments of `seg` values: out = x / sqrt(mean(x²) + eps) * w. One block
// per segment (covers whole-row norms and gemma's per-head q/k norms alike). The sum of squares
// is accumulated in double, as the CPU twin does. `out` may be `x` (in-place norm): each
// thread reads its own elements before it writes them.

#define NORM_THREADS 256

extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, int seg,
                                    float eps) {
    __shared__ double partial[NORM_THREADS / WARP];
    const float* xs = x + (size_t)blockIdx.x * seg;
    float* os = out + (size_t)blockIdx.x * seg;
    double s = 0.0;
    for (int i = threadIdx.x; i < seg; i += blockDim.x) {
        double v = xs[i];
        s += v * v;
    }
    s = warp_sum_d(s);
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (lane == 0) partial[warp] = s;
    __syncthreads();
    if (warp == 0) {
        double t = lane < (int)(blockDim.x / WARP) ? partial[lane] : 0.0;
        t = warp_sum_d(t);
        if (lane == 0) partial[0] = t;
    }
    __syncthreads();
    float mean = (float)(partial[0] / (double)seg);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = threadIdx.x; i < seg; i += blockDim.x) os[i] = xs[i] * scale * w[i];
}
