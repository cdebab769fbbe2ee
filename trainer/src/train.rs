//! Supervised training and distillation: one loop, with the teacher optional.

use crate::config::{KdMethod, TrainConfig};
use crate::data::{self, Loader, LoaderConfig, Split, Transform};
use crate::executor::{host_to_tensor, Executor, Params};
use crate::losses::{cross_entropy, feature_distance, kd_kl, nkd, Target};
use crate::optim::{clip_grad_norm, cosine_lr, zero_grad, AdamW, Ema, Slot};
use crate::rundir::{RunDir, TrainerState, BEST, LAST};
use crate::teacher::TeacherSpec;
use crate::teacher_cache::{CacheStats, StreamSpec, TeacherOutputs};
use crate::{parse_device, TrainError};
use lkd_models::checkpoint::StateDict;
use lkd_models::{Graph, ModelConfig};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// What a finished (or stopped) invocation reports.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: usize,
    pub epochs_done: usize,
    pub best_top1: f64,
    pub last_top1: Option<f64>,
    pub last_ema_top1: Option<f64>,
    pub images_per_s: f64,
    pub seconds: f64,
    pub skipped_files: usize,
    /// Share of step time spent waiting for data and in the teacher's forward pass.
    pub data_wait_share: f64,
    pub teacher_share: f64,
    pub finished: bool,
    /// Teacher-output cache use (distillation runs).
    pub teacher_cache: Option<CacheStats>,
}

/// Accuracy of one model on a split.
#[derive(Clone, Copy, Debug)]
pub struct EvalResult {
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    pub images: usize,
}

/// Fills `model.num_classes` / `in_chans` / `input_size` from the dataset where the config
/// leaves them open, so a preset trains on any dataset without hand-editing.
pub fn resolve_model(model: &ModelConfig, train: &data::Dataset) -> ModelConfig {
    let mut m = model.clone();
    let graph_default = ModelConfig::preset(&model.preset).build().ok();
    if m.num_classes.is_none() && graph_default.as_ref().is_some_and(|g| g.num_classes != train.num_classes()) {
        m.num_classes = Some(train.num_classes());
    }
    // Image folders decode to RGB; in-memory datasets state their shape.
    let (size, channels) = match train.image_shape() {
        Some((w, h, c)) => ((w == h).then_some(h), c),
        None => (None, 3),
    };
    if m.in_chans.is_none() && graph_default.as_ref().is_some_and(|g| g.in_chans != channels) {
        m.in_chans = Some(channels);
    }
    if let Some(h) = size {
        if m.input_size.is_none() && graph_default.as_ref().is_some_and(|g| g.input_size[0] != h) {
            m.input_size = Some(h);
        }
    }
    m
}

struct Student {
    exec: Executor,
    params: Params,
    /// 1×1 conv projector (student → teacher channels) for feature distillation.
    projector: Option<(Tensor, Tensor)>,
}

impl Student {
    fn slots(&self) -> Vec<Slot<'_>> {
        let mut s = crate::optim::slots(&self.exec.graph, &self.params, "");
        if let Some((w, b)) = &self.projector {
            s.push(Slot { name: "distill.projector.weight".into(), tensor: w, decay: true });
            s.push(Slot { name: "distill.projector.bias".into(), tensor: b, decay: false });
        }
        s
    }
}

fn last_stage(graph: &Graph) -> Result<String, TrainError> {
    graph.stage_taps().last().map(|(k, _)| k.clone()).ok_or_else(|| TrainError::Config(format!("{} has no stage taps for feature distillation", graph.preset)))
}

