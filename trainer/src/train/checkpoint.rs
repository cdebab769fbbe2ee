//! What a checkpoint holds besides the config, and reading it back on resume.

use super::*;
use crate::config::TrainConfig;
use crate::executor::{host_to_tensor, Executor, Params};
use crate::optim::{AdamW, Ema};
use crate::precision::ScalerState;
use crate::rundir::{RunDir, TrainerState, LAST};
use crate::TrainError;
use lkd_models::checkpoint::StateDict;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, TchError, Tensor};

/// State-file entries of the fp16 loss scaler.
pub(super) const AMP_SCALE: &str = "amp.scale";

pub(super) const AMP_TRACKER: &str = "amp.growth_tracker";

/// Everything a checkpoint holds besides the config: student (+ projector), optimizer, EMA,
/// trainer state.
pub(super) struct Trainee {
    pub(super) student: Student,
    pub(super) opt: AdamW,
    pub(super) ema: Option<Ema>,
    pub(super) state: TrainerState,
    /// The fp16 loss scaler's state when the checkpoint holds one.
    pub(super) scaler_state: Option<ScalerState>,
}

impl Trainee {
    /// Fresh weights (seeded), or everything back from the run's state file. Only the run's
    /// `writer` (rank 0) drops metric lines past the checkpoint.
    pub(super) fn load_or_init(
        run: &RunDir,
        config: &TrainConfig,
        exec: Executor,
        projector_shape: Option<(usize, usize)>,
        resume: bool,
        device: Device,
        writer: bool,
    ) -> Result<Self, TrainError> {
        let mut opt = AdamW::new(config.optim.weight_decay);
        if !resume {
            let params = match &config.finetune.init {
                Some(source) => {
                    let (params, record) = crate::finetune::init_from(
                        &exec.graph,
                        source,
                        config.finetune.head_init_scale,
                        device,
                        config.run.seed,
                    )?;
                    if writer {
                        eprintln!("init: {} (sha256 {})", record.source, &record.sha256[..16]);
                        for a in &record.adaptations {
                            eprintln!("  {a}");
                        }
                        lkd_util::write_atomic(
                            &run.file(crate::finetune::INIT_RECORD),
                            serde_json::to_string_pretty(&record)
                                .expect("plain record")
                                .as_bytes(),
                        )?;
                    }
                    params
                }
                None => Params::init(&exec.graph, device, config.run.seed)?,
            };
            let projector = projector_shape.map(|(cs, ct)| -> Result<_, TchError> {
                // PyTorch's Conv2d default init, from our own seeded RNG.
                let bound = 1.0 / (cs as f32).sqrt();
                let mut rng = StdRng::seed_from_u64(config.run.seed ^ 0x70726f6a);
                let mut draw = |n: usize| {
                    (0..n)
                        .map(|_| rng.gen_range(-bound..bound))
                        .collect::<Vec<f32>>()
                };
                let w = Tensor::f_from_slice(&draw(ct * cs))?
                    .f_reshape([ct as i64, cs as i64, 1, 1])?
                    .f_to_device(device)?
                    .f_set_requires_grad(true)?;
                let b = Tensor::f_from_slice(&draw(ct))?
                    .f_to_device(device)?
                    .f_set_requires_grad(true)?;
                Ok((w, b))
            });
            let projector = projector.transpose()?;
            let ema = config
                .ema
                .as_ref()
                .map(|e| Ema::new(&params, e.decay))
                .transpose()?;
            return Ok(Self {
                student: Student::new(exec, params, projector, config)?,
                opt,
                ema,
                state: TrainerState::default(),
                scaler_state: None,
            });
        }
        let (sd, state) = run.load_state()?;
        if writer {
            run.truncate_metrics(state.metrics_len)?;
        }
        let params = Params::from_state_dict(&exec.graph, &take_prefixed(&sd, "model."), device)?;
        let tensor = |name: &str| -> Result<Tensor, TrainError> {
            let t = sd.get(name).ok_or_else(|| {
                TrainError::Other(format!(
                    "{}: state file has no `{name}`",
                    run.file(crate::rundir::STATE).display()
                ))
            })?;
            Ok(host_to_tensor(t, device)?.f_set_requires_grad(true)?)
        };
        let projector = match projector_shape {
            Some(_) => Some((tensor(PROJECTOR_WEIGHT)?, tensor(PROJECTOR_BIAS)?)),
            None => None,
        };
        for (k, v) in take_prefixed(&sd, "optim.m.") {
            opt.exp_avg.insert(k, host_to_tensor(&v, device)?);
        }
        for (k, v) in take_prefixed(&sd, "optim.v.") {
            opt.exp_avg_sq.insert(k, host_to_tensor(&v, device)?);
        }
        opt.step = state.adam_step;
        let ema = match &config.ema {
            Some(e) => Some(Ema {
                decay: e.decay,
                params: Params::from_state_dict(&exec.graph, &take_prefixed(&sd, "ema."), device)?,
            }),
            None => None,
        };
        let scaler_state = match (sd.get(AMP_SCALE), sd.get(AMP_TRACKER)) {
            (Some(scale), Some(tracker)) => match (&scale.data, &tracker.data) {
                (lkd_models::HostData::F32(s), lkd_models::HostData::I64(t))
                    if s.len() == 1 && t.len() == 1 =>
                {
                    Some(ScalerState {
                        scale: f64::from(s[0]),
                        growth_tracker: t[0],
                    })
                }
                _ => {
                    return Err(TrainError::Other(format!(
                        "{}: malformed loss-scaler state ({AMP_SCALE}, {AMP_TRACKER})",
                        run.file(crate::rundir::STATE).display()
                    )))
                }
            },
            _ => None,
        };
        Ok(Self {
            student: Student::new(exec, params, projector, config)?,
            opt,
            ema,
            state,
            scaler_state,
        })
    }
}

