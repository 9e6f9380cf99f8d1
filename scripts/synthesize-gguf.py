#!/usr/bin/env python3
"""Writes a small GGUF of one model family, with that family's real structure, for proving the engine against
llama.cpp where no real file of the family can be fetched.

    synthesize-gguf.py --family FAMILY --tokenizer-from REAL.gguf --out FILE [--type f32|f16|q8_0|q4_0|q5_1]
                       [--hidden N | --size 1b|3b|8b]
    synthesize-gguf.py --family bert|bert-rerank|nomic-bert|jina-bert-v2|bert-tokens --out FILE [--type ...]
    synthesize-gguf.py --family xlmr|xlmr-rerank --tokenizer-from ggml-vocab-nomic-bert-moe.gguf --out FILE

The encoder families (`bert`: all-MiniLM-L6-v2's layout, mean pooling; `bert-rerank`: the cross-encoder
ms-marco-MiniLM-L-6-v2's, rank pooling with its classifier head) write their own WordPiece vocabulary, since
no real BERT GGUF is at hand: BERT's special tokens at their real ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP]
102, [MASK] 103), single characters, common English words and `##` pieces, in the phantom-space form
llama.cpp's converter writes (word starts prefixed with U+2581, `##` continuations without their prefix).

`--size` gives a llama3 file the real shape of Llama 3.2 1B, 3.2 3B or 3.1 8B (hidden size, layers, heads, KV
heads, FFN size) for speed, memory and load-time measurements: the vocabulary stays the borrowed one.

What is real: the metadata keys and tensor names and shapes, as llama.cpp's converter (convert_hf_to_gguf.py
and its `conversion/` classes) writes them for that family (GQA, Q/K/V biases, QK-norm, fused projections,
Llama 3's rope frequency factors, mixtures of experts with F32 routers and 3-D expert tensors, ...), and the
tokenizer, whose `tokenizer.*` keys are copied from a real GGUF (the default model, SmolLM2: a GPT-2 style BPE
of 49152 tokens). What is not: the weights, drawn from numpy's `default_rng` with a fixed seed per family and
scaled so that attention, expert routing and the next-token distributions are peaked (a near-uniform
distribution would make every comparison a near-tie).

The output is deterministic: the same gguf and numpy versions write the same bytes (the fixtures record the
sha256 and the tests check it). Norm weights, biases and rope factors stay F32, as the converter keeps them;
every matrix gets `--type` (gguf-py quantizes Q8_0, Q4_0 and Q5_1 itself; K-quants need llama-quantize).
"""
import argparse
import math
import sys

import numpy as np
import gguf

# The dimensions every family shares unless it says otherwise: GQA with two query heads per KV head.
BASE = dict(layers=2, heads=4, kv_heads=2, ff_mult=2, context=4096, eps=1e-5)

