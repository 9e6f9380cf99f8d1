//! Building blocks the architectures share: linear layers over quantized weights, RMS norms, token
//! embeddings, and the gated feed-forward block.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Shape, Tensor};
use kernels::PackedMatrix;

use crate::ModelError;
use crate::weights::{GgufWeights, MappedMatrix};

/// `y = x W^T (+ b)` with quantized `W`.
///
/// On the CPU, weights of the types our kernels run are repacked (`kernels::PackedMatrix`): one integer
/// GEMM per step reads each weight tile once for all rows. Other types stay candle `QMatMul`s, and for
/// small models a dense f32 copy that prompt rows go through: candle's quantized matmul reads the whole
/// weight once per row, a dense GEMM once per step. Decode rows always take the quantized path and prompt
/// rows the dense one, whatever else shares the step, so a sequence computes the same numbers alone or
/// batched.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum LinearWeight {
    Packed(Arc<PackedMatrix>),
    Candle { q: QMatMul, dense: Option<Tensor> },
}

impl LinearWeight {
    /// The packed matrix where the kernels run this tensor, else candle's, with a dense copy for prompt
    /// rows when `dense` and the model keeps them.
    fn load(w: &mut GgufWeights, name: &str, dense: bool) -> Result<Self, ModelError> {
        Ok(match w.packed(&[name])? {
            Some(packed) => LinearWeight::Packed(packed),
            None => LinearWeight::Candle {
                q: w.qmatmul(name)?,
                dense: if dense { w.dense_copy(name)? } else { None },
            },
        })
    }
}

impl Linear {
    /// Loads `<name>.weight`, and `<name>.bias` when the file has one.
    pub fn load(w: &mut GgufWeights, name: &str) -> Result<Self, ModelError> {
        Ok(Self {
            weight: LinearWeight::load(w, &format!("{name}.weight"), true)?,
            bias: w.optional_dequantized(&format!("{name}.bias"))?,
        })
    }

