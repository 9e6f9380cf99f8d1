// The gated feed-forward nonlinearity, act(gate) * up, in one pass: no intermediate tensors.
#include "common.cuh"

// gate/up: `rows` rows of `cols`, `gate_stride`/`up_stride` apart (they may be the halves of one fused
// projection); out: contiguous. activation 0: SiLU; 1: GELU, tanh approximation.
extern "C" __global__ void gated_activation_f32(
    float* __restrict__ out,
    const float* __restrict__ gate,
    const float* __restrict__ up,
    const int rows,
    const int cols,
    const int gate_stride,
    const int up_stride,
    const int activation) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * cols) return;
    const size_t r = i / cols;
    const size_t c = i % cols;
    const float g = gate[r * gate_stride + c];
    float a;
    if (activation == 0) {
        a = g / (1.0f + expf(-g));
    } else {
        const float sqrt_2_over_pi = 0.7978845608028654f;
        a = 0.5f * g * (1.0f + tanhf(sqrt_2_over_pi * g * (1.0f + 0.044715f * g * g)));
    }
    out[i] = a * up[r * up_stride + c];
}