/// Evaluates `params` on `loader`'s split: top-1/top-5 and mean CE.
pub fn evaluate(exec: &Executor, params: &Params, loader: &Loader, device: Device) -> Result<EvalResult, TrainError> {
    let (mut correct1, mut correct5, mut loss_sum, mut n) = (0i64, 0i64, 0f64, 0usize);
    tch::no_grad(|| -> Result<(), TrainError> {
        for batch in loader.epoch(0, 0)? {
            let batch = batch?;
            let x = batch.images.to_device(device);
            let y = batch.labels.to_device(device);
            let logits = exec.forward(params, &x, false, &[])?.logits;
            let b = y.size()[0] as usize;
            loss_sum += cross_entropy(&logits, &Target::Hard(&y), 0.0).double_value(&[]) * b as f64;
            let k = logits.size()[1].min(5);
            let (_, top) = logits.topk(k, 1, true, true);
            let hit = top.eq_tensor(&y.unsqueeze(1));
            correct1 += hit.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]);
            correct5 += hit.sum(Kind::Int64).int64_value(&[]);
            n += b;
        }
        Ok(())
    })?;
    let d = n.max(1) as f64;
    Ok(EvalResult { top1: 100.0 * correct1 as f64 / d, top5: 100.0 * correct5 as f64 / d, loss: loss_sum / d, images: n })
}

fn state_tensors(student: &Student, opt: &AdamW, ema: Option<&Ema>) -> StateDict {
    let mut sd: StateDict = student.params.to_state_dict().into_iter().map(|(k, v)| (format!("model.{k}"), v)).collect();
    if let Some((w, b)) = &student.projector {
        sd.insert("distill.projector.weight".into(), crate::executor::tensor_to_host(w));
        sd.insert("distill.projector.bias".into(), crate::executor::tensor_to_host(b));
    }
    for (k, t) in &opt.exp_avg {
        sd.insert(format!("optim.m.{k}"), crate::executor::tensor_to_host(t));
    }
    for (k, t) in &opt.exp_avg_sq {
        sd.insert(format!("optim.v.{k}"), crate::executor::tensor_to_host(t));
    }
    if let Some(e) = ema {
        for (k, v) in e.params.to_state_dict() {
            sd.insert(format!("ema.{k}"), v);
        }
    }
    sd
}

fn take_prefixed(sd: &StateDict, prefix: &str) -> StateDict {
    sd.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone()))).collect()
}

