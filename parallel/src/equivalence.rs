//! The data-parallel equivalence workload: N workers × batch B must train a small conv net to the
//! weights one worker reaches with batch N·B. The Gloo tests run it on loopback processes and
//! `dist_check` on a machine's real devices (NCCL on GPUs).

use crate::{ProcessGroup, Result};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The net (conv 3×3, ReLU, strided conv 3×3, ReLU, linear), its data and its SGD schedule.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub in_chans: i64,
    /// Input side (even: the strided conv halves it).
    pub side: i64,
    pub width: i64,
    pub classes: i64,
    /// Rows per worker and step.
    pub batch: i64,
    pub steps: usize,
    pub lr: f64,
}

impl Workload {
    /// The net with weights drawn from `seed` on `device`, and its parameters in name order.
    pub fn model(&self, seed: i64, device: Device) -> (nn::VarStore, impl Module) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let conv = |stride| nn::ConvConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let flat = self.width * (self.side / 2) * (self.side / 2);
        let net = nn::seq()
            .add(nn::conv2d(
                &root / "c1",
                self.in_chans,
                self.width,
                3,
                conv(1),
            ))
            .add_fn(|x| x.relu())
            .add(nn::conv2d(&root / "c2", self.width, self.width, 3, conv(2)))
            .add_fn(|x| x.relu())
            .add_fn(|x| x.flatten(1, -1))
            .add(nn::linear(
                &root / "fc",
                flat,
                self.classes,
                Default::default(),
            ));
        (vs, net)
    }

    /// Step `step`'s global batch (`world`·`batch` rows), identical in every process.
    pub fn global_batch(
        &self,
        step: usize,
        world: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        tch::manual_seed(1000 + step as i64);
        let n = self.batch * world as i64;
        let cpu = Device::Cpu;
        let x = Tensor::f_randn([n, self.in_chans, self.side, self.side], (Kind::Float, cpu))?;
        let y = Tensor::f_randint(self.classes, [n], (Kind::Int64, cpu))?;
        Ok((x.f_to_device(device)?, y.f_to_device(device)?))
    }

    /// Trains from rank 0's weights (seed 10; every rank starts elsewhere, so the broadcast must
    /// fix that). With `group`, each rank takes its rows of each global batch and averages
    /// gradients in buckets of `bucket_bytes`; without, one process takes all `world`·`batch`
    /// rows (the reference). Returns the parameters in name order.
    pub fn train(
        &self,
        group: Option<&ProcessGroup>,
        world: usize,
        device: Device,
        bucket_bytes: usize,
    ) -> Result<Vec<(String, Tensor)>> {
        let rank = group.map_or(0, |g| g.rank());
        let (vs, net) = self.model(10 + rank as i64, device);
        let params = sorted_params(&vs);
        let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        if let Some(g) = group {
            g.broadcast_tensors(&tensors, crate::DEFAULT_BUCKET_BYTES)?;
        }
        let rows = if group.is_some() {
            self.batch
        } else {
            self.batch * world as i64
        };
        for step in 0..self.steps {
            let (x, y) = self.global_batch(step, world, device)?;
            let lo = rank as i64 * rows;
            net.forward(&x.f_narrow(0, lo, rows)?)
                .f_log_softmax(-1, Kind::Float)?
                .f_nll_loss::<Tensor>(&y.f_narrow(0, lo, rows)?, None, tch::Reduction::Mean, -100)?
                .f_backward()?;
            if let Some(g) = group {
                g.allreduce_gradients(&tensors, bucket_bytes)?;
            }
            self.sgd_step(&params)?;
        }
        Ok(params)
    }

    fn sgd_step(&self, params: &[(String, Tensor)]) -> Result<()> {
        tch::no_grad(|| {
            for (_, p) in params {
                let mut w = p.shallow_clone();
                let mut g = p.f_grad()?;
                let _ = w.f_sub_(&g.f_mul_scalar(self.lr)?)?;
                let _ = g.f_zero_()?;
            }
            Ok(())
        })
    }
}

/// A var store's parameters in name order (the same on every rank).
pub fn sorted_params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}
