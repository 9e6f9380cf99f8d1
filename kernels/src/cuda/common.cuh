// Shared by model-runner's kernels.
#pragma once
#include <stdint.h>

#define WARP_SIZE 32

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

__device__ __forceinline__ float negative_infinity() { return __int_as_float(0xff800000); }