/// Trains (or distils) according to `config` into `run_dir`, or resumes it when `resume`.
pub fn train(config: &TrainConfig, run_dir: &Path, resume: bool, progress: bool) -> Result<Summary, TrainError> {
    // The run dir stores the config resolved against the dataset (classes, channels, size).
    let file_config = if resume { RunDir::open(run_dir)?.config()? } else { config.clone() };
    let train_set = Arc::new(data::open(&file_config.data.dataset, Split::Train)?);
    let val_set = Arc::new(data::open(&file_config.data.dataset, Split::Val)?);
    let (run, config) = if resume {
        (RunDir::open(run_dir)?, file_config)
    } else {
        let mut cfg = file_config;
        cfg.model = resolve_model(&cfg.model, &train_set);
        (RunDir::create(run_dir, &cfg)?, cfg)
    };
    let device = parse_device(&config.run.device)?;
    if config.run.threads > 0 {
        tch::set_num_threads(config.run.threads as i32);
    }
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let o = &config.optim;
    if o.batch_size == 0 || o.update_freq == 0 || o.epochs == 0 {
        return Err(TrainError::Config("epochs, batch_size and update_freq must be positive".into()));
    }

    // Data and model.
    let graph = config.model.build()?;
    if graph.num_classes != train_set.num_classes() {
        return Err(TrainError::Config(format!("model has {} classes, dataset {} has {}", graph.num_classes, train_set.name(), train_set.num_classes())));
    }
    let pre = graph.preprocess.clone();
    let train_loader = training_loader(&config, &graph, train_set.clone())?;
    let val_loader = Loader::new(val_set.clone(), Transform::eval(&pre), None, loader_config(&config, o.batch_size.max(64), false, false))?;
    let steps_per_epoch = train_loader.batches_per_epoch() / o.update_freq;
    if steps_per_epoch == 0 {
        return Err(TrainError::Config(format!("{} training samples give no full batch of {} x update_freq {}", train_set.len(), o.batch_size, o.update_freq)));
    }
    let total_steps = steps_per_epoch * o.epochs;
    let warmup_steps = (o.warmup_epochs * steps_per_epoch as f64).round() as usize;

    // Teacher: described now, loaded only if the output cache misses.
    let distill = config.distill.clone().filter(|d| d.method != KdMethod::None);
    let teacher_spec = distill.as_ref().map(TeacherSpec::resolve).transpose()?;
    let fd_taps = match (&distill, &teacher_spec) {
        (Some(d), Some(t)) if d.method.uses_features() => Some((last_stage(&graph)?, last_stage(&t.graph)?)),
        _ => None,
    };
    if let (Some(t), true) = (&teacher_spec, distill.as_ref().is_some_and(|d| d.method.uses_logits())) {
        if t.graph.num_classes != graph.num_classes {
            return Err(TrainError::Config(format!("teacher predicts {} classes, student {}", t.graph.num_classes, graph.num_classes)));
        }
    }

    // Student, optimizer, EMA: fresh or from the state file.
    tch::manual_seed(config.run.seed as i64);
    let exec = Executor::new(graph);
    let projector_shape = match (&fd_taps, &teacher_spec) {
        (Some((s, t)), Some(teacher)) => {
            let [h, w] = exec.graph.input_size;
            let cs = exec.graph.infer_shapes(1, h, w)?[exec.graph.taps[s]][1];
            let [th, tw] = teacher.graph.input_size;
            let ct = teacher.graph.infer_shapes(1, th, tw)?[teacher.graph.taps[t]][1];
            Some((cs, ct))
        }
        _ => None,
    };
    let mut teacher = match (teacher_spec, &distill) {
        (Some(spec), Some(d)) => Some(TeacherOutputs::open(
            spec,
            StreamSpec {
                setting: &d.cache,
                topk: d.cache_topk,
                taps: fd_taps.iter().map(|(_, t)| t.clone()).collect(),
                dataset: &train_set,
                augment: &config.data.augment,
                mixup: config.data.mixup.as_ref(),
                student_preprocess: &pre,
                batch_size: o.batch_size,
                seed: config.run.seed,
            },
            device,
        )?),
        _ => None,
    };
    let mut state = TrainerState::default();
    let mut opt = AdamW::new(o.weight_decay);
    let (params, projector, ema) = if resume {
        let (sd, st) = run.load_state()?;
        run.truncate_metrics(st.metrics_len)?;
        let params = Params::from_state_dict(&exec.graph, &take_prefixed(&sd, "model."), device)?;
        let projector = projector_shape.map(|_| {
            let w = host_to_tensor(&sd["distill.projector.weight"], device).set_requires_grad(true);
            let b = host_to_tensor(&sd["distill.projector.bias"], device).set_requires_grad(true);
            (w, b)
        });
        for (k, v) in take_prefixed(&sd, "optim.m.") {
            opt.exp_avg.insert(k, host_to_tensor(&v, device));
        }
        for (k, v) in take_prefixed(&sd, "optim.v.") {
            opt.exp_avg_sq.insert(k, host_to_tensor(&v, device));
        }
        opt.step = st.adam_step;
        let ema = match &config.ema {
            Some(e) => Some(Ema { decay: e.decay, params: Params::from_state_dict(&exec.graph, &take_prefixed(&sd, "ema."), device)? }),
            None => None,
        };
        state = st;
        (params, projector, ema)
    } else {
        let params = Params::init(&exec.graph, device, config.run.seed);
        let projector = projector_shape.map(|(cs, ct)| {
            // PyTorch's Conv2d default init, from our own seeded RNG.
            let bound = 1.0 / (cs as f32).sqrt();
            let mut rng = StdRng::seed_from_u64(config.run.seed ^ 0x70726f6a);
            let mut draw = |n: usize| (0..n).map(|_| rng.gen_range(-bound..bound)).collect::<Vec<f32>>();
            let w = Tensor::from_slice(&draw(ct * cs)).reshape([ct as i64, cs as i64, 1, 1]).to_device(device).set_requires_grad(true);
            let b = Tensor::from_slice(&draw(ct)).to_device(device).set_requires_grad(true);
            (w, b)
        });
        let ema = config.ema.as_ref().map(|e| Ema::new(&params, e.decay));
        (params, projector, ema)
    };
    let mut ema = ema;
    let student = Student { exec, params, projector };
    let slots = student.slots();
    if state.finished {
        return Err(TrainError::Config(format!("run {} already finished all {} epochs", run.path.display(), o.epochs)));
    }

    let t0 = Instant::now();
    let (mut data_wait, mut teacher_time, mut step_time) = (0f64, 0f64, 0f64);
    let mut images = 0usize;
    let mut steps_this_call = 0usize;
    let mut last_eval: (Option<f64>, Option<f64>) = (None, None);
    let mut stopped = false;
    let save_checkpoint = |state: &mut TrainerState, opt: &AdamW, ema: Option<&Ema>| -> Result<(), TrainError> {
        state.metrics_len = run.metrics_len();
        state.adam_step = opt.step;
        run.save_weights(LAST, &student.params.to_state_dict())?;
        run.save_state(&state_tensors(&student, opt, ema), state)
    };

    'epochs: while state.epoch < o.epochs {
        let epoch = state.epoch;
        let bar = progress_bar(progress, steps_per_epoch as u64, epoch, o.epochs);
        bar.set_position(state.next_batch as u64 / o.update_freq as u64);
        let mut batches = train_loader.epoch(epoch, state.next_batch)?;
        let mut micro = 0usize;
        let mut step_start = Instant::now();
        loop {
            let wait_start = Instant::now();
            let Some(batch) = batches.next() else { break };
            data_wait += wait_start.elapsed().as_secs_f64();
            let batch = batch?;
            if state.next_batch / o.update_freq >= steps_per_epoch {
                break;
            }
            // Per-step seeding makes drop path reproducible across resume.
            student.exec.set_step_seed(config.run.seed.wrapping_mul(1_000_003).wrapping_add((state.step * o.update_freq + micro) as u64));
            let x = batch.images.to_device(device);
            let labels = batch.labels.to_device(device);
            let soft = batch.targets.as_ref().map(|t| t.to_device(device));
            let target = match &soft {
                Some(s) => Target::Soft(s),
                None => Target::Hard(&labels),
            };
            let stage_tap: Vec<&str> = fd_taps.iter().map(|(s, _)| s.as_str()).collect();
            let out = autocast(device, || student.exec.forward(&student.params, &x, true, &stage_tap))?;
            let logits = out.logits.to_kind(Kind::Float);
            let mut terms: Vec<(&'static str, Tensor)> = vec![];
            let label_smoothing = if soft.is_some() { 0.0 } else { o.label_smoothing };
            match (&distill, teacher.as_mut()) {
                (Some(d), Some(t)) => {
                    let tt = Instant::now();
                    let (t_logits, t_maps) = t.get(epoch, batch.index, &batch.samples, &x, &student.exec.graph.preprocess)?;
                    sync(device);
                    teacher_time += tt.elapsed().as_secs_f64();
                    let alpha = d.alpha();
                    match d.method {
                        KdMethod::Kd | KdMethod::KdFd => {
                            terms.push(("kd", kd_kl(&logits, &t_logits, d.temperature) * alpha));
                            // Upstream's KD uses plain CE next to the teacher term (soft
                            // targets already carry smoothing when Mixup is on).
                            terms.push(("ce", cross_entropy(&logits, &target, 0.0) * (1.0 - alpha)));
                        }
                        KdMethod::Nkd | KdMethod::NkdFd => {
                            terms.push(("nkd", nkd(&logits, &t_logits, &target.labels(), d.temperature, alpha)));
                        }
                        KdMethod::Fd => terms.push(("ce", cross_entropy(&logits, &target, label_smoothing))),
                        KdMethod::None => unreachable!("filtered above"),
                    }
                    if let (Some((s_tap, _)), Some((w, b))) = (&fd_taps, &student.projector) {
                        let s_map = out.taps[s_tap].to_kind(Kind::Float).conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1);
                        terms.push(("fd", feature_distance(&s_map, &t_maps[0].to_kind(Kind::Float), d.fd_loss) * d.fd_weight));
                    }
                }
                _ => terms.push(("ce", cross_entropy(&logits, &target, label_smoothing))),
            }
            let loss = terms.iter().map(|(_, t)| t.shallow_clone()).reduce(|a, b| a + b).unwrap();
            let loss_value = loss.double_value(&[]);
            let term_values: Vec<(&str, f64)> = terms.iter().map(|(n, t)| (*n, t.double_value(&[]))).collect();
            if !loss_value.is_finite() {
                bar.abandon();
                let detail = term_values.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(", ");
                return Err(TrainError::NonFinite(format!(
                    "loss is {loss_value} at epoch {epoch}, step {} ({detail}); training stopped, the last good checkpoint in {} is kept",
                    state.step,
                    run.path.display()
                )));
            }
            (loss / o.update_freq as f64).backward();
            micro += 1;
            images += x.size()[0] as usize;
            *state.pending_loss.entry("loss".into()).or_default() += loss_value;
            for (n, v) in &term_values {
                *state.pending_loss.entry(format!("loss_{n}")).or_default() += v;
            }
            state.pending_count += 1;
            state.next_batch += 1;
            if micro < o.update_freq {
                continue;
            }
            micro = 0;
            let lr = cosine_lr(state.step, total_steps, warmup_steps, o.lr, o.min_lr);
            let grad_norm = o.clip_grad.map(|c| clip_grad_norm(&slots, c));
            opt.step(&slots, lr);
            zero_grad(&slots);
            if let Some(e) = ema.as_mut() {
                e.update(&student.exec.graph, &student.params);
            }
            state.step += 1;
            steps_this_call += 1;
            sync(device);
            let dt = step_start.elapsed().as_secs_f64();
            step_time += dt;
            let ips = (o.batch_size * o.update_freq) as f64 / dt.max(1e-9);
            step_start = Instant::now();
            let mean_loss = state.pending_loss["loss"] / state.pending_count as f64;
            bar.set_message(format!("loss {mean_loss:.4} lr {lr:.2e} {ips:.0} img/s"));
            bar.inc(1);
            if state.step % config.run.log_every.max(1) == 0 {
                let mut line = json!({"step": state.step, "epoch": epoch, "lr": lr, "img_per_s": ips});
                for (n, v) in &state.pending_loss {
                    line[n] = json!(v / state.pending_count as f64);
                }
                if let Some(g) = grad_norm {
                    line["grad_norm"] = json!(g);
                }
                run.log(&line)?;
                state.pending_loss.clear();
                state.pending_count = 0;
            }
            let at_limit = config.run.max_steps.is_some_and(|m| steps_this_call >= m);
            if (config.run.checkpoint_every > 0 && state.step % config.run.checkpoint_every == 0) || at_limit {
                save_checkpoint(&mut state, &opt, ema.as_ref())?;
            }
            if at_limit {
                if let Some(t) = teacher.as_mut() {
                    t.flush()?;
                }
                bar.abandon();
                stopped = true;
                break 'epochs;
            }
        }
        drop(batches);
        if let Some(t) = teacher.as_mut() {
            t.flush()?;
        }
        bar.finish_and_clear();
        // Epoch end: evaluate student and EMA, keep the best, checkpoint.
        let res = evaluate(&student.exec, &student.params, &val_loader, device)?;
        let ema_res = ema.as_ref().map(|e| evaluate(&student.exec, &e.params, &val_loader, device)).transpose()?;
        let mut line = json!({"epoch": epoch, "step": state.step, "top1": res.top1, "top5": res.top5, "val_loss": res.loss,
            "skipped_files": train_loader.stats().skipped + val_loader.stats().skipped});
        if let Some(e) = &ema_res {
            line["ema_top1"] = json!(e.top1);
            line["ema_top5"] = json!(e.top5);
        }
        run.log(&line)?;
        last_eval = (Some(res.top1), ema_res.map(|e| e.top1));
        // The best of student and EMA becomes best.safetensors.
        let (best_here, best_params) = match (&ema_res, &ema) {
            (Some(e), Some(em)) if e.top1 > res.top1 => (e.top1, &em.params),
            _ => (res.top1, &student.params),
        };
        if state.best_epoch.is_none() || best_here > state.best_top1 {
            state.best_top1 = best_here;
            state.best_epoch = Some(epoch);
            run.save_weights(BEST, &best_params.to_state_dict())?;
        }
        if progress {
            eprintln!(
                "epoch {}/{}: top-1 {:.2}%{} (best {:.2}%)",
                epoch + 1,
                o.epochs,
                res.top1,
                ema_res.map(|e| format!(", EMA {:.2}%", e.top1)).unwrap_or_default(),
                state.best_top1
            );
        }
        state.epoch += 1;
        state.next_batch = 0;
        state.finished = state.epoch >= o.epochs;
        save_checkpoint(&mut state, &opt, ema.as_ref())?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let skipped = train_loader.stats().skipped + val_loader.stats().skipped;
    Ok(Summary {
        steps: state.step,
        epochs_done: state.epoch,
        best_top1: state.best_top1,
        last_top1: last_eval.0,
        last_ema_top1: last_eval.1,
        images_per_s: images as f64 / step_time.max(1e-9),
        seconds,
        skipped_files: skipped,
        data_wait_share: data_wait / step_time.max(1e-9),
        teacher_share: teacher_time / step_time.max(1e-9),
        finished: !stopped && state.finished,
        teacher_cache: teacher.map(|t| t.stats),
    })
}