# One entry per family: the GGUF architecture and what distinguishes it. Keys are read by `Family` below.
FAMILIES = {
    # Llama 3.1/3.2: rope base 500000 and the "llama3" rope scaling, which the converter bakes into a
    # `rope_freqs.weight` tensor of per-frequency divisors (no metadata key).
    "llama3": dict(arch="llama", rope_base=500000.0, llama3_rope=dict(factor=32.0, low_freq_factor=1.0,
                                                                     high_freq_factor=4.0, original_context=8192)),
    # Mistral (7B v0.2+, Nemo): llama architecture in GGUF, rope base 1e6, 4 query heads per KV head and an
    # explicit head size that is not hidden / heads (Nemo: 128 with hidden 5120 and 32 heads).
    "mistral": dict(arch="llama", rope_base=1000000.0, heads=8, kv_heads=2, head_dim=32, explicit_head_dim=True),
    # Qwen 2 / 2.5: biased Q/K/V projections, NeoX rope, rope base 1e6, eps 1e-6.
    "qwen2": dict(arch="qwen2", rope_base=1000000.0, qkv_bias=True, eps=1e-6),
    # Qwen 3: per-head RMS norm on Q and K, explicit key/value length (128 in the real models, independent of
    # hidden / heads), no biases.
    "qwen3": dict(arch="qwen3", rope_base=1000000.0, qk_norm=True, head_dim=32, explicit_head_dim=True, eps=1e-6),
    # Phi-3 mini: fused QKV and fused gate/up, rope base 10000, no GQA (32 heads, 32 KV heads).
    "phi3": dict(arch="phi3", rope_base=10000.0, fused=True, kv_heads=4,
                 sliding_window=2047, original_context=4096),
    # Gemma 2: embeddings scaled by sqrt(hidden) and tied to the output; norms after attention and after the
    # MLP too; GELU; explicit head size; local (sliding-window) and global layers alternating; attention and
    # final logits soft-capped. The converter writes no rope keys (llama.cpp's default base, 10000). The
    # attention cap and the window are small here (real: 50 and 4096) so that this model's scores reach the
    # cap and the prompts outgrow the window; the final cap is the real 30, which its logits (up to ~37)
    # reach; the post-norm weights are large so that the layers' outputs weigh as much as the scaled
    # embedding in the residual stream.
    "gemma2": dict(arch="gemma2", rope_base=None, layers=4, head_dim=32, explicit_head_dim=True, eps=1e-6,
                   gemma=True, sliding_window=8, attn_softcap=3.0, final_softcap=30.0),
    # Qwen 3 MoE (Qwen3-30B-A3B: 128 experts, 8 per token): Qwen 3's attention, and every layer's FFN a router
    # `ffn_gate_inp` (kept F32 by the converter) over experts stacked in 3-D `ffn_{gate,up,down}_exps`, of
    # `expert_feed_forward_length` (narrower than `feed_forward_length`, as 768 against 6144 in the real one).
    "qwen3moe": dict(arch="qwen3moe", rope_base=1000000.0, qk_norm=True, head_dim=32, explicit_head_dim=True,
                     eps=1e-6, moe=dict(experts=8, used=4, ff_div=4, expert_ff_key=True)),
    # Mixtral 8x7B: `llama` architecture with `llama.expert_count` 8 and `expert_used_count` 2, GQA 4:1, rope
    # base 1e6; `feed_forward_length` is each expert's width.
    "mixtral": dict(arch="llama", rope_base=1000000.0, heads=8, kv_heads=2, moe=dict(experts=8, used=2)),
    # Qwen 1.5 / 2 MoE (Qwen1.5-MoE-A2.7B: 60 experts, 4 per token): Qwen 2's biased attention; the routed
    # experts' weights are not renormalised, and a shared expert (`ffn_*_shexp`, of
    # `expert_shared_feed_forward_length`, 4 times an expert's width as in the real one) is added to every
    # token's output, scaled by the sigmoid of `ffn_gate_inp_shexp` (F32, HF's `[1, hidden]` kept).
    "qwen2moe": dict(arch="qwen2moe", rope_base=1000000.0, qkv_bias=True, eps=1e-6,
                     moe=dict(experts=8, used=2, ff_div=4, expert_ff_key=True, shared_mult=4)),
    # Qwen3-Embedding: Qwen 3 with no output head (the converter writes none) and last-token pooling
    # (`qwen3.pooling_type` = 3, LLAMA_POOLING_TYPE_LAST): an embedding model over a decoder.
    "qwen3-embed": dict(arch="qwen3", rope_base=1000000.0, qk_norm=True, head_dim=32, explicit_head_dim=True,
                        eps=1e-6, pooling=3, no_output=True, seed=25),
    # Phi-3 128k (LongRoPE, `rope.scaling.type` longrope): per-frequency divisors for short and long contexts
    # (`rope_factors_short` / `rope_factors_long`, chosen by whether the context exceeds
    # `rope.scaling.original_context_length`) and `rope.scaling.attn_factor` scaling cos and sin. The original
    # context is small here (real: 4096) so that the tests' 512-token context takes the long factors.
    "phi3-long": dict(arch="phi3", rope_base=10000.0, fused=True, kv_heads=4, sliding_window=2047,
                      original_context=256, longrope=True, seed=101),
    # gpt-oss (gpt-oss-20b: 24 layers, 64 heads of 64, 8 KV heads, 32 experts, 4 per token): biased Q/K/V and
    # output projections, a learned sink logit per head (`attn_sinks`), `post_attention_norm` before every
    # FFN, NeoX rope of base 150000 with YaRN scaling (factor 32 from 4096 positions, as the real config),
    # sliding-window layers (the even ones) alternating with full ones, and mixtures whose router and
    # experts all have biases; `expert_feed_forward_length` is the experts' width (`intermediate_size`, as
    # `feed_forward_length`). The window is 8 here (real: 128) so that the prompts outgrow it. File type
    # `mxfp4` writes the experts as MXFP4 and every other matrix as Q8_0, as the converter writes the
    # released MXFP4 checkpoints with `--outtype q8_0`.
    "gpt-oss": dict(arch="gpt-oss", rope_base=150000.0, heads=8, kv_heads=2, head_dim=32, explicit_head_dim=True,
                    context=131072, sliding_window=8, gpt_oss=True,
                    yarn=dict(factor=32.0, original_context=4096),
                    moe=dict(experts=8, used=4, ff_div=1, expert_ff_key=True), seed=29),
    # Qwen3-Reranker, as the converter's Qwen3Model writes a reranker: rank pooling (`qwen3.pooling_type`
    # = 4), the output head's "yes" and "no" rows as `cls.output.weight` (2 x hidden) and no output head,
    # classifier labels ["yes", "no"], and the rerank prompt as `tokenizer.chat_template.rerank` (the
    # converter's own text). llama.cpp takes the last token's final hidden state through `cls.output` and
    # a softmax. The rows here are their own draw, scaled so that the probabilities stay off 0 and 1.
    "qwen3-rerank": dict(arch="qwen3", rope_base=1000000.0, qk_norm=True, head_dim=32, explicit_head_dim=True,
                         eps=1e-6, pooling=4, no_output=True, rank_head=True, seed=31),
    # Qwen3-Embedding with `tokenizer.ggml.add_eos_token` set: llama.cpp then ends every input with EOS,
    # whose final hidden state the last-token pooling reads. The same weights as `qwen3-embed`.
    "qwen3-embed-eos": dict(arch="qwen3", rope_base=1000000.0, qk_norm=True, head_dim=32,
                            explicit_head_dim=True, eps=1e-6, pooling=3, no_output=True, add_eos=True, seed=25),
    # SmolLM3-3B (arch `smollm3`; real: 36 layers, hidden 2048, 16 heads, 4 KV heads, rope base 5e6, embeddings
    # tied): Llama's layout (Q/K permuted for interleaved rope, `vocab_size` written), but every fourth layer
    # attends without rotary embedding (llama.cpp's `n_no_rope_layer_step`, fixed at 4: no metadata key).
    # 8 layers here so that two of them (3 and 7) are NoPE; tied as the real one, so the embedding is drawn
    # at the logits' spread.
    "smollm3": dict(arch="smollm3", rope_base=5000000.0, layers=8, tied=True, seed=41),
    # Granite 3.x dense (arch `granite`; granite-3.3-2b: 40 layers, hidden 2048, 32 heads of 64, 8 KV heads,
    # embeddings tied): Llama's layout with IBM's multipliers, the real ones: `embedding_scale` 12,
    # `residual_scale` 0.22, `attention.scale` 1/head size (here 1/16, not 1/sqrt(16)), logits divided by
    # `logit_scale` 8. The weights are drawn to undo each multiplier (embedding and output at 8 times the
    # logits' spread, attention and FFN outputs 1/0.22 times the residual stream's size, Q and K twice as
    # wide), so the model is as peaked as the others with the multipliers applied, and far off without any.
    "granite": dict(arch="granite", rope_base=10000.0, tied=True,
                    granite=dict(embedding=12.0, residual=0.22, attention=1.0 / 16, logit=8.0), seed=43),
    # Granite 3.x MoE (arch `granitemoe`; granite-3.1-3b-a800m: 40 experts, 8 per token): granite's
    # multipliers, and every FFN a softmax router over experts of `feed_forward_length` (the converter splits
    # HF's fused `input_linear` into `ffn_gate_exps` and `ffn_up_exps`), top-k renormalised.
    "granitemoe": dict(arch="granitemoe", rope_base=10000.0, tied=True,
                       granite=dict(embedding=12.0, residual=0.22, attention=1.0 / 16, logit=8.0),
                       moe=dict(experts=8, used=2), seed=47),
}

