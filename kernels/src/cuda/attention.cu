// Paged attention over model-runner's KV cache, and the write of a step's keys and values into it.
//
// The cache is one f32 buffer per layer for keys and one for values, laid out
// [block][slot][kv_head][head_dim] (vLLM's paged layout with the head inside the slot); a sequence's
// positions live in the blocks its block table lists. Every token of a packed step (prompt chunks and
// decodes alike) attends to its own sequence's positions up to its own, so one launch serves the batch.
#include "common.cuh"

// head_dim / 32 values per lane: heads up to 256 wide.
#define MAX_DIMS_PER_LANE 8

// One thread block per (query head, token); each warp walks a strided share of the positions with an
// online softmax (running max, sum and weighted values), then the warps' partial results are merged.
// Lanes read consecutive floats of a key or value row, so every row is one coalesced read per warp.
//
// token_meta: per token, the offset of its sequence's table in block_tables, then its position.
// window: attend only to the last `window` positions (0: all). Shared memory: warps * (2 + head_dim).
extern "C" __global__ void paged_attention_f32(
    float* __restrict__ out,
    const float* __restrict__ q,
    const float* __restrict__ key_cache,
    const float* __restrict__ value_cache,
    const uint32_t* __restrict__ block_tables,
    const uint32_t* __restrict__ token_meta,
    const int heads,
    const int kv_heads,
    const int head_dim,
    const int block_size,
    const int window,
    const float scale) {
    const int head = blockIdx.x;
    const int token = blockIdx.y;
    const int kv_head = head / (heads / kv_heads);
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int warps = blockDim.x / WARP_SIZE;

    const uint32_t table = token_meta[2 * token];
    const uint32_t position = token_meta[2 * token + 1];
    const uint32_t first =
        (window > 0 && position + 1 > (uint32_t)window) ? position + 1 - (uint32_t)window : 0;

    const float* query = q + ((size_t)token * heads + head) * head_dim;
    float query_part[MAX_DIMS_PER_LANE];
    float acc[MAX_DIMS_PER_LANE];
#pragma unroll
    for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) {
        const int d = lane + j * WARP_SIZE;
        query_part[j] = d < head_dim ? query[d] : 0.0f;
        acc[j] = 0.0f;
    }

    float running_max = negative_infinity();
    float running_sum = 0.0f;
    const size_t slot_stride = (size_t)kv_heads * head_dim;
    for (uint32_t p = first + warp; p <= position; p += warps) {
        const uint32_t block = block_tables[table + p / block_size];
        const size_t row = ((size_t)block * block_size + p % block_size) * slot_stride + (size_t)kv_head * head_dim;
        float score = 0.0f;
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) {
            const int d = lane + j * WARP_SIZE;
            if (d < head_dim) score += query_part[j] * key_cache[row + d];
        }
        score = warp_sum(score) * scale;
        const float new_max = fmaxf(running_max, score);
        const float correction = expf(running_max - new_max);
        const float weight = expf(score - new_max);
        running_sum = running_sum * correction + weight;
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) {
            const int d = lane + j * WARP_SIZE;
            if (d < head_dim) acc[j] = acc[j] * correction + weight * value_cache[row + d];
        }
        running_max = new_max;
    }

    extern __shared__ float shared[];
    float* warp_max = shared;
    float* warp_sum_of = shared + warps;
    float* warp_acc = shared + 2 * warps;
    if (lane == 0) {
        warp_max[warp] = running_max;
        warp_sum_of[warp] = running_sum;
    }
#pragma unroll
    for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) {
        const int d = lane + j * WARP_SIZE;
        if (d < head_dim) warp_acc[warp * head_dim + d] = acc[j];
    }
    __syncthreads();

    // A warp that saw no position has max -inf and contributes exp(-inf) = 0; warp 0 always saw one.
    float total_max = negative_infinity();
    for (int w = 0; w < warps; ++w) total_max = fmaxf(total_max, warp_max[w]);
    float total_sum = 0.0f;
    for (int w = 0; w < warps; ++w) total_sum += warp_sum_of[w] * expf(warp_max[w] - total_max);
    const float inv_sum = 1.0f / total_sum;
    float* out_row = out + ((size_t)token * heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < warps; ++w) o += warp_acc[w * head_dim + d] * expf(warp_max[w] - total_max);
        out_row[d] = o * inv_sum;
    }
}

// Stores token t's keys and values (rows of `width` floats, `k_stride`/`v_stride` apart) at cache slot
// slots[t] (block * block_size + offset in block).
extern "C" __global__ void write_kv_f32(
    float* __restrict__ key_cache,
    float* __restrict__ value_cache,
    const float* __restrict__ k,
    const float* __restrict__ v,
    const uint32_t* __restrict__ slots,
    const int tokens,
    const int width,
    const int k_stride,
    const int v_stride) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)tokens * width) return;
    const size_t t = i / width;
    const size_t e = i % width;
    const size_t dst = (size_t)slots[t] * width + e;
    key_cache[dst] = k[t * k_stride + e];
    value_cache[dst] = v[t * v_stride + e];
}
