//! One batcher thread per model owns its session. Handlers put preprocessed images on a bounded
//! queue; the batcher takes queued requests until it has `max_batch` images (or one larger
//! request), waiting at most `max_wait` after the first, and runs them as one batch. A full queue
//! answers 503 at once instead of letting latency grow without bound.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use lkd_models::preprocess::Preprocess;
use tokio::sync::{oneshot, Semaphore};

use super::api_error::ApiError;
use super::metrics::{DecodeStage, Metrics};
use crate::error::{error_chain, Result, RuntimeError};
use crate::predict::run_images;
use crate::preprocess::{
    decode, image_len, preprocess_into, resolve_preprocess, PreprocessOverrides,
};
use crate::session::{Engine, Model, ModelInfo, SessionConfig};

/// Most images one request may carry (a KServe tensor's first dimension).
pub const MAX_IMAGES_PER_REQUEST: usize = 256;

struct Job {
    input: Vec<f32>,
    images: usize,
    reply: oneshot::Sender<std::result::Result<Vec<f32>, String>>,
}

/// A loaded model as the handlers see it.
pub(super) struct ModelSlot {
    pub name: String,
    pub info: ModelInfo,
    pub preprocess: Preprocess,
    /// Logits per image, measured by a run at start-up.
    pub classes: usize,
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

pub(super) struct BatchSettings {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub queue: usize,
}

/// Loads `path`, measures its output width and starts its batcher thread.
pub(super) fn start(
    name: &str,
    path: &std::path::Path,
    session: &SessionConfig,
    engine: Engine,
    overrides: &PreprocessOverrides,
    settings: &BatchSettings,
    metrics: Arc<Metrics>,
) -> Result<(ModelSlot, JoinHandle<()>)> {
    let mut model = Model::load_with(path, session, engine)?;
    let preprocess = resolve_preprocess(model.info(), overrides)?;
    let probe = run_images(
        &mut model,
        &preprocess,
        &vec![0f32; image_len(&preprocess)],
        1,
    )?;
    let info = model.info().clone();
    // A label list that does not match the output is refused before serving, not per request.
    info.check_labels(probe.classes)?;
    let (tx, rx) = sync_channel(settings.queue);
    let (p, m, wait, max_batch) = (
        preprocess.clone(),
        metrics.clone(),
        settings.max_wait,
        settings.max_batch,
    );
    let handle = std::thread::Builder::new()
        .name(format!("lkd-batcher-{name}"))
        .spawn(move || batcher(model, p, rx, max_batch, wait, m))
        .map_err(|e| {
            RuntimeError::Server(format!("cannot start the batcher thread for `{name}`: {e}"))
        })?;
    let slot = ModelSlot {
        name: name.to_string(),
        info,
        preprocess,
        classes: probe.classes,
        tx,
        metrics,
    };
    Ok((slot, handle))
}

impl ModelSlot {
    /// Queues `images` preprocessed images (NCHW, concatenated) and waits for their logits,
    /// `images × classes` values.
    pub async fn infer(
        &self,
        input: Vec<f32>,
        images: usize,
    ) -> std::result::Result<Vec<f32>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(Job {
            input,
            images,
            reply,
        }) {
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(match e {
                TrySendError::Full(_) => "the request queue is full; retry shortly",
                TrySendError::Disconnected(_) => "the server is shutting down",
            }));
        }
        match rx.await {
            Ok(Ok(logits)) => {
                if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
                    return Err(ApiError::internal(format!(
                        "model `{}` produced a non-finite logit ({} at image {}, class {})",
                        self.name,
                        logits[i],
                        i / self.classes,
                        i % self.classes
                    )));
                }
                Ok(logits)
            }
            Ok(Err(e)) => Err(ApiError::internal(e)),
            Err(_) => Err(ApiError::unavailable("the batcher stopped")),
        }
    }

    /// Decodes and preprocesses encoded images on the blocking pool, at most `decodes`
    /// at a time across the server (decoding is the memory- and CPU-hungry step).
    pub async fn prepare(
        &self,
        images: Vec<Bytes>,
        name_images: bool,
        decodes: &Arc<Semaphore>,
    ) -> std::result::Result<Vec<f32>, ApiError> {
        // Beyond the cap a request waits here (its body is already bounded and buffered).
        let stage = DecodeStage::waiting(&self.metrics);
        let permit = decodes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
        let stage = stage.running();
        let p = self.preprocess.clone();
        let prepared = tokio::task::spawn_blocking(move || -> Result<Vec<f32>> {
            // Fields drop in order: the gauge falls before the slot is released.
            let _held = (stage, permit);
            let len = image_len(&p);
            let mut out = vec![0f32; len * images.len()];
            for (i, (bytes, dst)) in images.iter().zip(out.chunks_mut(len)).enumerate() {
                let name = name_images.then(|| format!("element {i}"));
                let img = decode(bytes, name.as_deref())?;
                preprocess_into(&img, &p, dst)?;
            }
            Ok(out)
        })
        .await;
        match prepared {
            Ok(Ok(x)) => Ok(x),
            // Too many pixels or too extreme an aspect ratio (refused from the header).
            Ok(Err(e)) if e.is_too_large() => Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                error_chain(&e),
            )),
            Ok(Err(e)) => Err(ApiError::bad_request(error_chain(&e))),
            Err(e) => Err(ApiError::internal(format!(
                "preprocessing task failed: {e}"
            ))),
        }
    }
}

fn batcher(
    mut model: Model,
    p: Preprocess,
    rx: Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
    metrics: Arc<Metrics>,
) {
    let len = image_len(&p);
    let mut data = Vec::with_capacity(max_batch * len);
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    // Ends when every sender is gone, i.e. after the HTTP server has stopped.
    while let Ok(first) = rx.recv() {
        let mut images = first.images;
        jobs.push(first);
        let deadline = Instant::now() + max_wait;
        while images < max_batch {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(j) => {
                    images += j.images;
                    jobs.push(j);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        metrics
            .queue_depth
            .fetch_sub(jobs.len() as i64, Ordering::Relaxed);
        // A request whose client is gone (or that shutdown cancelled) is not worth running.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let images: usize = jobs.iter().map(|j| j.images).sum();
        metrics.record_batch(images);
        data.clear();
        for j in &jobs {
            data.extend_from_slice(&j.input);
        }
        match run_images(&mut model, &p, &data, images) {
            Ok(logits) => {
                let mut row = 0;
                for j in jobs.drain(..) {
                    let slice = logits.data
                        [row * logits.classes..(row + j.images) * logits.classes]
                        .to_vec();
                    row += j.images;
                    let _ = j.reply.send(Ok(slice));
                }
            }
            Err(e) => {
                for j in jobs.drain(..) {
                    let _ = j.reply.send(Err(error_chain(&e)));
                }
            }
        }
    }
}