# The converter's rerank prompt for Qwen3-Reranker (conversion/qwen.py).
QWEN3_RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n"
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
    "<Query>: {query}\n<Document>: {document}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n")

# Real shapes (from the models' config.json) for `--size`, llama3 family only, with their real context
# length: llama.cpp's server caps a slot at the file's, so a smaller one would shrink its KV cache in a
# memory comparison.
SIZES = {
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, ff=8192, context=131072),
    "3b": dict(hidden=3072, layers=28, heads=24, kv_heads=8, ff=8192, context=131072),
    "8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, ff=14336, context=131072),
}

TYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q5_1": gguf.GGMLQuantizationType.Q5_1,
    # Experts MXFP4, every other matrix Q8_0 (gpt-oss's released layout).
    "mxfp4": gguf.GGMLQuantizationType.Q8_0,
}
FILE_TYPES = {"mxfp4": gguf.LlamaFileType.MOSTLY_MXFP4_MOE,"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
              "q5_1": gguf.LlamaFileType.MOSTLY_Q5_1}

# Scales that make the model's distributions peaked: query/key gain (attention scores of std ~gain^2) and the
# standard deviation of the next-token logits (the top two of 49152 Gaussian logits then differ by ~1.3).
QK_GAIN = 1.5
LOGIT_STD = 6.0
# Standard deviation of the experts' router logits: choices clear enough that two correct engines route
# alike, yet the chosen experts' weights far enough from 1 that their renormalisation matters.
ROUTER_STD = 2.0


def llama3_rope_factors(base, head_dim, factor, low_freq_factor, high_freq_factor, original_context):
    """The converter's `generate_extra_tensors` for rope_type "llama3" (conversion/llama.py), in float32."""
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen = original_context / low_freq_factor
    high_wavelen = original_context / high_freq_factor
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def copy_tokenizer(writer, path):
    """Every `tokenizer.*` key of a real GGUF, with its type, in the file's order."""
    reader = gguf.GGUFReader(path)
    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, vtype, sub_type=field.types[-1])
            if key == "tokenizer.ggml.tokens":
                vocab = len(value)
        else:
            writer.add_key_value(key, value, vtype)
    if vocab == 0:
        sys.exit(f"{path} has no tokenizer.ggml.tokens")
    return vocab


class Deferred:
    """A tensor the GGUF writer sees by shape and type, made only when the writer writes it."""

    def __init__(self, make, shape, dtype):
        self.make, self.shape, self.dtype = make, tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def tofile(self, fout):
        data = self.make()
        assert data.nbytes == self.nbytes and data.dtype == self.dtype, "deferred tensor changed shape"
        data.tofile(fout)


