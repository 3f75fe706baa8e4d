// Shared by every kernel file: fixed-width types, f16 conversions and warp reductions.
// NVRTC compiles each .cu file with this text prepended (no include paths, no system headers).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef signed char i8;

#define WARP 32
#define FULL_MASK 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)

// f16 <-> f32 through the conversion instructions themselves, so no header is needed.
__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}

// Round to nearest even, as the CPU's `half::f16::from_f32` does.
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("{ .reg .b16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}

// Little-endian loads from byte offsets that may be only 2-byte aligned (the block formats
// pack an f16 scale in front of the codes, so nothing wider is aligned).
__device__ __forceinline__ float ld_f16(const u8* p) {
    return h2f((u16)p[0] | ((u16)p[1] << 8));
}

__device__ __forceinline__ u32 ld_u32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// FFN activation kinds, numbered as `ffn_kind_code` on the Rust side.
#define FFN_SWIGLU 0
#define FFN_GEGLU 1
#define FFN_REGLU 2
#define FFN_DRELU 3
#define FFN_RELU 4

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978846f;
    return 0.5f * x * (1.0f + tanhf(k * x * (1.0f + 0.044715f * x * x)));
}

__device__ __forceinline__ float relu(float x) { return fmaxf(x, 0.0f); }

// One element of `up = act(gate) * up` (`relu(up)` for the plain kind).
__device__ __forceinline__ float ffn_act(int kind, float g, float u) {
    switch (kind) {
    case FFN_SWIGLU: return u * silu(g);
    case FFN_GEGLU: return u * gelu_tanh(g);
    case FFN_REGLU: return u * relu(g);
    case FFN_DRELU: return relu(u) * relu(g);
    default: return relu(u);
    }
}

// Sparsity rules of the sparse FFN, numbered as `rule_code` on the Rust side.
#define RULE_RELU 0
#define RULE_GATE 1
#define RULE_PRODUCT 2

// The gate's non-linearity alone (the plain kind has no gate: identity, never used).
__device__ __forceinline__ float gate_act(int kind, float g) {
    switch (kind) {
    case FFN_SWIGLU: return silu(g);
    case FFN_GEGLU: return gelu_tanh(g);
    case FFN_REGLU:
    case FFN_DRELU: return relu(g);
    default: return g;
    }
}

// One neuron's activation after the layer's rule (twin: `sparse::rule_activation`): zero
// when |act(gate)| <= t (gate rule, gated kinds) or |act| <= t (product rule).
__device__ __forceinline__ float rule_act(int kind, int rule, float t, float g, float u) {
    float a = ffn_act(kind, g, u);
    if (rule == RULE_GATE && kind != FFN_RELU && fabsf(gate_act(kind, g)) <= t) return 0.0f;
    if (rule == RULE_PRODUCT && fabsf(a) <= t) return 0.0f;
    return a;
}