fn loader_config(config: &TrainConfig, batch_size: usize, shuffle: bool, drop_last: bool) -> LoaderConfig {
    LoaderConfig { batch_size, workers: config.data.workers, prefetch: config.data.prefetch, seed: config.run.seed, shuffle, drop_last }
}

/// The training stream of `config` for a model `graph`: what a run trains on, batch for batch,
/// and what the teacher-output cache is keyed by.
pub fn training_loader(config: &TrainConfig, graph: &Graph, train_set: Arc<data::Dataset>) -> Result<Loader, TrainError> {
    Ok(Loader::new(
        train_set,
        Transform::train(&config.data.augment, &graph.preprocess),
        config.data.mixup.clone().map(|m| m.with_classes(graph.num_classes, config.optim.label_smoothing)),
        loader_config(config, config.optim.batch_size, true, true),
    )?)
}

/// Computes (or completes) the teacher-output cache of `config`'s distillation stream for its
/// first `epochs` epochs, batch for batch as `train` would consume them. Returns the cache
/// directory and what was done.
pub fn precompute_teacher_outputs(config: &TrainConfig, epochs: usize, progress: bool) -> Result<(std::path::PathBuf, CacheStats), TrainError> {
    let d = config.distill.clone().filter(|d| d.method != KdMethod::None).ok_or_else(|| TrainError::Config("teacher-cache build needs a distillation method other than none".into()))?;
    let device = parse_device(&config.run.device)?;
    let train_set = Arc::new(data::open(&config.data.dataset, Split::Train)?);
    let mut config = config.clone();
    config.model = resolve_model(&config.model, &train_set);
    let graph = config.model.build()?;
    let spec = TeacherSpec::resolve(&d)?;
    let taps = if d.method.uses_features() { vec![last_stage(&spec.graph)?] } else { vec![] };
    let pre = graph.preprocess.clone();
    let loader = training_loader(&config, &graph, train_set.clone())?;
    let o = &config.optim;
    let batches = (loader.batches_per_epoch() / o.update_freq.max(1)) * o.update_freq.max(1);
    let stream = StreamSpec {
        setting: &d.cache,
        topk: d.cache_topk,
        taps,
        dataset: &train_set,
        augment: &config.data.augment,
        mixup: config.data.mixup.as_ref(),
        student_preprocess: &pre,
        batch_size: o.batch_size,
        seed: config.run.seed,
    };
    let mut outputs = TeacherOutputs::open(spec, stream, device)?;
    let dir = outputs.dir().map(Path::to_path_buf).ok_or_else(|| TrainError::Config("the teacher cache is off: give --teacher-cache auto or a directory".into()))?;
    for epoch in 0..epochs {
        let bar = progress_bar(progress, batches as u64, epoch, epochs);
        for batch in loader.epoch(epoch, 0)?.take(batches) {
            let batch = batch?;
            let x = batch.images.to_device(device);
            let _ = outputs.get(epoch, batch.index, &batch.samples, &x, &pre)?;
            bar.inc(1);
        }
        outputs.flush()?;
        bar.finish_and_clear();
    }
    Ok((dir, outputs.stats))
}

