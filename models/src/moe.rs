//! Mixture-of-experts feed-forward blocks (Qwen 2 and 3 MoE, Mixtral): a router picks, per token, the `k`
//! most likely of `n` gated-SiLU experts, and the block's output is their outputs weighted by the router
//! (plus, for Qwen 2 MoE, a shared expert every token goes through, gated by a sigmoid).
//!
//! Routing is llama.cpp's `build_moe_ffn` with softmax gating: logits from `ffn_gate_inp` (kept F32 by
//! the converter), softmax over every expert, the top `k`, their probabilities renormalised to sum 1
//! (Qwen 3 MoE's `norm_topk_prob`; for Mixtral the same as a softmax over the chosen logits). Experts
//! come from the 3-D `ffn_{gate,up,down}_exps` tensors, `[n_expert, rows, cols]` in candle's order.
//!
//! Each expert is its own `GatedMlp` over its slice of those tensors: on the CPU its gate and up rows
//! packed as one `PackedMatrix` and its down rows as another, so a step runs the kernels unchanged and an
//! expert's weights are read once for all the step's tokens routed to it (its rows are gathered first);
//! experts no token chose are not touched. Elsewhere (CUDA, types the kernels do not run) each expert's
//! slice is a candle `QMatMul`. The weighted outputs are summed per token in llama.cpp's order (best
//! expert first), so a token's numbers depend only on its own routing, never on what shares the step.

use candle_core::Tensor;

use crate::ModelError;
use crate::layers::{Activation, GatedMlp, Linear};
use crate::weights::GgufWeights;

/// llama.cpp's `LLAMA_MAX_EXPERTS`.
pub const MAX_EXPERTS: usize = 1024;

/// Whether an architecture's feed-forward blocks are mixtures of experts, and of which kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpertLayers {
    /// Always dense (the `<arch>.expert_*` keys are ignored, as llama.cpp ignores them).
    #[default]
    Never,
    /// Mixtures when `<arch>.expert_count` is above 0, top-k weights renormalised (`llama`: Mixtral).
    WhenCounted,
    /// Always mixtures, top-k weights renormalised: `<arch>.expert_count` and `expert_used_count` are
    /// required (`qwen3moe`).
    Always,
    /// Always mixtures, top-k weights as the softmax gave them, plus a shared expert whose output is
    /// gated by `sigmoid(ffn_gate_inp_shexp . x)` (`qwen2moe`).
    AlwaysWithSharedExpert,
    /// Always mixtures, gpt-oss's: biases on the router and on every expert projection, the clamped
    /// `swiglu_oai`, and the weights a softmax over the chosen experts' logits (`gpt-oss`).
    AlwaysOpenAi,
}

/// A mixture's experts, experts per token and routing (from the metadata, checked by
/// `crate::shape::moe_shape`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeShape {
    pub experts: usize,
    pub used: usize,
    /// The chosen experts' weights rescaled to sum 1 (Mixtral, Qwen 3 MoE; not Qwen 2 MoE).
    pub renormalise: bool,
    /// A shared expert (`ffn_*_shexp`) every token goes through besides its routed ones (Qwen 2 MoE).
    pub shared_expert: bool,
    /// gpt-oss's experts: `ffn_gate_inp.bias` and `ffn_{gate,up,down}_exps.bias`, `swiglu_oai`.
    pub openai: bool,
}

/// The experts one token goes to, best first, with their weights: llama.cpp's softmax over `logits`
/// (one per expert) and its top `k` (ties to the lower index); with `renormalise`, the weights rescaled
/// to sum 1 (the sum clamped below at f16's smallest normal, as llama.cpp does, so it never divides by
/// zero).
pub fn route(logits: &[f32], k: usize, renormalise: bool) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    // NaN (a broken router) ranks last rather than breaking the sort's total order.
    let rank = |e: usize| {
        if exp[e].is_nan() {
            f32::NEG_INFINITY
        } else {
            exp[e]
        }
    };
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable, so equal probabilities keep index order.
    order.sort_by(|&a, &b| rank(b).total_cmp(&rank(a)));
    order.truncate(k);
    let chosen: Vec<(usize, f32)> = order.iter().map(|&e| (e, exp[e] / total)).collect();
    if !renormalise {
        return chosen;
    }
    let sum = chosen
        .iter()
        .map(|(_, p)| p)
        .sum::<f32>()
        .max(6.103_515_6e-5);
    chosen.into_iter().map(|(e, p)| (e, p / sum)).collect()
}