    /// Several projections of the same input as one packed matrix, outputs side by side in `names`'
    /// order (Q/K/V, gate/up): one pass over the activations for all of them. `None` where they cannot
    /// pack together (not on the CPU, other types, biases on some but not all).
    pub fn load_stacked(w: &mut GgufWeights, names: &[&str]) -> Result<Option<Self>, ModelError> {
        let biases: Vec<String> = names.iter().map(|n| format!("{n}.bias")).collect();
        let with_bias = biases.iter().filter(|b| w.has_tensor(b)).count();
        if with_bias != 0 && with_bias != names.len() {
            return Ok(None);
        }
        let weights: Vec<String> = names.iter().map(|n| format!("{n}.weight")).collect();
        let refs: Vec<&str> = weights.iter().map(String::as_str).collect();
        let Some(packed) = w.packed(&refs)? else {
            return Ok(None);
        };
        let bias = if with_bias == 0 {
            None
        } else {
            let parts = biases
                .iter()
                .map(|b| w.dequantized(b))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Tensor::cat(&parts, 0)?)
        };
        Ok(Some(Self {
            weight: LinearWeight::Packed(packed),
            bias,
        }))
    }

    /// A layer over an already packed matrix, without bias (one expert's slice of a 3-D tensor).
    pub fn from_packed(packed: Arc<PackedMatrix>) -> Self {
        Self {
            weight: LinearWeight::Packed(packed),
            bias: None,
        }
    }

    /// This layer with `bias` added to its output (one expert's slice of a stacked bias, gpt-oss).
    pub fn with_bias(mut self, bias: Tensor) -> Self {
        self.bias = Some(bias);
        self
    }

    /// A layer over a candle matmul, without bias or dense copy (an expert the kernels do not run).
    pub fn from_qmatmul(q: QMatMul) -> Self {
        Self {
            weight: LinearWeight::Candle { q, dense: None },
            bias: None,
        }
    }

    /// The output head: `output.weight`, or the embedding matrix when tied, as in SmolLM2.
    pub fn output_head(w: &mut GgufWeights) -> Result<Self, ModelError> {
        let name = if w.has_tensor("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        // Only sampled rows reach the head, few per step: no dense copy.
        let weight = LinearWeight::load(w, name, false)?;
        let bias = if name == "output.weight" {
            w.optional_dequantized("output.bias")?
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// The packed matrix behind this layer, if it has one (a tied embedding reads its rows).
    pub fn packed(&self) -> Option<&Arc<PackedMatrix>> {
        match &self.weight {
            LinearWeight::Packed(p) => Some(p),
            LinearWeight::Candle { .. } => None,
        }
    }

    /// Has the kernels' idle workers start reading this layer's weights for a step of `tokens`, where
    /// such a step is bound by memory (`PackedMatrix::warm`); called before work that leaves the
    /// memory idle (norms, attention). Nothing for weights outside the packed kernels.
    pub fn warm(&self, tokens: usize) {
        if let LinearWeight::Packed(packed) = &self.weight {
            packed.warm(tokens);
        }
    }

    /// `x` is `[rows, in]`; rows from `dense_from` on are prompt rows (`StepBatch::dense_from`).
    pub fn forward(&self, x: &Tensor, dense_from: usize) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        let y = match &self.weight {
            LinearWeight::Packed(packed) => x
                .contiguous()?
                .apply_op1_no_bwd(&PackedMatmul(packed.as_ref()))?,
            LinearWeight::Candle { q, dense } => match dense {
                Some(w) if dense_from == 0 => x.matmul(&w.t()?)?,
                Some(w) if dense_from < rows => {
                    let decode = q.forward(&x.narrow(0, 0, dense_from)?)?;
                    let prompt = x
                        .narrow(0, dense_from, rows - dense_from)?
                        .matmul(&w.t()?)?;
                    Tensor::cat(&[decode, prompt], 0)?
                }
                _ => q.forward(x)?,
            },
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `x W^T` through the packed CPU kernels, as a candle op over `[rows, in]` f32 input.
struct PackedMatmul<'a>(&'a PackedMatrix);

impl CustomOp1 for PackedMatmul<'_> {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("packed-matmul takes f32 input");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("packed-matmul takes contiguous input");
        };
        let rows = layout.dims().first().copied().unwrap_or(0);
        let mut out = vec![0f32; rows * self.0.rows()];
        self.0
            .matmul(&data[start..end], &mut out)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((CpuStorage::F32(out), Shape::from((rows, self.0.rows()))))
    }
}