/// What [`train_or_reuse`] found in the run directory.
pub enum RunOutcome {
    /// A finished run was there; nothing was trained.
    Reused,
    /// Trained to the end; `resumed` when an interrupted run was continued.
    Trained { resumed: bool, summary: Summary },
}

/// Trains `config` into `dir` unless a finished run is there. An interrupted run (one with a
/// state file) is resumed; a directory without a checkpoint is replaced.
pub fn train_or_reuse(config: &TrainConfig, dir: &Path, progress: bool) -> Result<RunOutcome, TrainError> {
    let state = RunDir::open(dir).ok().and_then(|r| r.load_state().ok()).map(|(_, s)| s);
    if state.as_ref().is_some_and(|s| s.finished) {
        return Ok(RunOutcome::Reused);
    }
    if state.is_none() && dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| TrainError::Io { path: dir.display().to_string(), source })?;
    }
    let resumed = state.is_some();
    let summary = train(config, dir, resumed, progress)?;
    Ok(RunOutcome::Trained { resumed, summary })
}

/// Trains `config` under `$LKD_CACHE/teachers/<result digest>` unless a finished run with the
/// same digest is there (then reused, untouched), so a teacher is trained once and every later
/// demo or study on the same recipe distils from it. `retrain` discards a kept one first.
pub fn train_or_reuse_shared(config: &TrainConfig, retrain: bool, progress: bool) -> Result<(std::path::PathBuf, RunOutcome), TrainError> {
    let dir = crate::teacher_cache::lkd_cache_dir().join("teachers").join(config.result_digest());
    if retrain && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| TrainError::Io { path: dir.display().to_string(), source })?;
    }
    let outcome = train_or_reuse(config, &dir, progress)?;
    Ok((dir, outcome))
}

/// Waits for queued CUDA kernels so wall-clock phases are attributed correctly.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// bf16 autocast on CUDA; plain fp32 on CPU.
pub(crate) fn autocast<T>(device: Device, f: impl FnOnce() -> T) -> T {
    if device.is_cuda() {
        tch::autocast(true, f)
    } else {
        f()
    }
}

fn progress_bar(enabled: bool, len: u64, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})").unwrap().progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar
}

/// Loads a model for evaluation from a run dir (best weights) or a checkpoint + model config.
pub fn load_model(source: &Path, model: Option<&ModelConfig>, device: Device) -> Result<(Executor, Params), TrainError> {
    let (cfg, weights) = if source.is_dir() {
        let run = RunDir::open(source)?;
        (run.config()?.model, run.best_or_last_weights()?)
    } else {
        let m = model.cloned().ok_or_else(|| TrainError::Config(format!("{} is a checkpoint file: give its --preset", source.display())))?;
        (m, source.to_path_buf())
    };
    let sd = lkd_models::checkpoint::read_checkpoint(&weights)?;
    let graph = cfg.build()?;
    let params = Params::from_state_dict(&graph, &sd, device)?;
    Ok((Executor::new(graph), params))
}