/// A mixture-of-experts feed-forward block: router and experts of one layer.
#[derive(Debug, Clone)]
pub struct MixtureOfExperts {
    /// `ffn_gate_inp` transposed, `[hidden, n_expert]`, f32.
    router: Tensor,
    /// `ffn_gate_inp.bias`, `[n_expert]` (gpt-oss).
    router_bias: Option<Tensor>,
    experts: Vec<GatedMlp>,
    used: usize,
    renormalise: bool,
    shared: Option<SharedExpert>,
}

/// Qwen 2 MoE's shared expert: a gated MLP every token goes through, its output scaled by
/// `sigmoid(gate . x)`.
#[derive(Debug, Clone)]
struct SharedExpert {
    /// `ffn_gate_inp_shexp` as a column, `[hidden, 1]`, f32.
    gate: Tensor,
    mlp: GatedMlp,
}

impl SharedExpert {
    fn load(w: &mut GgufWeights, prefix: &str) -> Result<Self, ModelError> {
        let gate = w.dequantized(&format!("{prefix}.ffn_gate_inp_shexp.weight"))?;
        let hidden = gate.elem_count();
        Ok(Self {
            gate: gate.reshape((hidden, 1))?,
            mlp: GatedMlp::load_suffixed(w, prefix, "_shexp", Activation::Silu)?,
        })
    }

    /// llama.cpp computes the gate as `silu(g) / g`, which is `sigmoid(g)` where `g` is not 0.
    fn forward(&self, x: &Tensor, dense_from: usize) -> candle_core::Result<Tensor> {
        let gate = candle_nn::ops::sigmoid(&x.matmul(&self.gate)?)?;
        self.mlp.forward(x, dense_from)?.broadcast_mul(&gate)
    }
}

/// gpt-oss's biases: the router's, and each expert's for its gate, up and down projections (`[n_expert,
/// width]` as candle orders the GGUF's `{width, n_expert}`).
struct ExpertBiases {
    router: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

impl ExpertBiases {
    fn load(w: &mut GgufWeights, prefix: &str) -> Result<Self, ModelError> {
        let mut bias = |name: &str| w.dequantized(&format!("{prefix}.{name}.bias"));
        Ok(Self {
            router: bias("ffn_gate_inp")?,
            gate: bias("ffn_gate_exps")?,
            up: bias("ffn_up_exps")?,
            down: bias("ffn_down_exps")?,
        })
    }

    /// Expert `e`'s MLP with its biases and `swiglu_oai`: llama.cpp adds each bias to its projection's
    /// output (`ggml_add_id`) before the activation, and the down bias before the router's weight.
    fn apply(&self, e: usize, mlp: GatedMlp) -> candle_core::Result<GatedMlp> {
        let (gate, up, down) = (self.gate.get(e)?, self.up.get(e)?, self.down.get(e)?);
        Ok(mlp.with_expert_biases(gate, up, down)?.with_swiglu_oai())
    }
}

impl MixtureOfExperts {
    /// `ffn_gate_inp` and `ffn_{gate,up,down}_exps` under `prefix` (shapes checked by `crate::shape`).
    pub fn load(w: &mut GgufWeights, prefix: &str, shape: MoeShape) -> Result<Self, ModelError> {
        let router = w
            .dequantized(&format!("{prefix}.ffn_gate_inp.weight"))?
            .t()?
            .contiguous()?;
        let gate = format!("{prefix}.ffn_gate_exps.weight");
        let up = format!("{prefix}.ffn_up_exps.weight");
        let down = format!("{prefix}.ffn_down_exps.weight");
        let mut experts = Self::load_experts(w, [&gate, &up, &down], shape.experts)?;
        let router_bias = if shape.openai {
            let biases = ExpertBiases::load(w, prefix)?;
            experts = experts
                .into_iter()
                .enumerate()
                .map(|(e, mlp)| biases.apply(e, mlp))
                .collect::<candle_core::Result<_>>()?;
            Some(biases.router)
        } else {
            None
        };
        let shared = if shape.shared_expert {
            Some(SharedExpert::load(w, prefix)?)
        } else {
            None
        };
        Ok(Self {
            router,
            router_bias,
            experts,
            used: shape.used,
            renormalise: shape.renormalise,
            shared,
        })
    }

