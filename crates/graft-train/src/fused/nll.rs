//! The output layer's loss, `-log softmax(logits)[wanted]` for each row, as one op with its
//! own backward pass (`softmax - one-hot`, times each row's gradient). candle's composed
//! `log_softmax` and `gather` wrote the whole `[rows, vocabulary]` tensor five times forward
//! and read and wrote it some twenty times backward; fused, a row is read twice forward and
//! once backward, where the row's `log Σ exp(x)` comes from its loss, `loss + x[wanted]`.
//!
//! The values are candle's: `log Σ exp(x - max) - (x[wanted] - max)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{contiguous, float_dtype, max_of, on_cpu, sum_of, zeros, Real};

struct Nll {
    /// Each row's wanted token.
    wanted: Vec<u32>,
}

/// The logits' gradient from the logits, each row's loss and its gradient.
struct NllBackward {
    wanted: Vec<u32>,
}

/// A row's largest logit and `Σ exp(x - max)`.
fn max_and_sum<T: Real>(row: &[T]) -> (T, T) {
    let max = max_of(row);
    (max, sum_of(row, |v| (v - max).exp_fast()))
}

fn forward<T: Real>(logits: &[T], vocab: usize, wanted: &[u32]) -> Vec<T> {
    logits
        .par_chunks(vocab)
        .zip(wanted.par_iter())
        .map(|(row, &w)| {
            let (max, sum) = max_and_sum(row);
            sum.ln() - (row[w as usize] - max)
        })
        .collect()
}

/// `softmax(row) · g`, less `g` at the wanted token, for each row, where `softmax(x) =
/// e^(x - lse)` and the row's `lse = log Σ e^x` is its loss plus its wanted logit.
fn backward<T: Real>(logits: &[T], vocab: usize, wanted: &[u32], loss: &[T], grad: &[T]) -> Vec<T> {
    let mut out = zeros(logits.len());
    out.par_chunks_mut(vocab)
        .zip(
            logits
                .par_chunks(vocab)
                .zip(wanted.par_iter().zip(loss.par_iter().zip(grad.par_iter()))),
        )
        .for_each(|(dx, (row, (&w, (&loss, &g))))| {
            let lse = loss + row[w as usize];
            for (dx, &x) in dx.iter_mut().zip(row) {
                *dx = (x - lse).exp_fast() * g;
            }
            dx[w as usize] = dx[w as usize] - g;
        });
    out
}

/// `[rows, vocab]` with one wanted token per row, each inside the vocabulary.
fn rows_and_vocab(layout: &Layout, wanted: &[u32]) -> Result<usize> {
    let (rows, vocab) = layout.shape().dims2()?;
    if rows != wanted.len() {
        candle_core::bail!("nll: {rows} rows of logits, {} wanted tokens", wanted.len());
    }
    if let Some(w) = wanted.iter().find(|&&w| w as usize >= vocab) {
        candle_core::bail!("nll: token {w} is outside the vocabulary of {vocab}");
    }
    Ok(vocab)
}

impl CustomOp1 for Nll {
    fn name(&self) -> &'static str {
        "nll"
    }

    fn cpu_fwd(&self, logits: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let vocab = rows_and_vocab(layout, &self.wanted)?;
        let out = match float_dtype(logits, "nll")? {
            DType::F32 => CpuStorage::F32(forward::<f32>(contiguous(logits, layout, "the logits")?, vocab, &self.wanted)),
            _ => CpuStorage::F64(forward::<f64>(contiguous(logits, layout, "the logits")?, vocab, &self.wanted)),
        };
        Ok((out, Shape::from(self.wanted.len())))
    }

    fn bwd(&self, logits: &Tensor, out: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = NllBackward {
            wanted: self.wanted.clone(),
        };
        Ok(Some(logits.apply_op3_no_bwd(&out.contiguous()?, &grad.contiguous()?, &op)?))
    }
}

impl CustomOp3 for NllBackward {
    fn name(&self) -> &'static str {
        "nll-backward"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        ll: &Layout,
        loss: &CpuStorage,
        ol: &Layout,
        grad: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let vocab = rows_and_vocab(ll, &self.wanted)?;
        for (what, l) in [("a gradient", gl), ("a loss", ol)] {
            if l.dims() != [self.wanted.len()] {
                candle_core::bail!("nll backward: {what} of {:?} for {} rows", l.dims(), self.wanted.len());
            }
        }
        let (ls, os, gs) = ("the logits", "the loss", "the gradient");
        let out = match float_dtype(logits, "nll backward")? {
            DType::F32 => CpuStorage::F32(backward::<f32>(
                contiguous(logits, ll, ls)?,
                vocab,
                &self.wanted,
                contiguous(loss, ol, os)?,
                contiguous(grad, gl, gs)?,
            )),
            _ => CpuStorage::F64(backward::<f64>(
                contiguous(logits, ll, ls)?,
                vocab,
                &self.wanted,
                contiguous(loss, ol, os)?,
                contiguous(grad, gl, gs)?,
            )),
        };
        Ok((out, ll.shape().clone()))
    }
}

/// `-log softmax(logits)[wanted[r]]` for each row `r` of `logits` (`[rows, vocab]` → `[rows]`),
/// with a backward pass to the logits. On a GPU, candle's `log_softmax` and `gather`.
pub fn of(logits: &Tensor, wanted: &[u32]) -> Result<Tensor> {
    if !on_cpu(logits) {
        let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let at = Tensor::from_vec(wanted.to_vec(), (wanted.len(), 1), logits.device())?;
        return log_probs.gather(&at, 1)?.squeeze(1)?.neg();
    }
    logits.contiguous()?.apply_op1(Nll { wanted: wanted.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::check::{agree, f32_agrees};
    use candle_core::{Device, Var};

    /// The fused op is candle's `log_softmax` and `gather`, forward and backward.
    #[test]
    fn it_is_candles_log_softmax_at_the_wanted_tokens() {
        let device = Device::Cpu;
        let logits = Var::from_tensor(&Tensor::randn(0f64, 4.0, (5, 11), &device).unwrap()).unwrap();
        let wanted = [3u32, 0, 10, 3, 7];
        let weights = Tensor::randn(0f64, 1.0, 5, &device).unwrap();

        let ours = of(logits.as_tensor(), &wanted).unwrap();
        let log_probs = candle_nn::ops::log_softmax(logits.as_tensor(), D::Minus1).unwrap();
        let at = Tensor::from_vec(wanted.to_vec(), (5, 1), &device).unwrap();
        let theirs = log_probs.gather(&at, 1).unwrap().squeeze(1).unwrap().neg().unwrap();
        assert_eq!(ours.dims(), &[5]);
        assert!(ours.min_all().unwrap().to_scalar::<f64>().unwrap() > 0.0);
        agree(&ours, &theirs, &[&logits], &weights);

        f32_agrees(|t| of(t[0], &wanted), &[&logits], &weights, 1e-5);
    }

    #[test]
    fn a_token_outside_the_vocabulary_or_a_missing_one_is_an_error() {
        let logits = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(of(&logits, &[1, 4]).unwrap_err().to_string().contains("outside the vocabulary"));
        assert!(of(&logits, &[1]).unwrap_err().to_string().contains("wanted"));
    }
}
