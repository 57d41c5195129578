//! graft: the products of one input by several weight matrices, made as one product.
//!
//! A layer multiplies the same input by its attention's query, key and value matrices, and
//! by its MLP's gate and up matrices. On a CPU each product is a parallel loop of its own,
//! rounding the input to the weights' dot format again, and a decode step's are small (a
//! 135M model's key and value products are 192 rows, too few to split between two threads):
//! five loops per layer where two do. Where the matrices share a type and an input width,
//! their rows are stored one after the other as one matrix and the input is multiplied by it
//! once; the outputs are views of the product's columns. Each output is the same dot of the
//! same weight row and input row as before, so the same value; where each part adds a bias
//! (Qwen2's query, key and value), the biases become one vector added to the product. Apart
//! they stay where the types differ (a Q4_K_M file's Q6_K value matrix), where only some
//! parts have a bias, and off the CPU, where this was not measured.
//!
//! This module owns how weights are stacked and products split; it must not know which
//! model's matrices they are.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{Result, Tensor, D};
use mistralrs_quant::{GgufMatMul, QuantMethod, QuantMethodConfig};

/// Weight matrices that multiply one input, in order.
pub struct Stacked {
    form: Form,
}

enum Form {
    /// One matrix of every part's rows; each part's output width, in order.
    One {
        weight: Arc<dyn QuantMethod>,
        widths: Vec<usize>,
    },
    Apart(Vec<Arc<dyn QuantMethod>>),
}

impl Stacked {
    /// `parts` (each `(outputs, inputs)`), stacked into one matrix where they can be.
    pub fn new(parts: Vec<QTensor>) -> Result<Self> {
        Self::with_biases(parts.into_iter().map(|p| (p, None)).collect())
    }

    /// `parts` with the bias each adds to its output (a Qwen2 layer's query, key and value),
    /// stacked into one matrix, their biases into one vector, where they can be: every part
    /// with a bias, or none.
    pub fn with_biases(parts: Vec<(QTensor, Option<Tensor>)>) -> Result<Self> {
        let Some((first, first_bias)) = parts.first() else {
            candle_core::bail!("no weight matrices to stack")
        };
        let stackable = parts.len() > 1
            && parts.iter().all(|(p, bias)| {
                p.device().is_cpu()
                    && p.dtype() == first.dtype()
                    && p.shape().dims().len() == 2
                    && p.shape().dims()[1] == first.shape().dims()[1]
                    && bias.is_some() == first_bias.is_some()
            });
        if !stackable {
            return Self::apart_with_biases(parts);
        }
        let widths: Vec<usize> = parts.iter().map(|(p, _)| p.shape().dims()[0]).collect();
        let mut bytes = Vec::new();
        for (part, _) in &parts {
            bytes.extend_from_slice(&part.data()?);
        }
        let dims = vec![widths.iter().sum(), first.shape().dims()[1]];
        let stacked = qtensor_from_ggml(first.dtype(), &bytes, dims, &first.device())?;
        let biases: Option<Vec<Tensor>> = parts.iter().map(|(_, bias)| bias.clone()).collect();
        let bias = biases.map(|biases| Tensor::cat(&biases, 0)).transpose()?;
        Ok(Self {
            form: Form::One {
                weight: gguf_matmul(stacked, bias)?,
                widths,
            },
        })
    }

    /// `parts` multiplied one by one, as upstream does.
    pub fn apart(parts: Vec<QTensor>) -> Result<Self> {
        Self::apart_with_biases(parts.into_iter().map(|p| (p, None)).collect())
    }

    /// `parts` with their biases, multiplied one by one, as upstream does.
    pub fn apart_with_biases(parts: Vec<(QTensor, Option<Tensor>)>) -> Result<Self> {
        let parts = parts
            .into_iter()
            .map(|(weight, bias)| gguf_matmul(weight, bias))
            .collect::<Result<_>>()?;
        Ok(Self {
            form: Form::Apart(parts),
        })
    }

    /// Whether the parts are one matrix.
    pub fn is_one(&self) -> bool {
        matches!(self.form, Form::One { .. })
    }

    /// `x` times each part: one tensor per part, in order (views of one product's columns
    /// where the parts are one matrix).
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match &self.form {
            Form::One { weight, widths } => {
                let product = weight.forward(x)?;
                let mut start = 0;
                widths
                    .iter()
                    .map(|&width| {
                        let part = product.narrow(D::Minus1, start, width);
                        start += width;
                        part
                    })
                    .collect()
            }
            Form::Apart(parts) => parts.iter().map(|w| w.forward(x)).collect(),
        }
    }
}

fn gguf_matmul(weight: QTensor, bias: Option<Tensor>) -> Result<Arc<dyn QuantMethod>> {
    Ok(Arc::new(GgufMatMul::new(QuantMethodConfig::Gguf {
        q_weight: Arc::new(weight),
        b: bias,
    })?))
}