    /// Each expert's gated MLP, cut from the 3-D `[gate, up, down]` stacks: packed where the kernels run
    /// the type, else candle matmuls.
    fn load_experts(
        w: &mut GgufWeights,
        [gate, up, down]: [&str; 3],
        experts: usize,
    ) -> Result<Vec<GatedMlp>, ModelError> {
        let downs: Vec<Linear> = match w.packed_experts(&[down], experts)? {
            Some(packed) => packed.into_iter().map(Linear::from_packed).collect(),
            None => w
                .expert_matmuls(down, experts)?
                .into_iter()
                .map(Linear::from_qmatmul)
                .collect(),
        };
        Ok(match w.packed_experts(&[gate, up], experts)? {
            Some(packed) => packed
                .into_iter()
                .zip(downs)
                .map(|(gate_up, down)| {
                    GatedMlp::from_fused(Linear::from_packed(gate_up), down, Activation::Silu)
                })
                .collect(),
            None => {
                let gates = w.expert_matmuls(gate, experts)?;
                let ups = w.expert_matmuls(up, experts)?;
                gates
                    .into_iter()
                    .zip(ups)
                    .zip(downs)
                    .map(|((gate, up), down)| {
                        GatedMlp::from_separate(
                            Linear::from_qmatmul(gate),
                            Linear::from_qmatmul(up),
                            down,
                            Activation::Silu,
                        )
                    })
                    .collect()
            }
        })
    }

    /// `x` is `[tokens, hidden]`; returns `[tokens, hidden]`. Rows from `dense_from` on are prompt rows
    /// (`StepBatch::dense_from`), for the shared expert's layers.
    pub fn forward(&self, x: &Tensor, dense_from: usize) -> candle_core::Result<Tensor> {
        let routed = self.routed(x)?;
        match &self.shared {
            Some(shared) => routed + shared.forward(x, dense_from)?,
            None => Ok(routed),
        }
    }