def synthesize(family, tokenizer_from, out, type_name, hidden, size=None):
    spec = {**BASE, **FAMILIES[family], **(SIZES[size] if size else {})}
    if size:
        hidden = spec["hidden"]
    arch = spec["arch"]
    heads, kv_heads = spec["heads"], spec["kv_heads"]
    head_dim = spec.get("head_dim", hidden // heads)
    ff = spec.get("ff", hidden * spec["ff_mult"])
    qtype = TYPES[type_name]
    # One seed per family, so that adding a family changes no other family's file: its place in FAMILIES,
    # or its own `seed` where two families were added at once in the same place.
    rng = np.random.default_rng(spec.get("seed", list(FAMILIES).index(family) + 19))

    writer = gguf.GGUFWriter(out, arch)
    # Not the family's name: llama.cpp sets token attributes by model name (for "phi3", on tokens of Phi-3's
    # own vocabulary, which the borrowed one lacks).
    writer.add_name("synthetic model")
    writer.add_file_type(FILE_TYPES[type_name])
    writer.add_context_length(spec["context"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(spec["layers"])
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(spec["eps"])
    if spec["rope_base"] is not None:
        writer.add_rope_freq_base(spec["rope_base"])
        writer.add_rope_dimension_count(head_dim)
    if spec.get("explicit_head_dim"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if "sliding_window" in spec:
        writer.add_sliding_window(spec["sliding_window"])
    if "attn_softcap" in spec:
        writer.add_attn_logit_softcapping(spec["attn_softcap"])
        writer.add_final_logit_softcapping(spec["final_softcap"])
    if "original_context" in spec:
        writer.add_rope_scaling_orig_ctx_len(spec["original_context"])
    if "yarn" in spec:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(spec["yarn"]["factor"])
        writer.add_rope_scaling_orig_ctx_len(spec["yarn"]["original_context"])
    moe = spec.get("moe")
    if moe:
        writer.add_expert_count(moe["experts"])
        writer.add_expert_used_count(moe["used"])
        expert_ff = ff // moe.get("ff_div", 1)
        if moe.get("expert_ff_key"):
            writer.add_expert_feed_forward_length(expert_ff)
        if "shared_mult" in moe:
            shared_ff = expert_ff * moe["shared_mult"]
            writer.add_expert_shared_feed_forward_length(shared_ff)
    if "pooling" in spec:
        writer.add_pooling_type(gguf.PoolingType(spec["pooling"]))
    granite = spec.get("granite")
    if granite:
        writer.add_attention_scale(granite["attention"])
        writer.add_embedding_scale(granite["embedding"])
        writer.add_residual_scale(granite["residual"])
        writer.add_logit_scale(granite["logit"])
    vocab = copy_tokenizer(writer, tokenizer_from)
    # The converter's LlamaModel, which SmolLM3's and Granite's converters extend, writes `vocab_size`.
    if arch in ("llama", "smollm3", "granite", "granitemoe"):
        writer.add_vocab_size(vocab)
    if spec.get("rank_head"):
        writer.add_classifier_output_labels(["yes", "no"])
        writer.add_chat_template([{"name": "rerank", "template": QWEN3_RERANK_TEMPLATE}])
    if spec.get("add_eos"):
        writer.add_add_eos_token(True)

    # F32 and F16 arrays carry their own type; quantized blocks come as bytes, with the type beside them.
    raw = qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)

    def put_matrix(name, data):
        quantized = gguf.quants.quantize(data.astype(np.float32), qtype)
        writer.add_tensor(name, quantized, raw_dtype=qtype if raw else None)

    def put_experts(name, data):
        if type_name != "mxfp4":
            return put_matrix(name, data)
        mxfp4 = gguf.GGMLQuantizationType.MXFP4
        writer.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), mxfp4), raw_dtype=mxfp4)

    # Real sizes (8B: 16 GB of F16) are generated as the writer writes each tensor, in the order they were
    # added, so the random draws and the bytes are the same as drawing them up front, without holding the
    # model in memory.
    def matrix(name, rows, cols, std):
        if not size:
            put_matrix(name, rng.standard_normal((rows, cols)) * std)
            return
        make = lambda: gguf.quants.quantize((rng.standard_normal((rows, cols)) * std).astype(np.float32), qtype)
        if raw:
            shape = gguf.quants.quant_shape_to_byte_shape((rows, cols), qtype)
            writer.add_tensor(name, Deferred(make, shape, np.uint8), raw_dtype=qtype)
        else:
            dtype = np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.float32
            writer.add_tensor(name, Deferred(make, (rows, cols), dtype))

    def vector(name, n, mean, std):
        make = lambda: (mean + rng.standard_normal(n) * std).astype(np.float32)
        writer.add_tensor(name, Deferred(make, (n,), np.float32) if size else make())

    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    gpt_oss = spec.get("gpt_oss", False)
    gemma = spec.get("gemma", False)
    tied = gemma or spec.get("tied", False)
    # Granite's multipliers, undone by the weights (see FAMILIES): the logits' divisor, the residual
    # stream's size after the embedding's multiplier, and the residual multiplier.
    logit_gain = granite["logit"] if granite else 1.0
    if tied:
        # Tied: the one matrix sets the logits' spread.
        matrix("token_embd.weight", vocab, hidden, LOGIT_STD * logit_gain / math.sqrt(hidden))
    else:
        matrix("token_embd.weight", vocab, hidden, 1.0)
    out_gain = 1.0
    if granite:
        out_gain = LOGIT_STD * logit_gain / math.sqrt(hidden) * granite["embedding"] / granite["residual"]
    vector("output_norm.weight", hidden, 1.0, 0.1)
    if not tied and not spec.get("no_output"):
        matrix("output.weight", vocab, hidden, LOGIT_STD / math.sqrt(hidden))
    if spec.get("rank_head"):
        matrix("cls.output.weight", 2, hidden, 1.0 / math.sqrt(hidden))
    if "llama3_rope" in spec:
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(spec["rope_base"], head_dim, **spec["llama3_rope"]))
    if spec.get("longrope"):
        # Shapes of Phi-3-mini-128k's factors: short ones near 1, long ones growing to ~40 at low frequencies.
        pairs = head_dim // 2
        ramp = np.linspace(0.0, 1.0, pairs)
        writer.add_tensor("rope_factors_short.weight", (1.0 + 1.5 * ramp**2).astype(np.float32))
        writer.add_tensor("rope_factors_long.weight", np.exp(ramp * math.log(40.0)).astype(np.float32))
        writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(32) / math.log(spec["original_context"])))
    qk_std = QK_GAIN / math.sqrt(hidden)
    if granite:
        qk_std *= math.sqrt((1.0 / math.sqrt(head_dim)) / granite["attention"])
    for layer in range(spec["layers"]):
        p = f"blk.{layer}"
        vector(f"{p}.attn_norm.weight", hidden, 1.0, 0.1)
        if spec.get("fused"):
            # Phi-3's attn_qkv: Q rows, then K, then V.
            put_matrix(f"{p}.attn_qkv.weight",
                       np.concatenate([rng.standard_normal((q_width + kv_width, hidden)) * qk_std,
                                       rng.standard_normal((kv_width, hidden)) / math.sqrt(hidden)]))
        else:
            matrix(f"{p}.attn_q.weight", q_width, hidden, qk_std)
            matrix(f"{p}.attn_k.weight", kv_width, hidden, qk_std)
            matrix(f"{p}.attn_v.weight", kv_width, hidden, 1.0 / math.sqrt(hidden))
            if spec.get("qkv_bias") or gpt_oss:
                vector(f"{p}.attn_q.bias", q_width, 0.0, 0.5)
                vector(f"{p}.attn_k.bias", kv_width, 0.0, 0.5)
                vector(f"{p}.attn_v.bias", kv_width, 0.0, 0.5)
        if spec.get("qk_norm"):
            vector(f"{p}.attn_q_norm.weight", head_dim, QK_GAIN, 0.1)
            vector(f"{p}.attn_k_norm.weight", head_dim, QK_GAIN, 0.1)
        matrix(f"{p}.attn_output.weight", hidden, q_width, out_gain / math.sqrt(q_width))
        if gpt_oss:
            vector(f"{p}.attn_output.bias", hidden, 0.0, 0.1)
            # Sinks near the rows' largest scores, so that they take a real share of each softmax.
            vector(f"{p}.attn_sinks.weight", heads, 1.0, 1.0)
            vector(f"{p}.post_attention_norm.weight", hidden, 1.0, 0.1)
        else:
            if gemma:
                vector(f"{p}.post_attention_norm.weight", hidden, 4.0, 0.5)
            vector(f"{p}.ffn_norm.weight", hidden, 1.0, 0.1)
        if moe:
            n = moe["experts"]
            writer.add_tensor(f"{p}.ffn_gate_inp.weight",
                              (rng.standard_normal((n, hidden)) * ROUTER_STD / math.sqrt(hidden)).astype(np.float32))
            # numpy (expert, rows, cols): GGUF's {cols, rows, expert}, the layout llama.cpp's mul_mat_id reads.
            # gpt-oss's gate and up are three times wider spread, so that swiglu_oai's clamps (7) are reached.
            gain = 3.0 if gpt_oss else 1.0
            put_experts(f"{p}.ffn_gate_exps.weight", rng.standard_normal((n, expert_ff, hidden)) * gain / math.sqrt(hidden))
            put_experts(f"{p}.ffn_up_exps.weight", rng.standard_normal((n, expert_ff, hidden)) * gain / math.sqrt(hidden))
            put_experts(f"{p}.ffn_down_exps.weight",
                        rng.standard_normal((n, hidden, expert_ff)) * out_gain / math.sqrt(expert_ff))
            if gpt_oss:
                # GGUF {width, expert}: numpy (expert, width).
                vector(f"{p}.ffn_gate_inp.bias", n, 0.0, 0.5)
                writer.add_tensor(f"{p}.ffn_gate_exps.bias", rng.standard_normal((n, expert_ff)).astype(np.float32))
                writer.add_tensor(f"{p}.ffn_up_exps.bias", rng.standard_normal((n, expert_ff)).astype(np.float32))
                writer.add_tensor(f"{p}.ffn_down_exps.bias",
                                  (rng.standard_normal((n, hidden)) * 0.1).astype(np.float32))
            if "shared_mult" in moe:
                writer.add_tensor(f"{p}.ffn_gate_inp_shexp.weight",
                                  (rng.standard_normal((1, hidden)) * ROUTER_STD / math.sqrt(hidden)).astype(np.float32))
                matrix(f"{p}.ffn_gate_shexp.weight", shared_ff, hidden, 1.0 / math.sqrt(hidden))
                matrix(f"{p}.ffn_up_shexp.weight", shared_ff, hidden, 1.0 / math.sqrt(hidden))
                matrix(f"{p}.ffn_down_shexp.weight", hidden, shared_ff, 1.0 / math.sqrt(shared_ff))
        elif spec.get("fused"):
            # Phi-3's ffn_up: gate rows then up rows.
            matrix(f"{p}.ffn_up.weight", 2 * ff, hidden, 1.0 / math.sqrt(hidden))
        else:
            matrix(f"{p}.ffn_gate.weight", ff, hidden, 1.0 / math.sqrt(hidden))
            matrix(f"{p}.ffn_up.weight", ff, hidden, 1.0 / math.sqrt(hidden))
        if not moe:
            matrix(f"{p}.ffn_down.weight", hidden, ff, out_gain / math.sqrt(ff))
        if gemma:
            vector(f"{p}.post_ffw_norm.weight", hidden, 4.0, 0.5)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# The encoder families: BERT's post-norm layout as llama.cpp's converter writes it for BertModel (biases on every
