//! One optimizer step: the loss of each micro-batch (with the teacher's stream), then the update.

use super::*;
use crate::config::{DistillConfig, KdMethod, TrainConfig};
use crate::data::{self, Loader};
use crate::losses::{cross_entropy, feature_distance, kd_kl, nkd, Target};
use crate::optim::{clip_grad_norm, cosine_lr, zero_grad};
use crate::precision::{Precision, StepOutcome};
use crate::teacher::TeacherSpec;
use crate::teacher_cache::{StreamSpec, TeacherOutputs};
use crate::TrainError;
use lkd_dist::DEFAULT_BUCKET_BYTES;
use lkd_models::Graph;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Optimizer steps per epoch, in all, and in the learning-rate warm-up.
pub(super) struct Schedule {
    pub(super) steps_per_epoch: usize,
    pub(super) total_steps: usize,
    pub(super) warmup_steps: usize,
}

impl Schedule {
    pub(super) fn new(
        config: &TrainConfig,
        train_loader: &Loader,
        samples: usize,
        world: usize,
    ) -> Result<Self, TrainError> {
        let o = &config.optim;
        let steps_per_epoch = train_loader.batches_per_epoch() / o.update_freq;
        if steps_per_epoch == 0 {
            return Err(TrainError::Config(format!(
                "{} training samples give no full batch of {} x update_freq {}{}",
                samples,
                o.batch_size,
                o.update_freq,
                if world > 1 {
                    format!(" x {world} workers")
                } else {
                    String::new()
                }
            )));
        }
        let total_steps = steps_per_epoch.checked_mul(o.epochs).ok_or_else(|| {
            TrainError::Config(format!(
                "{} epochs of {steps_per_epoch} steps are too many to count",
                o.epochs
            ))
        })?;
        Ok(Self {
            steps_per_epoch,
            total_steps,
            warmup_steps: (o.warmup_epochs * steps_per_epoch as f64).round() as usize,
        })
    }
}

/// How a step's loss is formed: plain supervision, or distillation from a teacher's output
/// stream (live or replayed from the cache) with optional feature taps (student, teacher).
// One value per run, never moved in a loop: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Mode {
    Supervised,
    Distill {
        cfg: DistillConfig,
        teacher: Box<TeacherOutputs>,
        fd_taps: Option<(String, String)>,
    },
}

impl Mode {
    /// Supervised, or the teacher described (not loaded: the output cache may hold all it
    /// needs) and its output stream opened. Also returns the feature projector's (student,
    /// teacher) channels when features are distilled.
    pub(super) fn new(
        config: &TrainConfig,
        graph: &Graph,
        train_set: &data::Dataset,
        device: Device,
        precision: Precision,
        shard: data::Shard,
    ) -> Result<(Self, Option<(usize, usize)>), TrainError> {
        let Some(d) = config
            .distill
            .clone()
            .filter(|d| d.method != KdMethod::None)
        else {
            return Ok((Mode::Supervised, None));
        };
        let spec = TeacherSpec::resolve(&d)?;
        if d.method.uses_logits() && spec.graph.num_classes != graph.num_classes {
            return Err(TrainError::Config(format!(
                "teacher predicts {} classes, student {}",
                spec.graph.num_classes, graph.num_classes
            )));
        }
        let fd_taps = if d.method.uses_features() {
            Some((last_stage(graph)?, last_stage(&spec.graph)?))
        } else {
            None
        };
        let projector = match &fd_taps {
            Some((s, t)) => {
                let [h, w] = graph.input_size;
                let cs = graph.infer_shapes(1, h, w)?[graph.taps[s]][1];
                let [th, tw] = spec.graph.input_size;
                let ct = spec.graph.infer_shapes(1, th, tw)?[spec.graph.taps[t]][1];
                Some((cs, ct))
            }
            None => None,
        };
        let stream = StreamSpec {
            setting: &d.cache,
            topk: d.cache_topk,
            taps: fd_taps.iter().map(|(_, t)| t.clone()).collect(),
            dataset: train_set,
            augment: &config.data.augment,
            mixup: config.data.mixup.as_ref(),
            student_preprocess: &graph.preprocess,
            batch_size: config.optim.batch_size,
            seed: config.run.seed,
            precision,
            shard,
            balanced: config.data.balanced_sampling,
        };
        let teacher = Box::new(TeacherOutputs::open(spec, stream, device)?);
        Ok((
            Mode::Distill {
                cfg: d,
                teacher,
                fd_taps,
            },
            projector,
        ))
    }

