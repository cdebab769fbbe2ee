//! Metric lines, plain progress lines off a terminal, and bars on one.

use super::*;
use crate::TrainError;
use serde_json::json;
use std::time::Instant;

pub(super) fn progress_bar(
    enabled: bool,
    len: u64,
    epoch: usize,
    epochs: usize,
) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar
}

impl Training {
    /// A metric line with the losses averaged since the last one (over all workers); returns
    /// that average of the total loss.
    pub(super) fn log_step(
        &mut self,
        epoch: usize,
        lr: f64,
        grad_norm: Option<f64>,
        ips: f64,
    ) -> Result<f64, TrainError> {
        average_pending(self.group.as_ref(), &mut self.state)?;
        let state = &mut self.state;
        let loss = state.pending_loss.get("loss").copied().unwrap_or(f64::NAN)
            / state.pending_count.max(1) as f64;
        let mut line = json!({"step": state.step, "epoch": epoch, "lr": lr, "img_per_s": ips});
        for (n, v) in &state.pending_loss {
            line[n] = json!(v / state.pending_count as f64);
        }
        if let Some(g) = grad_norm {
            line["grad_norm"] = json!(g);
        }
        if self.scaler.is_enabled() {
            line["loss_scale"] = json!(self.scaler.scale_value()?);
            line["skipped_steps"] = json!(self.skipped_steps);
        }
        if self.world > 1 {
            line["world_size"] = json!(self.world);
        }
        if self.main {
            self.run.log(&line)?;
        }
        state.pending_loss.clear();
        state.pending_count = 0;
        Ok(loss)
    }

    /// The plain progress line: step, epoch progress, loss, lr, throughput since the last line
    /// and the time left at this invocation's pace, e.g.
    /// `step 40/936  epoch 1/2 40/468 (9%)  loss 1.8421  lr 3.99e-3  412 img/s  eta 0:02:11`.
    pub(super) fn print_line(&mut self, epoch: usize, in_epoch: usize, loss: f64, lr: f64) {
        let (since, steps_then) = self.last_line;
        let steps = self.steps_this_call - steps_then;
        let images =
            steps * self.config.optim.batch_size * self.config.optim.update_freq * self.world;
        let ips = images as f64 / since.elapsed().as_secs_f64().max(1e-9);
        let per_step = self.started.elapsed().as_secs_f64() / self.steps_this_call.max(1) as f64;
        let left = self.schedule.total_steps.saturating_sub(self.state.step);
        let eta = (per_step * left as f64).round() as u64;
        let per_epoch = self.schedule.steps_per_epoch;
        eprintln!(
            "step {}/{}  epoch {}/{} {in_epoch}/{per_epoch} ({:.0}%)  loss {loss:.4}  lr {lr:.2e}  {ips:.0} img/s  eta {}:{:02}:{:02}",
            self.state.step,
            self.schedule.total_steps,
            epoch + 1,
            self.config.optim.epochs,
            100.0 * in_epoch as f64 / per_epoch as f64,
            eta / 3600,
            eta / 60 % 60,
            eta % 60
        );
        self.last_line = (Instant::now(), self.steps_this_call);
    }
}