# projection, LayerNorm with biases, learned positions, token type embeddings), scaled down from
# all-MiniLM-L6-v2 (hidden 384, 6 layers, 12 heads of 32, FFN 1536, eps 1e-12, 512 positions).
ENCODERS = {
    # all-MiniLM-L6-v2, bge-small: mean pooling (llama.cpp's LLAMA_POOLING_TYPE_MEAN = 1).
    "bert": dict(pooling=1, classifier=False),
    # cross-encoder/ms-marco-MiniLM-L-6-v2: rank pooling (4): the [CLS] row through the pooler (`cls`, tanh)
    # and the classifier (`cls.output`, one label).
    "bert-rerank": dict(pooling=4, classifier=True),
    # nomic-embed-text-v1.5 (arch `nomic-bert`; real: hidden 768, 12 layers, 12 heads, FFN 3072, 2048
    # context, rope base 1000, mean pooling): no position embeddings but NeoX rotary on Q and K, one fused
    # `attn_qkv` and a SwiGLU feed-forward (`ffn_gate`, `ffn_up`, `ffn_down`), none of them biased; the
    # attention output keeps no bias either; `token_types` has 2 rows. Its WordPiece vocabulary is BERT's.
    "nomic-bert": dict(arch="nomic-bert", pooling=1, classifier=False, rope_base=1000.0, context=2048,
                       nomic=True),
    # XLM-RoBERTa encoders as the converter's XLMRobertaModel writes them (arch `bert`, the Unigram
    # vocabulary as tokenizer model `t5` with its precompiled charsmap, one token type, positions already
    # past RoBERTa's padding offset): bge-m3 (CLS pooling) and the cross-encoder bge-reranker-v2-m3 (rank,
    # with its `classifier.dense`/`out_proj` as `cls`/`cls.output`). The vocabulary is borrowed
    # (`--tokenizer-from`: llama.cpp's own models/ggml-vocab-nomic-bert-moe.gguf, XLM-R's 250048 pieces);
    # the post-processor's `<s> $A </s> </s> $B </s>` makes gguf-py write add_sep as well. Narrower than
    # the other encoders (hidden 64) since the embedding has a row per piece.
    "xlmr": dict(pooling=2, classifier=False, borrowed_vocab=True, hidden=64, ff=256, token_types=1),
    "xlmr-rerank": dict(pooling=4, classifier=True, borrowed_vocab=True, hidden=64, ff=256, token_types=1),
    # A BERT whose file says pooling type none (0): one vector per token, which no pooled API returns.
    "bert-tokens": dict(pooling=0, classifier=False),
    # jina-embeddings-v2-base-en (arch `jina-bert-v2`; real: hidden 768, 12 layers, 12 heads, FFN 3072,
    # 8192 context, mean pooling, BERT's WordPiece vocabulary): no position embeddings but ALiBi (llama.cpp
    # fixes its maximum bias at 8), and a GEGLU feed-forward whose `ffn_up` (HF's `gated_layers`, unbiased)
    # holds 2 x FFN rows, gate first; Q/K/V, output and `ffn_down` biased as in BERT. 6 heads of 16 here so
    # that the slopes cover both of ggml's ranges, as the real 12 heads do (heads past the largest power of
    # two in the count take the second). The context is 512 (the real 8192 is only a limit).
    "jina-bert-v2": dict(arch="jina-bert-v2", pooling=1, classifier=False, jina=True, hidden=96, heads=6,
                         ff=384),
}
ENCODER_SHAPE = dict(hidden=128, layers=2, heads=4, ff=512, context=512, eps=1e-12, token_types=2)

