// Rotary position embedding, in place. Row i of x is at position pos0 + i; every head of
// head_dim values rotates its first rope_dim values in rope_dim/2 pairs: (2j, 2j+1) in the
// normal layout, (j, j + rope_dim/2) in the NEOX layout. The angle of pair j is
// pos * base^(-2j/rope_dim), built by repeated multiplication in f32 as the CPU twin does.
// One thread per (row, head, pair); grid covers rows * heads * pairs.

extern "C" __global__ void rope(float* x, int rows, int cols, int head_dim, int rope_dim,
                                int pos0, float base, int neox) {
    int half = rope_dim / 2;
    int heads = cols / head_dim;
    long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)rows * heads * half) return;
    int j = (int)(id % half);
    long long rh = id / half;
    int h = (int)(rh % heads);
    int i = (int)(rh / heads);
    float theta_scale = powf(base, -2.0f / (float)rope_dim);
    float theta = (float)(pos0 + i);
    for (int k = 0; k < j; k++) theta *= theta_scale;
    float c = cosf(theta), s = sinf(theta);
    float* hp = x + (size_t)i * cols + (size_t)h * head_dim;
    int ia = neox ? j : 2 * j;
    int ib = neox ? j + half : 2 * j + 1;
    float a = hp[ia], b = hp[ib];
    hp[ia] = a * c - b * s;
    hp[ib] = a * s + b * c;
}