pub(super) fn state_tensors(
    student: &Student,
    opt: &AdamW,
    ema: Option<&Ema>,
) -> Result<StateDict, TrainError> {
    use crate::executor::tensor_to_host;
    let mut sd: StateDict = student
        .params
        .to_state_dict()?
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v))
        .collect();
    if let Some((w, b)) = &student.projector {
        sd.insert(PROJECTOR_WEIGHT.into(), tensor_to_host(w)?);
        sd.insert(PROJECTOR_BIAS.into(), tensor_to_host(b)?);
    }
    for (k, t) in &opt.exp_avg {
        sd.insert(format!("optim.m.{k}"), tensor_to_host(t)?);
    }
    for (k, t) in &opt.exp_avg_sq {
        sd.insert(format!("optim.v.{k}"), tensor_to_host(t)?);
    }
    if let Some(e) = ema {
        for (k, v) in e.params.to_state_dict()? {
            sd.insert(format!("ema.{k}"), v);
        }
    }
    Ok(sd)
}

pub(super) fn take_prefixed(sd: &StateDict, prefix: &str) -> StateDict {
    sd.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
        .collect()
}

impl Training {
    /// Writes `last` weights and the state file (rank 0; the others only average losses).
    pub(super) fn save_checkpoint(&mut self) -> Result<(), TrainError> {
        average_pending(self.group.as_ref(), &mut self.state)?;
        if !self.main {
            return Ok(());
        }
        let state = &mut self.state;
        state.metrics_len = self.run.metrics_len();
        state.adam_step = self.opt.step;
        self.run
            .save_weights(LAST, &self.student.params.to_state_dict()?)?;
        let mut tensors = state_tensors(&self.student, &self.opt, self.ema.as_ref())?;
        if self.scaler.is_enabled() {
            let s = self.scaler.state()?;
            tensors.insert(
                AMP_SCALE.into(),
                lkd_models::HostTensor::f32(vec![1], vec![s.scale as f32]),
            );
            tensors.insert(
                AMP_TRACKER.into(),
                lkd_models::HostTensor::i64(vec![1], vec![s.growth_tracker]),
            );
        }
        self.run.save_state(&tensors, state)
    }
}