/// Root-mean-square normalisation over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(w: &mut GgufWeights, name: &str, eps: f32) -> Result<Self, ModelError> {
        Ok(Self {
            weight: w.dequantized(name)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return crate::cuda::rms_norm(x, &self.weight, self.eps);
        }
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// The token embedding table: dequantized once at load, or, when the output head is tied to it and
/// packed, read row by row from the packed head (no second copy of the largest matrix).
#[derive(Debug, Clone)]
pub struct Embedding {
    table: EmbeddingTable,
}

#[derive(Debug, Clone)]
enum EmbeddingTable {
    Dense(Tensor),
    Packed(Arc<PackedMatrix>),
    /// Quantized rows where they lie in the mapped file (an untied table on the CPU): an f32 copy of a
    /// 128k-token vocabulary would be 1-2 GiB, and a step reads only its tokens' rows.
    Mapped(MappedMatrix),
}

impl Embedding {
    /// `tied_head`: the output head, when it is this same matrix.
    pub fn load(
        w: &mut GgufWeights,
        name: &str,
        tied_head: Option<&Linear>,
    ) -> Result<Self, ModelError> {
        let table = match tied_head.and_then(Linear::packed) {
            Some(packed) => EmbeddingTable::Packed(packed.clone()),
            None => match w.mapped_matrix(name)? {
                Some(mapped) => EmbeddingTable::Mapped(mapped),
                None => EmbeddingTable::Dense(w.dequantized(name)?),
            },
        };
        Ok(Self { table })
    }

    pub fn vocab_size(&self) -> usize {
        match &self.table {
            EmbeddingTable::Dense(t) => t.dim(0).unwrap_or(0),
            EmbeddingTable::Packed(p) => p.rows(),
            EmbeddingTable::Mapped(m) => m.rows(),
        }
    }

    /// Rows for `tokens`: `[tokens, hidden]`.
    pub fn forward(&self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        match &self.table {
            EmbeddingTable::Dense(table) => {
                let ids = Tensor::new(tokens, table.device())?;
                table.index_select(&ids, 0)
            }
            EmbeddingTable::Packed(packed) => {
                let mut rows = Vec::with_capacity(tokens.len() * packed.cols());
                for &t in tokens {
                    if t as usize >= packed.rows() {
                        candle_core::bail!("token id {t} is outside the vocabulary");
                    }
                    rows.extend(packed.dequantize_row(t as usize));
                }
                Tensor::from_vec(
                    rows,
                    (tokens.len(), packed.cols()),
                    &candle_core::Device::Cpu,
                )
            }
            EmbeddingTable::Mapped(mapped) => {
                let mut rows = Vec::with_capacity(tokens.len() * mapped.cols());
                for &t in tokens {
                    if t as usize >= mapped.rows() {
                        candle_core::bail!("token id {t} is outside the vocabulary");
                    }
                    mapped
                        .dequantize_row_into(t as usize, &mut rows)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                }
                Tensor::from_vec(
                    rows,
                    (tokens.len(), mapped.cols()),
                    &candle_core::Device::Cpu,
                )
            }
        }
    }
}

/// The nonlinearity of a gated feed-forward block: the one the CUDA kernel takes.
pub use kernels::reference::GatedActivation as Activation;

/// gpt-oss's `swiglu_oai` (ggml's op of that name): `g * sigmoid(ALPHA g) * (u + 1)` with the gate
/// clamped above at `LIMIT` and the up projection to `[-LIMIT, LIMIT]`.
pub const SWIGLU_OAI_ALPHA: f64 = 1.702;
pub const SWIGLU_OAI_LIMIT: f64 = 7.0;

/// `down(act(gate(x)) * up(x))`. Gate and up may be one fused matrix (Phi-3), split in halves.
#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate_up: GateUp,
    down: Linear,
    activation: Activation,
    /// gpt-oss's clamped SwiGLU in place of `activation` (`SWIGLU_OAI_*`).
    swiglu_oai: bool,
}

#[derive(Debug, Clone)]
enum GateUp {
    Separate { gate: Linear, up: Linear },
    Fused(Linear),
}

impl GatedMlp {
    /// `ffn_gate`, `ffn_up`, `ffn_down` under `prefix`.
    pub fn load(
        w: &mut GgufWeights,
        prefix: &str,
        activation: Activation,
    ) -> Result<Self, ModelError> {
        Self::load_suffixed(w, prefix, "", activation)
    }

    /// `ffn_gate<suffix>`, `ffn_up<suffix>`, `ffn_down<suffix>` under `prefix` (`_shexp`: a shared
    /// expert).
    pub fn load_suffixed(
        w: &mut GgufWeights,
        prefix: &str,
        suffix: &str,
        activation: Activation,
    ) -> Result<Self, ModelError> {
        let (gate, up) = (
            format!("{prefix}.ffn_gate{suffix}"),
            format!("{prefix}.ffn_up{suffix}"),
        );
        let gate_up = match Linear::load_stacked(w, &[&gate, &up])? {
            Some(fused) => GateUp::Fused(fused),
            None => GateUp::Separate {
                gate: Linear::load(w, &gate)?,
                up: Linear::load(w, &up)?,
            },
        };
        Ok(Self {
            gate_up,
            down: Linear::load(w, &format!("{prefix}.ffn_down{suffix}"))?,
            activation,
            swiglu_oai: false,
        })
    }

