//! Evaluation and the end of an epoch.

use super::*;
use crate::data::Loader;
use crate::executor::{Executor, Params};
use crate::losses::{cross_entropy, Target};
use crate::optim::Ema;
use crate::rundir::{EpochEval, RunDir, TrainerState, BEST};
use crate::TrainError;
use tch::{Device, Kind};

/// Accuracy of one model on a split.
#[derive(Clone, Copy, Debug)]
pub struct EvalResult {
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    pub images: usize,
}

/// Evaluates `params` on `loader`'s split: top-1/top-5 and mean CE.
pub fn evaluate(
    exec: &Executor,
    params: &Params,
    loader: &Loader,
    device: Device,
) -> Result<EvalResult, TrainError> {
    let (mut correct1, mut correct5, mut loss_sum, mut n) = (0i64, 0i64, 0f64, 0usize);
    tch::no_grad(|| -> Result<(), TrainError> {
        for batch in loader.epoch(0, 0)? {
            let batch = batch?;
            let x = batch.images.f_to_device(device)?;
            let y = batch.labels.f_to_device(device)?;
            let logits = exec.forward(params, &x, false, &[])?.logits;
            let b = y.size()[0] as usize;
            loss_sum +=
                cross_entropy(&logits, &Target::Hard(&y), 0.0)?.f_double_value(&[])? * b as f64;
            let k = logits.size()[1].min(5);
            let (_, top) = logits.f_topk(k, 1, true, true)?;
            let hit = top.f_eq_tensor(&y.f_unsqueeze(1)?)?;
            correct1 += hit
                .f_narrow(1, 0, 1)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            correct5 += hit.f_sum(Kind::Int64)?.f_int64_value(&[])?;
            n += b;
        }
        Ok(())
    })?;
    let d = n.max(1) as f64;
    Ok(EvalResult {
        top1: 100.0 * correct1 as f64 / d,
        top5: 100.0 * correct5 as f64 / d,
        loss: loss_sum / d,
        images: n,
    })
}

/// Epoch end: evaluates the student and its EMA, logs, keeps the better as best weights, and
/// advances the state. Returns (student, EMA) top-1. Only the run's writer (rank 0) evaluates;
/// the other ranks only advance their state.
#[allow(clippy::too_many_arguments)]
pub(super) fn end_epoch(
    run: &RunDir,
    student: &Student,
    ema: Option<&Ema>,
    val_loader: &Loader,
    train_loader: &Loader,
    state: &mut TrainerState,
    device: Device,
    progress: bool,
    epochs: usize,
    keep_epoch_weights: bool,
    writer: bool,
) -> Result<(Option<f64>, Option<f64>), TrainError> {
    let epoch = state.epoch;
    if !writer {
        state.epoch += 1;
        state.next_batch = 0;
        state.finished = state.epoch >= epochs;
        return Ok((None, None));
    }
    let res = evaluate(&student.exec, &student.params, val_loader, device)?;
    run.record_skipped(&[
        ("train", train_loader.skipped()),
        ("val", val_loader.skipped()),
    ])?;
    let ema_res = ema
        .map(|e| evaluate(&student.exec, &e.params, val_loader, device))
        .transpose()?;
    run.log_eval(&EpochEval {
        epoch,
        step: state.step,
        top1: res.top1,
        top5: res.top5,
        val_loss: res.loss,
        skipped_files: train_loader.stats().skipped + val_loader.stats().skipped,
        ema_top1: ema_res.as_ref().map(|e| e.top1),
        ema_top5: ema_res.as_ref().map(|e| e.top5),
    })?;
    let (best_here, best_params) = match (&ema_res, ema) {
        (Some(e), Some(em)) if e.top1 > res.top1 => (e.top1, &em.params),
        _ => (res.top1, &student.params),
    };
    if keep_epoch_weights {
        run.save_weights(
            &crate::rundir::epoch_weights_file(epoch + 1),
            &best_params.to_state_dict()?,
        )?;
    }
    if state.best_epoch.is_none() || best_here > state.best_top1 {
        state.best_top1 = best_here;
        state.best_epoch = Some(epoch);
        run.save_weights(BEST, &best_params.to_state_dict()?)?;
    }
    if progress {
        eprintln!(
            "epoch {}/{}: top-1 {:.2}%{} (best {:.2}%)",
            epoch + 1,
            epochs,
            res.top1,
            ema_res
                .map(|e| format!(", EMA {:.2}%", e.top1))
                .unwrap_or_default(),
            state.best_top1
        );
    }
    state.epoch += 1;
    state.next_batch = 0;
    state.finished = state.epoch >= epochs;
    Ok((Some(res.top1), ema_res.map(|e| e.top1)))
}

impl Training {
    /// Evaluation and best weights (rank 0), the epoch's checkpoint, then every rank waits
    /// for rank 0.
    pub(super) fn finish_epoch(&mut self) -> Result<(), TrainError> {
        self.last_eval = end_epoch(
            &self.run,
            &self.student,
            self.ema.as_ref(),
            &self.val_loader,
            &self.train_loader,
            &mut self.state,
            self.device,
            self.progress,
            self.config.optim.epochs,
            self.config.run.keep_epoch_weights,
            self.main,
        )?;
        self.save_checkpoint()?;
        if let Some(g) = &self.group {
            g.barrier()?;
        }
        Ok(())
    }
}