    /// The routed experts' weighted sum.
    fn routed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (tokens, hidden) = x.dims2()?;
        let k = self.used;
        let logits = x.matmul(&self.router)?;
        let logits = match &self.router_bias {
            Some(bias) => logits.broadcast_add(bias)?,
            None => logits,
        };
        let logits = logits.to_vec2::<f32>()?;
        // Per expert: the tokens routed to it, and for each the slot (token * k + rank) it fills.
        let mut routed: Vec<(Vec<u32>, Vec<u32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new(), Vec::new()); self.experts.len()];
        for (t, row) in logits.iter().enumerate() {
            for (rank, (e, weight)) in route(row, k, self.renormalise).into_iter().enumerate() {
                let (rows, slots, weights) = &mut routed[e];
                rows.push(t as u32);
                slots.push((t * k + rank) as u32);
                weights.push(weight);
            }
        }
        let device = x.device();
        let mut outputs = Vec::new();
        let mut slot_of_output = Vec::with_capacity(tokens * k);
        for (expert, (rows, slots, weights)) in self.experts.iter().zip(&routed) {
            if rows.is_empty() {
                continue;
            }
            let n = rows.len();
            let inputs = x.index_select(&Tensor::new(rows.as_slice(), device)?, 0)?;
            let weights = Tensor::from_slice(weights, (n, 1), device)?;
            outputs.push(
                expert
                    .forward(&inputs, usize::MAX)?
                    .broadcast_mul(&weights)?,
            );
            slot_of_output.extend_from_slice(slots);
        }
        if outputs.is_empty() {
            return x.zeros_like();
        }
        // Back into slot order (each token's experts best first), then summed over each token's slots.
        let mut order = vec![0u32; slot_of_output.len()];
        for (i, &slot) in slot_of_output.iter().enumerate() {
            order[slot as usize] = i as u32;
        }
        let stacked = Tensor::cat(&outputs, 0)?;
        let slots = stacked.index_select(&Tensor::new(order.as_slice(), device)?, 0)?;
        let per_token = slots.reshape((tokens, k, hidden))?;
        // Summed slot by slot, as llama.cpp adds its expert views.
        let mut sum = per_token.narrow(1, 0, 1)?.squeeze(1)?;
        for rank in 1..k {
            sum = (sum + per_token.narrow(1, rank, 1)?.squeeze(1)?)?;
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_core::quantized::GgmlDType;
    use kernels::{GgmlType, PackedMatrix};
    use std::sync::Arc;

    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                ((h >> 8) % 2001) as f32 / 1000.0 * scale - scale
            })
            .collect()
    }

    /// Values rounded to f16, as the packed F16 tiles hold them, and their bytes.
    fn f16(values: &[f32]) -> (Vec<f32>, Vec<u8>) {
        let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
        let bytes = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        (halves.iter().map(|h| h.to_f32()).collect(), bytes)
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// A gated MLP's gate rows, up rows and down rows.
    type Mlp = (Vec<f32>, Vec<f32>, Vec<f32>);

    /// A mixture's weights as plain rows, computed token by token: what the grouped forward must equal.
    struct Dense {
        router: Vec<Vec<f32>>,
        experts: Vec<Mlp>,
        hidden: usize,
        ff: usize,
        used: usize,
        renormalise: bool,
        /// The shared expert's gate vector, its gate, up and down rows, and its width.
        shared: Option<(Vec<f32>, Mlp, usize)>,
    }

    fn gated(h: usize, ff: usize, (gate, up, down): &Mlp, x: &[f32]) -> Vec<f32> {
        let mixed: Vec<f32> = (0..ff)
            .map(|j| {
                let g = dot(&gate[j * h..(j + 1) * h], x);
                let u = dot(&up[j * h..(j + 1) * h], x);
                g / (1.0 + (-g).exp()) * u
            })
            .collect();
        (0..h)
            .map(|i| dot(&down[i * ff..(i + 1) * ff], &mixed))
            .collect()
    }

    impl Dense {
        fn token(&self, x: &[f32]) -> Vec<f32> {
            let (h, ff) = (self.hidden, self.ff);
            let logits: Vec<f32> = self.router.iter().map(|r| dot(r, x)).collect();
            let mut out = vec![0f32; h];
            for (e, weight) in route(&logits, self.used, self.renormalise) {
                for (o, y) in out.iter_mut().zip(gated(h, ff, &self.experts[e], x)) {
                    *o += weight * y;
                }
            }
            if let Some((gate, mlp, ff)) = &self.shared {
                let g = 1.0 / (1.0 + (-dot(gate, x)).exp());
                for (o, y) in out.iter_mut().zip(gated(h, *ff, mlp, x)) {
                    *o += g * y;
                }
            }
            out
        }

        fn experts_used(&self, x: &[f32], tokens: usize) -> usize {
            let mut used = std::collections::BTreeSet::new();
            for token in x.chunks(self.hidden).take(tokens) {
                let logits: Vec<f32> = self.router.iter().map(|r| dot(r, token)).collect();
                used.extend(
                    route(&logits, self.used, self.renormalise)
                        .into_iter()
                        .map(|(e, _)| e),
                );
            }
            used.len()
        }

        /// `moe` on `tokens` rows of `x` against this reference, within `tolerance` of the output scale.
        fn check(&self, moe: &MixtureOfExperts, x: &[f32], tolerance: f32) {
            let tokens = x.len() / self.hidden;
            let input = Tensor::from_vec(x.to_vec(), (tokens, self.hidden), &Device::Cpu).unwrap();
            let out = moe
                .forward(&input, usize::MAX)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (t, row) in out.iter().enumerate() {
                let want = self.token(&x[t * self.hidden..(t + 1) * self.hidden]);
                let err = row
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
                assert!(
                    err <= tolerance * scale.max(1.0),
                    "token {t}: off by {err} (scale {scale})"
                );
            }
            assert!(
                self.experts_used(x, tokens) > self.used,
                "the tokens should spread over several experts"
            );
        }
    }

    const HIDDEN: usize = 64;
    const FF: usize = 32;
    const SHARED_FF: usize = 96;

    /// Six experts of F16 weights on the packed kernels, two per token, and their reference.
    fn packed_mixture() -> (MixtureOfExperts, Dense) {
        let experts = 6;
        let router: Vec<Vec<f32>> = (0..experts)
            .map(|e| values(HIDDEN, 100 + e as u32, 0.5))
            .collect();
        let router_t: Vec<f32> = (0..HIDDEN)
            .flat_map(|i| router.iter().map(move |r| r[i]))
            .collect();
        let mut mlps = Vec::new();
        let mut dense = Vec::new();
        for e in 0..experts as u32 {
            let (gate, gate_bytes) = f16(&values(FF * HIDDEN, 3 * e, 0.2));
            let (up, up_bytes) = f16(&values(FF * HIDDEN, 3 * e + 1, 0.2));
            let (down, down_bytes) = f16(&values(HIDDEN * FF, 3 * e + 2, 0.2));
            let gate_up = PackedMatrix::pack_stacked(
                &[
                    (GgmlType::F16, &gate_bytes, FF),
                    (GgmlType::F16, &up_bytes, FF),
                ],
                HIDDEN,
            )
            .unwrap();
            let down_packed = PackedMatrix::pack(GgmlType::F16, &down_bytes, HIDDEN, FF).unwrap();
            mlps.push(GatedMlp::from_fused(
                Linear::from_packed(Arc::new(gate_up)),
                Linear::from_packed(Arc::new(down_packed)),
                Activation::Silu,
            ));
            dense.push((gate, up, down));
        }
        let moe = MixtureOfExperts {
            router: Tensor::from_vec(router_t, (HIDDEN, experts), &Device::Cpu).unwrap(),
            router_bias: None,
            experts: mlps,
            used: 2,
            renormalise: true,
            shared: None,
        };
        let reference = Dense {
            router,
            experts: dense,
            hidden: HIDDEN,
            ff: FF,
            used: 2,
            renormalise: true,
            shared: None,
        };
        (moe, reference)
    }

    #[test]
    fn grouped_experts_compute_each_tokens_weighted_mixture() {
        let (moe, reference) = packed_mixture();
        reference.check(&moe, &values(9 * HIDDEN, 7, 1.5), 1e-4);
    }

    #[test]
    fn a_tokens_mixture_does_not_depend_on_what_shares_the_step() {
        let (moe, _) = packed_mixture();
        let tokens = 7;
        let x = values(tokens * HIDDEN, 11, 1.5);
        let input = Tensor::from_vec(x.clone(), (tokens, HIDDEN), &Device::Cpu).unwrap();
        let batched = moe
            .forward(&input, usize::MAX)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (t, row) in batched.iter().enumerate() {
            let one = x[t * HIDDEN..(t + 1) * HIDDEN].to_vec();
            let alone = Tensor::from_vec(one, (1, HIDDEN), &Device::Cpu).unwrap();
            let alone = moe
                .forward(&alone, usize::MAX)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert_eq!(&alone[0], row, "token {t}");
        }
        let empty = Tensor::zeros((0, HIDDEN), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(moe.forward(&empty, usize::MAX).unwrap().dims(), [0, HIDDEN]);
    }

    /// A layer's router and stacked experts (`[experts, rows, cols]`) written as a GGUF of `dtype`.
    fn stacked_file(dtype: GgmlDType, experts: usize, shared: bool) -> std::path::PathBuf {
        use candle_core::quantized::{QTensor, gguf_file};
        let tensor = |name: &str, dims: &[usize], seed: u32, dtype: GgmlDType| {
            let n = dims.iter().product();
            let t = Tensor::from_vec(values(n, seed, 0.3), dims, &Device::Cpu).unwrap();
            (name.to_string(), QTensor::quantize(&t, dtype).unwrap())
        };
        let mut tensors = vec![
            tensor(
                "blk.1.ffn_gate_inp.weight",
                &[experts, HIDDEN],
                1,
                GgmlDType::F32,
            ),
            tensor(
                "blk.1.ffn_gate_exps.weight",
                &[experts, FF, HIDDEN],
                2,
                dtype,
            ),
            tensor("blk.1.ffn_up_exps.weight", &[experts, FF, HIDDEN], 3, dtype),
            tensor(
                "blk.1.ffn_down_exps.weight",
                &[experts, HIDDEN, FF],
                4,
                dtype,
            ),
        ];
        if shared {
            // The converter keeps HF's `[1, hidden]` shared-expert gate (F32).
            tensors.extend([
                tensor(
                    "blk.1.ffn_gate_inp_shexp.weight",
                    &[1, HIDDEN],
                    5,
                    GgmlDType::F32,
                ),
                tensor(
                    "blk.1.ffn_gate_shexp.weight",
                    &[SHARED_FF, HIDDEN],
                    6,
                    dtype,
                ),
                tensor("blk.1.ffn_up_shexp.weight", &[SHARED_FF, HIDDEN], 7, dtype),
                tensor(
                    "blk.1.ffn_down_shexp.weight",
                    &[HIDDEN, SHARED_FF],
                    8,
                    dtype,
                ),
            ]);
        }
        let arch = gguf_file::Value::String("qwen2moe".into());
        let path = std::env::temp_dir().join(format!(
            "models-moe-{}-{dtype:?}-{shared}.gguf",
            std::process::id()
        ));
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut file = std::fs::File::create(&path).unwrap();
        gguf_file::write(&mut file, &[("general.architecture", &arch)], &refs).unwrap();
        path
    }

    /// Each expert reads its own slice of the stacked tensors, whether packed for our kernels (F16,
    /// Q8_0) or left to candle's matmul (F32, which the kernels do not run); with a shared expert (Qwen 2
    /// MoE), its sigmoid-gated output is added and the routed weights are not renormalised.
    #[test]
    fn experts_load_their_own_slices_of_the_stacked_tensors() {
        let experts = 5;
        for (dtype, tolerance) in [
            (GgmlDType::F16, 1e-4),
            (GgmlDType::F32, 1e-4),
            (GgmlDType::Q8_0, 2e-2),
        ] {
            for shared in [false, true] {
                let path = stacked_file(dtype, experts, shared);
                let mut w = GgufWeights::open(&path, &Device::Cpu).unwrap();
                let _ = std::fs::remove_file(&path);
                let shape = MoeShape {
                    experts,
                    used: 2,
                    renormalise: !shared,
                    shared_expert: shared,
                    openai: false,
                };
                let moe = MixtureOfExperts::load(&mut w, "blk.1", shape).unwrap();
                let mut rows = |name: &str| -> Vec<f32> {
                    let t = w.dequantized(&format!("blk.1.{name}.weight")).unwrap();
                    t.flatten_all().unwrap().to_vec1().unwrap()
                };
                let split = |v: Vec<f32>| -> Vec<Vec<f32>> {
                    v.chunks(v.len() / experts).map(<[f32]>::to_vec).collect()
                };
                let (gates, ups, downs) = (
                    split(rows("ffn_gate_exps")),
                    split(rows("ffn_up_exps")),
                    split(rows("ffn_down_exps")),
                );
                let shared_weights = shared.then(|| {
                    (
                        rows("ffn_gate_inp_shexp"),
                        (
                            rows("ffn_gate_shexp"),
                            rows("ffn_up_shexp"),
                            rows("ffn_down_shexp"),
                        ),
                        SHARED_FF,
                    )
                });
                let reference = Dense {
                    router: split_router(rows("ffn_gate_inp"), experts),
                    experts: gates
                        .into_iter()
                        .zip(ups)
                        .zip(downs)
                        .map(|((g, u), d)| (g, u, d))
                        .collect(),
                    hidden: HIDDEN,
                    ff: FF,
                    used: 2,
                    renormalise: !shared,
                    shared: shared_weights,
                };
                reference.check(&moe, &values(8 * HIDDEN, 3, 1.5), tolerance);
            }
        }
    }

    fn split_router(v: Vec<f32>, experts: usize) -> Vec<Vec<f32>> {
        v.chunks(v.len() / experts).map(<[f32]>::to_vec).collect()
    }

    #[test]
    fn routing_takes_the_top_k_of_the_softmax_and_renormalises_them() {
        let logits = [0.5f32, 2.0, -1.0, 1.0];
        let routed = route(&logits, 2, true);
        assert_eq!(routed.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3]);
        let (a, b) = (2.0f32.exp(), 1.0f32.exp());
        assert!((routed[0].1 - a / (a + b)).abs() < 1e-6);
        assert!((routed[1].1 - b / (a + b)).abs() < 1e-6);
    }

    #[test]
    fn without_renormalisation_the_weights_are_the_softmax_probabilities() {
        let logits = [0.5f32, 2.0, -1.0, 1.0];
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        let routed = route(&logits, 2, false);
        assert_eq!(routed.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3]);
        assert!((routed[0].1 - 2.0f32.exp() / total).abs() < 1e-6);
        assert!((routed[1].1 - 1.0f32.exp() / total).abs() < 1e-6);
    }

    #[test]
    fn equal_router_logits_route_to_the_lower_experts_in_order() {
        let routed = route(&[1.0, 1.0, 1.0, 0.0], 2, true);
        assert_eq!(routed, [(0, 0.5), (1, 0.5)]);
        let all = route(&[3.0, -2.0], 2, true);
        assert!((all.iter().map(|r| r.1).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(route(&[0.0, 9.0, 1.0], 1, true), [(1, 1.0)]);
        // A broken router gives broken weights, never a panic.
        assert_eq!(route(&[f32::NAN, 1.0, f32::NAN], 2, true).len(), 2);
    }
}