    /// A fused `ffn_up` holding gate then up, as Phi-3 stores it.
    pub fn load_fused(
        w: &mut GgufWeights,
        prefix: &str,
        activation: Activation,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            gate_up: GateUp::Fused(Linear::load(w, &format!("{prefix}.ffn_up"))?),
            down: Linear::load(w, &format!("{prefix}.ffn_down"))?,
            activation,
            swiglu_oai: false,
        })
    }

    /// Gate and up as one layer of twice the width, gate rows first (a packed expert).
    pub fn from_fused(gate_up: Linear, down: Linear, activation: Activation) -> Self {
        Self {
            gate_up: GateUp::Fused(gate_up),
            down,
            activation,
            swiglu_oai: false,
        }
    }

    /// Gate, up and down as given (an expert on candle's matmul).
    pub fn from_separate(gate: Linear, up: Linear, down: Linear, activation: Activation) -> Self {
        Self {
            gate_up: GateUp::Separate { gate, up },
            down,
            activation,
            swiglu_oai: false,
        }
    }

    /// This block with a bias on each projection's output (a gpt-oss expert's slices of the stacked
    /// biases); a fused gate and up takes both, gate's first.
    pub fn with_expert_biases(
        mut self,
        gate_bias: Tensor,
        up_bias: Tensor,
        down_bias: Tensor,
    ) -> candle_core::Result<Self> {
        self.gate_up = match self.gate_up {
            GateUp::Fused(both) => {
                GateUp::Fused(both.with_bias(Tensor::cat(&[gate_bias, up_bias], 0)?))
            }
            GateUp::Separate { gate, up } => GateUp::Separate {
                gate: gate.with_bias(gate_bias),
                up: up.with_bias(up_bias),
            },
        };
        self.down = self.down.with_bias(down_bias);
        Ok(self)
    }

    /// This block with gpt-oss's `swiglu_oai` in place of its activation.
    pub fn with_swiglu_oai(mut self) -> Self {
        self.swiglu_oai = true;
        self
    }

    /// `Linear::warm` for the block's first projection.
    pub fn warm(&self, tokens: usize) {
        match &self.gate_up {
            GateUp::Separate { gate, .. } => gate.warm(tokens),
            GateUp::Fused(gate_up) => gate_up.warm(tokens),
        }
    }

    pub fn forward(&self, x: &Tensor, dense_from: usize) -> candle_core::Result<Tensor> {
        // A long prompt's gate and up outputs in slices of tokens small enough for the heap: glibc
        // maps every block over 32 MiB afresh (a 1B model's 512-token output is exactly that), and
        // faulting in 16 layers' fresh pages was ~6% of a prompt step. A token's results do not
        // depend on the others in its step, so the slices compute the same numbers.
        let tokens = x.dim(0)?;
        let width = self.down.packed().map_or(0, |down| down.cols());
        let slice = (FFN_SLICE_BYTES / (8 * width.max(1))).max(1);
        if x.device().is_cpu() && tokens > slice {
            let parts = (0..tokens)
                .step_by(slice)
                .map(|at| {
                    let n = slice.min(tokens - at);
                    self.forward_rows(&x.narrow(0, at, n)?, dense_from.saturating_sub(at))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            return Tensor::cat(&parts, 0);
        }
        self.forward_rows(x, dense_from)
    }

    fn forward_rows(&self, x: &Tensor, dense_from: usize) -> candle_core::Result<Tensor> {
        let tokens = x.dim(0)?;
        let (gate, up) = match &self.gate_up {
            GateUp::Separate { gate, up } => {
                let gate = gate.forward(x, dense_from)?;
                let up = up.forward(x, dense_from)?;
                self.down.warm(tokens);
                (gate, up)
            }
            GateUp::Fused(gate_up) => {
                let both = gate_up.forward(x, dense_from)?;
                self.down.warm(tokens);
                let half = both.dim(candle_core::D::Minus1)? / 2;
                (
                    both.narrow(candle_core::D::Minus1, 0, half)?,
                    both.narrow(candle_core::D::Minus1, half, half)?,
                )
            }
        };
        if self.swiglu_oai {
            // On any device through candle's ops: no fused kernel takes the clamps.
            let gate = gate.minimum(SWIGLU_OAI_LIMIT)?;
            let up = up.clamp(-SWIGLU_OAI_LIMIT, SWIGLU_OAI_LIMIT)?;
            let glu = (&gate * candle_nn::ops::sigmoid(&(&gate * SWIGLU_OAI_ALPHA)?)?)?;
            return self.down.forward(&(glu * (up + 1.0)?)?, dense_from);
        }
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let mixed = crate::cuda::gated_activation(&gate, &up, self.activation)?;
            return self.down.forward(&mixed, dense_from);
        }
        let mixed = match self.activation {
            Activation::Silu if gate.device().is_cpu() && gate.dtype() == DType::F32 => {
                gate.apply_op2_no_bwd(&up, &SiluTimes)?
            }
            Activation::Silu => (candle_nn::ops::silu(&gate)? * up)?,
            Activation::GeluTanh => (gate.gelu()? * up)?,
        };
        self.down.forward(&mixed, dense_from)
    }
}

