// RMS normalisation over rows, one thread block per row.
#include "common.cuh"

// out[r][c] = x[r][c] / sqrt(mean(x[r]^2) + eps) * weight[c]; rows of x are `x_stride` apart.
extern "C" __global__ void rms_norm_f32(
    float* __restrict__ out,
    const float* __restrict__ x,
    const float* __restrict__ weight,
    const int cols,
    const int x_stride,
    const float eps) {
    const float* row = x + (size_t)blockIdx.x * x_stride;
    float* out_row = out + (size_t)blockIdx.x * cols;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += row[c] * row[c];

    __shared__ float partial[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    sum = warp_sum(sum);
    if (lane == 0) partial[warp] = sum;
    __syncthreads();
    if (warp == 0) {
        sum = lane < (int)(blockDim.x / WARP_SIZE) ? partial[lane] : 0.0f;
        sum = warp_sum(sum);
        if (lane == 0) partial[0] = sum;
    }
    __syncthreads();
    const float inv_rms = rsqrtf(partial[0] / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) out_row[c] = row[c] * inv_rms * weight[c];
}
