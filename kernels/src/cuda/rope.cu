// Rotary position embedding, one output element per thread.
#include "common.cuh"

// x: `tokens` rows `x_stride` apart, each `heads * head_dim` wide; out: the same, contiguous.
// cos/sin: [token][pair]. The first 2 * pairs dimensions of a head rotate, the rest are copied.
// neox: pairs are (i, i + pairs) (GPT-NeoX); otherwise adjacent (2i, 2i + 1) (ggml's normal mode).
extern "C" __global__ void rope_f32(
    float* __restrict__ out,
    const float* __restrict__ x,
    const float* __restrict__ cos,
    const float* __restrict__ sin,
    const int tokens,
    const int heads,
    const int head_dim,
    const int x_stride,
    const int pairs,
    const int neox) {
    const int width = heads * head_dim;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)tokens * width) return;
    const size_t t = i / width;
    const int within = (int)(i % width);
    const int d = within % head_dim;
    const float* head = x + t * x_stride + (within - d);
    if (d >= 2 * pairs) {
        out[i] = head[d];
        return;
    }
    int pair, a, b;
    bool leading;
    if (neox) {
        pair = d % pairs;
        a = pair;
        b = pair + pairs;
        leading = d < pairs;
    } else {
        pair = d / 2;
        a = 2 * pair;
        b = a + 1;
        leading = (d % 2) == 0;
    }
    const float c = cos[t * pairs + pair];
    const float s = sin[t * pairs + pair];
    const float xa = head[a];
    const float xb = head[b];
    out[i] = leading ? xa * c - xb * s : xa * s + xb * c;
}