    /// Writes a teacher-output shard being recorded (epoch end or a stop).
    pub(super) fn flush(&mut self) -> Result<(), TrainError> {
        match self {
            Mode::Distill { teacher, .. } => teacher.flush(),
            Mode::Supervised => Ok(()),
        }
    }
}

/// The named loss terms of one micro-batch: student forward, then the teacher's outputs from
/// its stream and the method's terms.
#[allow(clippy::too_many_arguments)]
pub(super) fn step_loss(
    mode: &mut Mode,
    student: &Student,
    batch: &data::Batch,
    epoch: usize,
    label_smoothing: f64,
    device: Device,
    precision: Precision,
    clock: &mut Clock,
) -> Result<Vec<(&'static str, Tensor)>, TrainError> {
    let x = batch.images.f_to_device(device)?;
    let labels = batch.labels.f_to_device(device)?;
    let soft = batch
        .targets
        .as_ref()
        .map(|t| t.f_to_device(device))
        .transpose()?;
    let target = match &soft {
        Some(s) => Target::Soft(s),
        None => Target::Hard(&labels),
    };
    // Soft (Mixup) targets already carry the smoothing.
    let smoothing = if soft.is_some() { 0.0 } else { label_smoothing };
    let (cfg, teacher, fd_taps) = match mode {
        Mode::Supervised => {
            let logits = autocast(device, precision, || {
                student.exec.forward(&student.params, &x, true, &[])
            })??
            .logits
            .f_to_kind(Kind::Float)?;
            return Ok(vec![("ce", cross_entropy(&logits, &target, smoothing)?)]);
        }
        Mode::Distill {
            cfg,
            teacher,
            fd_taps,
        } => (cfg, teacher, fd_taps),
    };
    let stage_tap: Vec<&str> = fd_taps.iter().map(|(s, _)| s.as_str()).collect();
    let out = autocast(device, precision, || {
        student.exec.forward(&student.params, &x, true, &stage_tap)
    })??;
    let logits = out.logits.f_to_kind(Kind::Float)?;
    let tt = Instant::now();
    let (t_logits, t_maps) = teacher.get(
        epoch,
        batch.index,
        &batch.samples,
        &x,
        &student.exec.graph.preprocess,
    )?;
    sync(device);
    clock.teacher += tt.elapsed().as_secs_f64();
    let alpha = cfg.alpha();
    let mut terms: Vec<(&'static str, Tensor)> = vec![];
    match cfg.method {
        KdMethod::Kd | KdMethod::KdFd => {
            terms.push((
                "kd",
                kd_kl(&logits, &t_logits, cfg.temperature)?.f_mul_scalar(alpha)?,
            ));
            // Upstream's KD uses plain CE next to the teacher term.
            terms.push((
                "ce",
                cross_entropy(&logits, &target, 0.0)?.f_mul_scalar(1.0 - alpha)?,
            ));
        }
        KdMethod::Nkd | KdMethod::NkdFd => terms.push((
            "nkd",
            nkd(
                &logits,
                &t_logits,
                &target.labels()?,
                cfg.temperature,
                alpha,
            )?,
        )),
        KdMethod::Fd => terms.push(("ce", cross_entropy(&logits, &target, smoothing)?)),
        KdMethod::None => {
            return Err(TrainError::Config(
                "distillation method none has no teacher terms".into(),
            ))
        }
    }
    if let (Some((s_tap, _)), Some((w, b)), Some(t_map)) =
        (fd_taps, &student.projector, t_maps.first())
    {
        let s_map = out.taps[s_tap.as_str()].f_to_kind(Kind::Float)?.f_conv2d(
            w,
            Some(b),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        )?;
        terms.push((
            "fd",
            feature_distance(&s_map, &t_map.f_to_kind(Kind::Float)?, cfg.fd_loss)?
                .f_mul_scalar(cfg.fd_weight)?,
        ));
    }
    Ok(terms)
}

/// Waits for queued CUDA kernels so wall-clock phases are attributed correctly.
pub(super) fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `f` under autocast in `precision`'s dtype on `device` (plain fp32: no autocast). The
/// dtype is set through lkd-dist on this thread each time: tch cannot set it, and CUDA's
/// default would be fp16 whatever was asked.
pub(crate) fn autocast<T>(
    device: Device,
    precision: Precision,
    f: impl FnOnce() -> T,
) -> Result<T, TrainError> {
    let dtype = match precision {
        Precision::Fp32 => return Ok(f()),
        Precision::Bf16 => lkd_dist::AutocastDtype::BFloat16,
        Precision::Fp16 => lkd_dist::AutocastDtype::Float16,
    };
    lkd_dist::set_autocast_dtype(device, dtype)?;
    Ok(lkd_dist::with_autocast(device, f)?)
}

impl Training {
    /// The step loop of the epoch in progress, from its next batch.
    pub(super) fn train_epoch(&mut self) -> Result<EpochEnd, TrainError> {
        let epoch = self.state.epoch;
        let (update_freq, epochs) = (self.config.optim.update_freq, self.config.optim.epochs);
        let steps_per_epoch = self.schedule.steps_per_epoch;
        let bar = progress_bar(
            self.progress && self.main && !self.plain_lines,
            steps_per_epoch as u64,
            epoch,
            epochs,
        );
        bar.set_position(self.state.next_batch as u64 / update_freq as u64);
        // Throughput since the last line counts training only, not the evaluation before.
        self.last_line = (Instant::now(), self.steps_this_call);
        let mut batches = self.train_loader.epoch(epoch, self.state.next_batch)?;
        let mut micro = 0usize;
        let mut step_start = Instant::now();
        loop {
            let wait_start = Instant::now();
            let Some(batch) = batches.next() else { break };
            self.clock.data_wait += wait_start.elapsed().as_secs_f64();
            let batch = batch?;
            if self.state.next_batch / update_freq >= steps_per_epoch {
                break;
            }
            if let Err(e) = self.accumulate(&batch, micro) {
                bar.abandon();
                return Err(e);
            }
            micro += 1;
            if micro < update_freq {
                continue;
            }
            micro = 0;
            let (lr, grad_norm) = self.optimizer_step()?;
            let dt = step_start.elapsed().as_secs_f64();
            self.clock.step += dt;
            let ips =
                (self.config.optim.batch_size * update_freq * self.world) as f64 / dt.max(1e-9);
            step_start = Instant::now();
            let mean_loss = self.state.pending_loss["loss"] / self.state.pending_count as f64;
            bar.set_message(format!("loss {mean_loss:.4} lr {lr:.2e} {ips:.0} img/s"));
            bar.inc(1);
            if self
                .state
                .step
                .is_multiple_of(self.config.run.log_every.max(1))
            {
                let loss = self.log_step(epoch, lr, grad_norm, ips)?;
                if self.plain_lines {
                    let in_epoch = self.state.next_batch / update_freq;
                    self.print_line(epoch, in_epoch, loss, lr);
                }
            }
            let at_limit = self
                .config
                .run
                .max_steps
                .is_some_and(|m| self.steps_this_call >= m);
            let every = self.config.run.checkpoint_every;
            if (every > 0 && self.state.step.is_multiple_of(every)) || at_limit {
                self.save_checkpoint()?;
            }
            if at_limit {
                self.mode.flush()?;
                bar.abandon();
                return Ok(EpochEnd::StepLimit);
            }
        }
        drop(batches);
        self.mode.flush()?;
        bar.finish_and_clear();
        Ok(EpochEnd::Completed)
    }

    /// Forward and backward of one micro-batch; its loss terms join the pending averages.
    pub(super) fn accumulate(
        &mut self,
        batch: &data::Batch,
        micro: usize,
    ) -> Result<(), TrainError> {
        let seed = self.config.run.seed;
        let update_freq = self.config.optim.update_freq;
        // Per-step seeding makes drop path reproducible across resume; each rank draws its
        // own masks.
        self.student.exec.set_step_seed(
            seed.wrapping_mul(1_000_003)
                .wrapping_add((self.state.step * update_freq + micro) as u64)
                ^ (self.rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        if let (Some(g), false) = (&self.group, self.buffers.is_empty()) {
            g.broadcast_tensors(&self.buffers, DEFAULT_BUCKET_BYTES)?;
        }
        let terms = step_loss(
            &mut self.mode,
            &self.student,
            batch,
            self.state.epoch,
            self.config.optim.label_smoothing,
            self.device,
            self.precision,
            &mut self.clock,
        )?;
        let mut loss: Option<Tensor> = None;
        for (_, t) in &terms {
            loss = Some(match loss {
                None => t.shallow_clone(),
                Some(sum) => sum.f_add(t)?,
            });
        }
        let loss = loss.ok_or_else(|| TrainError::Other("no loss terms".into()))?;
        let loss_value = loss.f_double_value(&[])?;
        let term_values: Vec<(&str, f64)> = terms
            .iter()
            .map(|(n, t)| Ok((*n, t.f_double_value(&[])?)))
            .collect::<Result<_, TrainError>>()?;
        if !loss_value.is_finite() {
            let detail = term_values
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(TrainError::NonFinite(format!(
                "loss is {loss_value} at epoch {}, step {}{} ({detail}); training stopped, the last good checkpoint in {} is kept",
                self.state.epoch,
                self.state.step,
                if self.world > 1 { format!(" on rank {}", self.rank) } else { String::new() },
                self.run.path.display()
            )));
        }
        self.scaler
            .scale(&loss.f_div_scalar(update_freq as f64)?)?
            .f_backward()?;
        self.clock.images += batch.len();
        let state = &mut self.state;
        *state.pending_loss.entry("loss".into()).or_default() += loss_value;
        for (n, v) in &term_values {
            *state.pending_loss.entry(format!("loss_{n}")).or_default() += v;
        }
        state.pending_count += 1;
        state.next_batch += 1;
        Ok(())
    }

    /// DDP's order: average gradients, then unscale, clip and step (skipped on inf/NaN under
    /// fp16 scaling), then the EMA. Returns the step's learning rate and gradient norm.
    pub(super) fn optimizer_step(&mut self) -> Result<(f64, Option<f64>), TrainError> {
        let slot_tensors: Vec<&Tensor> = self.slots.iter().map(|s| &s.tensor).collect();
        if let Some(g) = &self.group {
            g.allreduce_gradients(&slot_tensors, DEFAULT_BUCKET_BYTES)?;
        }
        let o = &self.config.optim;
        let s = &self.schedule;
        let lr = cosine_lr(
            self.state.step,
            s.total_steps,
            s.warmup_steps,
            o.lr,
            o.min_lr,
        );
        let slots = &self.slots;
        self.scaler.unscale(&slot_tensors)?;
        let grad_norm = o.clip_grad.map(|c| clip_grad_norm(slots, c)).transpose()?;
        let opt = &mut self.opt;
        let outcome = self
            .scaler
            .step(&slot_tensors, || Ok(opt.step(slots, lr)?))?;
        zero_grad(slots)?;
        if outcome == StepOutcome::Applied {
            if let Some(e) = self.ema.as_mut() {
                e.update(&self.student.exec.graph, &self.student.params)?;
            }
        } else {
            self.skipped_steps += 1;
        }
        self.state.step += 1;
        self.steps_this_call += 1;
        sync(self.device);
        Ok((lr, grad_norm))
    }
}
