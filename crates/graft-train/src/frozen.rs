//! A product with a frozen weight, `x Wᵀ`, whose backward pass gives the gradient of `x`
//! only. candle's own matmul also computes the weight's gradient on every backward pass (a
//! weight-sized tensor and a third of the step's multiply-adds per projection), which training
//! adapters never uses; this op runs the same matmul kernel forward and one product backward.
//!
//! A product already computed on the same input (a training step's first run of a layer,
//! without a graph) is taken as it is by [`known_matmul_t`], with the same backward pass, so
//! the second run (with a graph) does not multiply again.
//!
//! It owns nothing else: the weights are the model's, and an adapter's own (trainable)
//! products stay ordinary candle ops.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

struct FrozenMatmul;

/// [`FrozenMatmul`] whose value is known: the third operand.
struct KnownMatmul;

/// `x [m, k]` times `w [n, k]` transposed, by the storage's own matmul kernel.
fn forward<S: BackendStorage>(x: &S, x_layout: &Layout, w: &S, w_layout: &Layout) -> Result<(S, Shape)> {
    let (m, k) = x_layout.shape().dims2()?;
    let (n, w_k) = w_layout.shape().dims2()?;
    if k != w_k {
        candle_core::bail!("frozen matmul: input is {k} wide, the weight {w_k}");
    }
    let out = x.matmul(w, (1, m, n, k), x_layout, &w_layout.transpose(0, 1)?)?;
    Ok((out, Shape::from((m, n))))
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        forward(x, xl, w, wl)
    }

    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        forward(x, xl, w, wl)
    }

    fn bwd(&self, _x: &Tensor, w: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

impl CustomOp3 for KnownMatmul {
    fn name(&self) -> &'static str {
        "known-frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        _x: &CpuStorage,
        xl: &Layout,
        _w: &CpuStorage,
        wl: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((m, _), (n, _)) = (xl.shape().dims2()?, wl.shape().dims2()?);
        if yl.shape().dims2()? != (m, n) {
            candle_core::bail!("known frozen matmul: {m} × {n} expected, {:?} given", yl.dims());
        }
        let out = crate::fused::copy_of(y, yl, "known frozen matmul", "the known product")?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None, None))
    }
}

/// `x` as rows (`[..., k]` → `[rows, k]`) and the output's dimensions for `n` columns.
fn as_rows(x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    let mut dims = x.dims().to_vec();
    let Some(k) = dims.pop() else {
        candle_core::bail!("frozen matmul: a scalar input");
    };
    Ok((x.contiguous()?.reshape(((), k))?, dims))
}

/// `x Wᵀ` for `x` of any rank (`[..., k]` → `[..., n]`) and a frozen `w` (`[n, k]`).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, mut dims) = as_rows(x)?;
    let out = rows.apply_op2(&w.detach(), FrozenMatmul)?;
    dims.push(out.dim(1)?);
    out.reshape(dims)
}

/// [`matmul_t`] of `x` and `w` when its value is known: `y`, computed by `matmul_t` on the
/// same `x` and `w` (a caller that passes another `y` gets `y`, and gradients for it). The
/// value is `y`'s, the backward pass `matmul_t`'s. CPU tensors only.
pub fn known_matmul_t(x: &Tensor, w: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (rows, mut dims) = as_rows(x)?;
    let n = w.dim(0)?;
    let known = y.detach().contiguous()?.reshape(((), n))?;
    let out = rows.apply_op3(&w.detach(), &known, KnownMatmul)?;
    dims.push(n);
    out.reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::check::max_diff;
    use candle_core::{DType, Device, Var};

    /// Same product and same input gradient as candle's matmul; no gradient for the weight.
    #[test]
    fn it_is_candles_matmul_without_the_weights_gradient() {
        let device = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (1, 5, 3), &device).unwrap()).unwrap();
        let w = Tensor::randn(0f64, 1.0, (4, 3), &device).unwrap();
        let w_var = Var::from_tensor(&w).unwrap();
        let weights = Tensor::randn(0f64, 1.0, (1, 5, 4), &device).unwrap();

        let ours = matmul_t(x.as_tensor(), w_var.as_tensor()).unwrap();
        let theirs = x.as_tensor().broadcast_matmul(&w_var.as_tensor().t().unwrap()).unwrap();
        assert_eq!(ours.dims(), &[1, 5, 4]);
        assert!(max_diff(&ours, &theirs) < 1e-12, "{}", max_diff(&ours, &theirs));

        let ours = (ours * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let theirs = (theirs * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (ours.get(x.as_tensor()).unwrap(), theirs.get(x.as_tensor()).unwrap());
        assert!(max_diff(a, b) < 1e-12, "{}", max_diff(a, b));
        assert!(
            theirs.get(w_var.as_tensor()).is_some(),
            "candle's matmul computes the weight's gradient"
        );
        assert!(ours.get(w_var.as_tensor()).is_none(), "the frozen product does not");
        assert_eq!(a.dtype(), DType::F64);
    }

    /// A known product is the product, with the same gradient; its value is what it was given.
    #[test]
    fn a_known_product_has_the_products_gradient() {
        let device = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (1, 5, 3), &device).unwrap()).unwrap();
        let w = Tensor::randn(0f64, 1.0, (4, 3), &device).unwrap();
        let weights = Tensor::randn(0f64, 1.0, (1, 5, 4), &device).unwrap();
        let y = matmul_t(&x.as_tensor().detach(), &w).unwrap();

        let computed = matmul_t(x.as_tensor(), &w).unwrap();
        let known = known_matmul_t(x.as_tensor(), &w, &y).unwrap();
        assert_eq!(known.dims(), &[1, 5, 4]);
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(values(&known), values(&computed));
        let grad = |t: Tensor| {
            let grads = (t * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            values(grads.get(x.as_tensor()).unwrap())
        };
        assert_eq!(grad(known), grad(computed));

        let other = (&y + 1.0).unwrap();
        let shifted = known_matmul_t(x.as_tensor(), &w, &other).unwrap();
        assert_eq!(values(&shifted), values(&other), "the value is the one given, not recomputed");
        assert!(known_matmul_t(x.as_tensor(), &w, &y.narrow(1, 0, 4).unwrap()).is_err());
    }
}
