//! AdamW (decoupled weight decay, bias-corrected moments: PyTorch's and candle's formula) with
//! its state in the open, so a checkpoint can save it and a resumed run continue exactly where
//! the interrupted one stopped. candle-nn's `AdamW` keeps its moments private.

use candle_core::{Result, Tensor, Var};

/// The optimiser's settings.
#[derive(Debug, Clone, Copy)]
pub struct AdamSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamSettings {
    fn default() -> Self {
        AdamSettings {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over a fixed list of variables.
pub struct AdamW {
    vars: Vec<Var>,
    /// First and second moments, one per variable.
    pub first: Vec<Tensor>,
    pub second: Vec<Tensor>,
    /// Steps taken.
    pub t: usize,
    settings: AdamSettings,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, settings: AdamSettings) -> Result<AdamW> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            first: vars.iter().map(zeros).collect::<Result<_>>()?,
            second: vars.iter().map(zeros).collect::<Result<_>>()?,
            vars,
            t: 0,
            settings,
        })
    }

    /// Puts back a saved state (moments and step count); their shapes must be the variables'.
    pub fn restore(&mut self, first: Vec<Tensor>, second: Vec<Tensor>, t: usize) -> Result<()> {
        for (i, var) in self.vars.iter().enumerate() {
            let shape = var.as_tensor().shape();
            if first.get(i).map(Tensor::shape) != Some(shape) || second.get(i).map(Tensor::shape) != Some(shape) {
                candle_core::bail!("the saved optimiser state does not fit adapter weight {i} ({shape:?})");
            }
        }
        if first.len() != self.vars.len() || second.len() != self.vars.len() {
            candle_core::bail!(
                "the saved optimiser state has {} weights, the adapters {}",
                first.len(),
                self.vars.len()
            );
        }
        (self.first, self.second, self.t) = (first, second, t);
        Ok(())
    }

    /// One update with `grads` (one per variable, `None` to leave a variable be) at `lr`.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        let s = self.settings;
        self.t += 1;
        let correct1 = 1.0 - s.beta1.powi(self.t as i32);
        let correct2 = 1.0 - s.beta2.powi(self.t as i32);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(Some(g)) = grads.get(i) else {
                continue;
            };
            let m = ((&self.first[i] * s.beta1)? + (g * (1.0 - s.beta1))?)?;
            let v = ((&self.second[i] * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
            let update = ((&m / correct1)? / ((&v / correct2)?.sqrt()? + s.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * s.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            (self.first[i], self.second[i]) = (m, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The same updates as candle-nn's AdamW, which follows PyTorch's.
    #[test]
    fn it_takes_candle_nns_steps() {
        use candle_nn::Optimizer;
        let start = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.25]], &Device::Cpu).unwrap();
        let (ours, theirs) = (Var::from_tensor(&start).unwrap(), Var::from_tensor(&start).unwrap());
        let settings = AdamSettings {
            weight_decay: 0.1,
            ..AdamSettings::default()
        };
        let mut a = AdamW::new(vec![ours.clone()], settings).unwrap();
        let params = candle_nn::ParamsAdamW {
            lr: 0.01,
            weight_decay: 0.1,
            ..candle_nn::ParamsAdamW::default()
        };
        let mut b = candle_nn::AdamW::new(vec![theirs.clone()], params).unwrap();
        for step in 0..5 {
            let g = Tensor::new(&[[1.0f64, -2.0], [0.5, 3.0]], &Device::Cpu).unwrap();
            let g = (g * (1.0 + step as f64)).unwrap();
            a.step(&[Some(g.clone())], 0.01).unwrap();
            let loss = (theirs.as_tensor() * &g).unwrap().sum_all().unwrap();
            b.backward_step(&loss).unwrap();
        }
        let diff = (ours.as_tensor() - theirs.as_tensor()).unwrap().abs().unwrap();
        let diff = diff.max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-12, "{diff}");
        assert_ne!(ours.as_tensor().to_vec2::<f64>().unwrap(), start.to_vec2::<f64>().unwrap());
    }
}
