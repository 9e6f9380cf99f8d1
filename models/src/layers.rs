//! Building blocks the architectures share: linear layers over quantized weights, RMS norms, token
//! embeddings, and the gated feed-forward block.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

use crate::ModelError;
use crate::weights::GgufWeights;

/// `y = x W^T (+ b)` with quantized `W`, and for small models on CPU a dense f32 copy that prompt rows go
/// through: candle's quantized matmul reads the whole weight once per row, a dense GEMM once per step.
/// Decode rows always take the quantized path and prompt rows the dense one, whatever else shares the
/// step, so a sequence computes the same numbers alone or batched.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: QMatMul,
    dense: Option<Tensor>,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `<name>.weight`, and `<name>.bias` when the file has one.
    pub fn load(w: &mut GgufWeights, name: &str) -> Result<Self, ModelError> {
        Ok(Self {
            weight: w.qmatmul(&format!("{name}.weight"))?,
            dense: w.dense_copy(&format!("{name}.weight"))?,
            bias: w.optional_dequantized(&format!("{name}.bias"))?,
        })
    }

    /// The output head: `output.weight`, or the (still quantized) embedding matrix when tied, as in SmolLM2.
    /// Only sampled rows reach it, few per step: it stays quantized.
    pub fn output_head(w: &mut GgufWeights) -> Result<Self, ModelError> {
        if w.has_tensor("output.weight") {
            Ok(Self {
                weight: w.qmatmul("output.weight")?,
                dense: None,
                bias: w.optional_dequantized("output.bias")?,
            })
        } else {
            Ok(Self {
                weight: w.qmatmul("token_embd.weight")?,
                dense: None,
                bias: None,
            })
        }
    }

    /// `x` is `[rows, in]`; rows from `dense_from` on are prompt rows (`StepBatch::dense_from`).
    pub fn forward(&self, x: &Tensor, dense_from: usize) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        let y = match &self.dense {
            Some(w) if dense_from == 0 => x.matmul(&w.t()?)?,
            Some(w) if dense_from < rows => {
                let decode = self.weight.forward(&x.narrow(0, 0, dense_from)?)?;
                let prompt = x
                    .narrow(0, dense_from, rows - dense_from)?
                    .matmul(&w.t()?)?;
                Tensor::cat(&[decode, prompt], 0)?
            }
            _ => self.weight.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
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
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// The token embedding table, dequantized once at load.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Tensor,
}

impl Embedding {
    pub fn load(w: &mut GgufWeights, name: &str) -> Result<Self, ModelError> {
        Ok(Self {
            table: w.dequantized(name)?,
        })
    }

    pub fn device(&self) -> candle_core::Device {
        self.table.device().clone()
    }

    pub fn vocab_size(&self) -> usize {
        self.table.dim(0).unwrap_or(0)
    }

    /// Rows for `tokens` (a u32 tensor of ids): `[tokens, hidden]`.
    pub fn forward(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
        self.table.index_select(tokens, 0)
    }
}

/// The nonlinearity of a gated feed-forward block.
#[derive(Debug, Clone, Copy)]
pub enum Activation {
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
}

/// `down(act(gate(x)) * up(x))`. Gate and up may be one fused matrix (Phi-3), split in halves.
#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate_up: GateUp,
    down: Linear,
    activation: Activation,
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
        Ok(Self {
            gate_up: GateUp::Separate {
                gate: Linear::load(w, &format!("{prefix}.ffn_gate"))?,
                up: Linear::load(w, &format!("{prefix}.ffn_up"))?,
            },
            down: Linear::load(w, &format!("{prefix}.ffn_down"))?,
            activation,
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
        })
    }

    pub fn forward(&self, x: &Tensor, dense_from: usize) -> candle_core::Result<Tensor> {
        let (gate, up) = match &self.gate_up {
            GateUp::Separate { gate, up } => {
                (gate.forward(x, dense_from)?, up.forward(x, dense_from)?)
            }
            GateUp::Fused(gate_up) => {
                let both = gate_up.forward(x, dense_from)?;
                let half = both.dim(candle_core::D::Minus1)? / 2;
                (
                    both.narrow(candle_core::D::Minus1, 0, half)?,
                    both.narrow(candle_core::D::Minus1, half, half)?,
                )
            }
        };
        let gate = match self.activation {
            Activation::Silu => candle_nn::ops::silu(&gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        self.down.forward(&(gate * up)?, dense_from)
    }
}