/// The most bytes a CPU feed-forward step's gate and up outputs take at once (`GatedMlp::forward`), well
/// under glibc's 32 MiB ceiling for blocks its heaps serve.
const FFN_SLICE_BYTES: usize = 16 << 20;

/// `silu(gate) * up` on the CPU in one pass (`kernels::cpu::silu_times`) over `[tokens, width]` f32
/// matrices whose rows are contiguous (a fused projection's two halves are views of one): no copy of
/// either half, no temporary between the two operations.
struct SiluTimes;

impl CustomOp2 for SiluTimes {
    fn name(&self) -> &'static str {
        "silu-times"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(gate), CpuStorage::F32(up)) = (gate, up) else {
            candle_core::bail!("silu-times takes f32 input");
        };
        // Where row `t` of a `[tokens, width]` matrix with contiguous rows starts, and its width.
        let rows = |layout: &Layout| match (layout.dims(), layout.stride()) {
            (&[tokens, width], &[stride, 1]) => {
                Some((layout.start_offset(), stride, tokens, width))
            }
            _ => None,
        };
        let (Some((gate_at, gate_stride, tokens, width)), Some((up_at, up_stride, ..))) =
            (rows(gate_layout), rows(up_layout))
        else {
            candle_core::bail!("silu-times takes matrices with contiguous rows");
        };
        if up_layout.dims() != gate_layout.dims() {
            candle_core::bail!("silu-times takes two matrices of one shape");
        }
        let mut out = vec![0f32; tokens * width];
        // `max(1)`: a zero-width matrix (a hostile file's) has no rows to fill, and no chunks of zero.
        for (t, out) in out.chunks_exact_mut(width.max(1)).enumerate() {
            let gate = gate
                .get(gate_at + t * gate_stride..)
                .and_then(|g| g.get(..width));
            let up = up.get(up_at + t * up_stride..).and_then(|u| u.get(..width));
            let (Some(gate), Some(up)) = (gate, up) else {
                candle_core::bail!("silu-times: a row lies outside its storage");
            };
            kernels::cpu::silu_times(gate, up, out);
        }
        Ok((CpuStorage::F32(out), Shape::from((tokens, width))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use kernels::reference::{self, GatedActivation};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 4000) as f32 / 1000.0
                    - 2.0
            })
            .collect()
    }

    fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    /// The CPU's one-pass `silu(gate) * up` on the two halves of a fused projection's output (views
    /// of one matrix, rows not contiguous with each other), and on two matrices of their own, computes
    /// what candle's `silu` then `mul` do; a shape it cannot take is an error.
    #[test]
    fn silu_times_on_fused_halves_matches_candles_two_ops() {
        let (tokens, width) = (5, 1000);
        let both = Tensor::from_vec(
            values(tokens * 2 * width, 9)
                .iter()
                .map(|v| v * 4.0)
                .collect::<Vec<_>>(),
            (tokens, 2 * width),
            &Device::Cpu,
        )
        .unwrap();
        let (gate, up) = (
            both.narrow(1, 0, width).unwrap(),
            both.narrow(1, width, width).unwrap(),
        );
        let want = (candle_nn::ops::silu(&gate).unwrap() * &up)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (gate, up) in [
            (gate.clone(), up.clone()),
            (gate.contiguous().unwrap(), up.contiguous().unwrap()),
        ] {
            let got = gate.apply_op2_no_bwd(&up, &SiluTimes).unwrap();
            assert_eq!(got.dims(), [tokens, width]);
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
        let empty = Tensor::zeros((3, 0), DType::F32, &Device::Cpu).unwrap();
        let none = empty.apply_op2_no_bwd(&empty, &SiluTimes).unwrap();
        assert_eq!(none.dims(), [3, 0]);
        let transposed = gate.t().unwrap();
        assert!(
            transposed
                .apply_op2_no_bwd(&transposed, &SiluTimes)
                .is_err()
        );
        assert!(
            gate.apply_op2_no_bwd(&up.narrow(0, 0, 2).unwrap(), &SiluTimes)
                .is_err()
        );
    }

    /// A Q8_0 matrix of `rows x cols` with fixed pseudo-random values.
    fn q8_0_matrix(rows: usize, cols: usize, seed: u32) -> Arc<PackedMatrix> {
        let mut bytes = Vec::new();
        for (b, q) in values(rows * cols / 32 * 33, seed)
            .chunks_exact(33)
            .enumerate()
        {
            let scale = half::f16::from_f32(0.01 + (b % 7) as f32 * 0.003);
            bytes.extend_from_slice(&scale.to_le_bytes());
            bytes.extend(q[1..].iter().map(|v| (v * 60.0) as i8 as u8));
        }
        Arc::new(PackedMatrix::pack(kernels::GgmlType::Q8_0, &bytes, rows, cols).unwrap())
    }

    /// A prompt longer than one slice of the CPU feed-forward (4096 wide: 512 tokens a slice) gives
    /// every token the bits it gets when the whole step runs at once.
    #[test]
    fn a_sliced_feed_forward_step_gives_the_same_bits_as_a_whole_one() {
        let (hidden, width, tokens) = (64, 4096, 600);
        let mlp = GatedMlp::from_fused(
            Linear::from_packed(q8_0_matrix(2 * width, hidden, 5)),
            Linear::from_packed(q8_0_matrix(hidden, width, 6)),
            Activation::Silu,
        );
        assert!(tokens > FFN_SLICE_BYTES / (8 * width));
        let x =
            Tensor::from_vec(values(tokens * hidden, 7), (tokens, hidden), &Device::Cpu).unwrap();
        let bits = |t: Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|v| v.to_bits()).collect()
        };
        let sliced = bits(mlp.forward(&x, usize::MAX).unwrap());
        let whole = bits(mlp.forward_rows(&x, usize::MAX).unwrap());
        assert_eq!(sliced.len(), tokens * hidden);
        assert!(sliced == whole, "a token's results changed with its slice");
    }

    /// The fused CUDA kernels' twins compute what the CPU path computes with candle.
    #[test]
    fn rms_norm_and_gated_activations_match_the_kernels_twins() {
        let (rows, cols) = (3, 576);
        let x = values(rows * cols, 1);
        let weight = values(cols, 2);
        let norm = RmsNorm {
            weight: Tensor::new(weight.as_slice(), &Device::Cpu).unwrap(),
            eps: 1e-5,
        };
        let input = Tensor::from_vec(x.clone(), (rows, cols), &Device::Cpu).unwrap();
        let candle = norm
            .forward(&input)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut twin = vec![0f32; x.len()];
        reference::rms_norm(&mut twin, &x, &weight, 1e-5);
        assert!(largest_difference(&candle, &twin) < 1e-5);

        let (gate, up) = (values(rows * cols, 3), values(rows * cols, 4));
        let g = Tensor::from_vec(gate.clone(), (rows, cols), &Device::Cpu).unwrap();
        let u = Tensor::from_vec(up.clone(), (rows, cols), &Device::Cpu).unwrap();
        for (activation, candle) in [
            (GatedActivation::Silu, candle_nn::ops::silu(&g).unwrap()),
            (GatedActivation::GeluTanh, g.gelu().unwrap()),
        ] {
            let candle = (candle * &u)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut twin = vec![0f32; gate.len()];
            reference::gated_activation(&mut twin, &gate, &up, activation);
            assert!(largest_difference(&candle, &twin) < 1e-5, "{activation:?}");
        }
    }
}