# A deterministic WordPiece vocabulary (see the module's docstring).
WORDS = """the of and to a in is was for on that with as by it at from this be are or an not which have has
had but were all their they one two three there been its more can will would about when what who how where
quick brown fox jump jumps over lazy dog hello world run running test tests token tokenization hard easy
capital city france paris germany berlin italy rome river bank money water sea ocean sky blue red green
cafe resume naive deja vu text number numbers and leading trailing space spaces newline newlines model
models embedding embeddings search query document documents rank ranking score music film book books
cat cats dog dogs house car cars machine learning language large small fast slow good bad new old
apple banana orange fruit tree trees computer science data is isn t s weather today sunny rain""".split()
PIECES = """s es ed ing ly er est tion ion al ity ment ness able ful less ous ive ize ise un re in ch th sh
ph wh qu ck ng nk st tr pr br cr gr fr dr pl bl cl fl gl sl sp sc sk sm sn sw tw""".split()
PUNCTUATION = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["\u2014", "\u00bf", "\u00a1", "\u20ac"]
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789") + ["\u4e2d", "\u6587", "\u00df"]


def wordpiece_vocab():
    """Tokens and their types (1 normal, 3 control) in llama.cpp's phantom-space form."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    types = [3] + [1] * 99 + [3, 3, 3, 3]
    seen = set(tokens)
    def add(token):
        if token not in seen:
            seen.add(token)
            tokens.append(token)
            types.append(1)
    for c in PUNCTUATION + CHARACTERS:
        add("\u2581" + c)
    for c in CHARACTERS:
        add(c)
    for w in WORDS:
        add("\u2581" + w)
    for p in PIECES:
        add(p)
    return tokens, types


def synthesize_encoder(family, out, type_name, tokenizer_from=None):
    spec = {**ENCODER_SHAPE, **ENCODERS[family]}
    hidden, heads, ff = spec["hidden"], spec["heads"], spec["ff"]
    qtype = TYPES[type_name]
    rng = np.random.default_rng(list(ENCODERS).index(family) + 101)
    borrowed = spec.get("borrowed_vocab", False)
    if borrowed and not tokenizer_from:
        sys.exit(f"--family {family} borrows its vocabulary: give --tokenizer-from")
    if not borrowed:
        tokens, types = wordpiece_vocab()

    nomic = spec.get("nomic", False)
    writer = gguf.GGUFWriter(out, spec.get("arch", "bert"))
    writer.add_name("synthetic encoder")
    writer.add_file_type(FILE_TYPES[type_name])
    writer.add_context_length(spec["context"])
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(spec["layers"])
    writer.add_head_count(heads)
    writer.add_layer_norm_eps(spec["eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType(spec["pooling"]))
    if borrowed:
        # The borrowed keys bring `tokenizer.ggml.token_type_count` (1) with them.
        n_vocab = copy_tokenizer(writer, tokenizer_from)
        writer.add_add_sep_token(True)
    else:
        writer.add_token_type_count(spec["token_types"])
        if nomic:
            writer.add_rope_freq_base(spec["rope_base"])
        write_wordpiece(writer, tokens, types)
        n_vocab = len(tokens)
    write_encoder_tensors(writer, spec, rng, qtype, n_vocab, nomic)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_wordpiece(writer, tokens, types):
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # As gguf-py's SpecialVocab writes BERT's: [CLS] as BOS, and the post-processor's "[CLS] $A [SEP]" as
    # add BOS and add SEP.
    writer.add_bos_token_id(101)
    writer.add_unk_token_id(100)
    writer.add_sep_token_id(102)
    writer.add_pad_token_id(0)
    writer.add_mask_token_id(103)
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)


def write_encoder_tensors(writer, spec, rng, qtype, n_vocab, nomic):
    hidden, ff = spec["hidden"], spec["ff"]

    def put_matrix(name, data):
        quantized = gguf.quants.quantize(data.astype(np.float32), qtype)
        raw = qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        writer.add_tensor(name, quantized, raw_dtype=qtype if raw else None)

    def matrix(name, rows, cols, std):
        put_matrix(name, rng.standard_normal((rows, cols)) * std)

    def vector(name, n, mean, std):
        writer.add_tensor(name, (mean + rng.standard_normal(n) * std).astype(np.float32))

    matrix("token_embd.weight", n_vocab, hidden, 1.0)
    writer.add_tensor("token_types.weight",
                      (rng.standard_normal((spec["token_types"], hidden)) * 0.5).astype(np.float32))
    if not nomic and not spec.get("jina"):
        matrix("position_embd.weight", spec["context"], hidden, 0.5)
    vector("token_embd_norm.weight", hidden, 1.0, 0.1)
    vector("token_embd_norm.bias", hidden, 0.0, 0.1)
    qk_std = QK_GAIN / math.sqrt(hidden)
    for layer in range(spec["layers"]):
        p = f"blk.{layer}"
        if spec.get("jina"):
            for name, std in (("attn_q", qk_std), ("attn_k", qk_std), ("attn_v", 1.0 / math.sqrt(hidden))):
                matrix(f"{p}.{name}.weight", hidden, hidden, std)
                vector(f"{p}.{name}.bias", hidden, 0.0, 0.1)
            matrix(f"{p}.attn_output.weight", hidden, hidden, 1.0 / math.sqrt(hidden))
            vector(f"{p}.attn_output.bias", hidden, 0.0, 0.1)
            vector(f"{p}.attn_output_norm.weight", hidden, 1.0, 0.1)
            vector(f"{p}.attn_output_norm.bias", hidden, 0.0, 0.1)
            matrix(f"{p}.ffn_up.weight", 2 * ff, hidden, 1.0 / math.sqrt(hidden))
            matrix(f"{p}.ffn_down.weight", hidden, ff, 1.0 / math.sqrt(ff))
            vector(f"{p}.ffn_down.bias", hidden, 0.0, 0.1)
            vector(f"{p}.layer_output_norm.weight", hidden, 1.0, 0.1)
            vector(f"{p}.layer_output_norm.bias", hidden, 0.0, 0.1)
            continue
        if nomic:
            # nomic's Wqkv: Q rows, then K, then V; unbiased projections, SwiGLU.
            put_matrix(f"{p}.attn_qkv.weight",
                       np.concatenate([rng.standard_normal((2 * hidden, hidden)) * qk_std,
                                       rng.standard_normal((hidden, hidden)) / math.sqrt(hidden)]))
            matrix(f"{p}.attn_output.weight", hidden, hidden, 1.0 / math.sqrt(hidden))
            vector(f"{p}.attn_output_norm.weight", hidden, 1.0, 0.1)
            vector(f"{p}.attn_output_norm.bias", hidden, 0.0, 0.1)
            matrix(f"{p}.ffn_up.weight", ff, hidden, 1.0 / math.sqrt(hidden))
            matrix(f"{p}.ffn_gate.weight", ff, hidden, 1.0 / math.sqrt(hidden))
            matrix(f"{p}.ffn_down.weight", hidden, ff, 1.0 / math.sqrt(ff))
            vector(f"{p}.layer_output_norm.weight", hidden, 1.0, 0.1)
            vector(f"{p}.layer_output_norm.bias", hidden, 0.0, 0.1)
            continue
        for name, std in (("attn_q", qk_std), ("attn_k", qk_std), ("attn_v", 1.0 / math.sqrt(hidden))):
            matrix(f"{p}.{name}.weight", hidden, hidden, std)
            vector(f"{p}.{name}.bias", hidden, 0.0, 0.1)
        matrix(f"{p}.attn_output.weight", hidden, hidden, 1.0 / math.sqrt(hidden))
        vector(f"{p}.attn_output.bias", hidden, 0.0, 0.1)
        vector(f"{p}.attn_output_norm.weight", hidden, 1.0, 0.1)
        vector(f"{p}.attn_output_norm.bias", hidden, 0.0, 0.1)
        matrix(f"{p}.ffn_up.weight", ff, hidden, 1.0 / math.sqrt(hidden))
        vector(f"{p}.ffn_up.bias", ff, 0.0, 0.1)
        matrix(f"{p}.ffn_down.weight", hidden, ff, 1.0 / math.sqrt(ff))
        vector(f"{p}.ffn_down.bias", hidden, 0.0, 0.1)
        vector(f"{p}.layer_output_norm.weight", hidden, 1.0, 0.1)
        vector(f"{p}.layer_output_norm.bias", hidden, 0.0, 0.1)
    if spec["classifier"]:
        matrix("cls.weight", hidden, hidden, 1.0 / math.sqrt(hidden))
        vector("cls.bias", hidden, 0.0, 0.1)
        matrix("cls.output.weight", 1, hidden, 2.0 / math.sqrt(hidden))
        vector("cls.output.bias", 1, 0.0, 0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES) + sorted(ENCODERS))
    parser.add_argument("--tokenizer-from", help="a real GGUF whose tokenizer.* keys are copied (decoders)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--type", default="f16", choices=sorted(TYPES))
    parser.add_argument("--hidden", type=int, default=64, help="embedding length (256 for K-quants)")
    parser.add_argument("--size", choices=sorted(SIZES), help="a real model's shape (llama3 family only)")
    args = parser.parse_args()
    if args.family in ENCODERS:
        synthesize_encoder(args.family, args.out, args.type, args.tokenizer_from)
        return
    if not args.tokenizer_from:
        parser.error("--tokenizer-from is needed for decoder families")
    if args.size and args.family != "llama3":
        parser.error("--size gives llama3 shapes: use --family llama3")
    synthesize(args.family, args.tokenizer_from, args.out, args.type, args.hidden, args.size)


if __name__ == "__main__":
    main()
