// Element-wise kernels: residual add, bias add and the FFN activation. One thread per element.

// x += y over n values.
extern "C" __global__ void add(float* x, const float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// Every row of x (n values in rows of `cols`) gets the bias row b added.
extern "C" __global__ void add_bias(float* x, const float* b, long long n, int cols) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += b[i % cols];
}

// up = act(gate) * up (relu(up) for the plain kind, when gate may be null).
extern "C" __global__ void ffn_activation(const float* gate, float* up, long long n, int kind) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) up[i] = ffn_act(kind, kind == FFN_RELU ? 0.0f : gate[i], up[i]);
}

// Zero the activations (act = act(gate) * up, already applied) that the layer's rule deems
// inactive: |act| <= t for the product rule, |act(gate)| <= t for the gate rule (gate holds the
// pre-activations). The relu rule has exact zeros already and is not launched.
extern "C" __global__ void ffn_mask(const float* gate, float* act, long long n, int kind,
                                    int rule, float t) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = rule == RULE_GATE ? gate_act(kind, gate[i]) : act[i];
    if (fabsf(v) <= t) act[i] = 0.0f;
}
