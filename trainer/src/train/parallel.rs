//! Data-parallel workers: the group, the global batch, values shared from rank 0.

use super::*;
use crate::rundir::{RunDir, TrainerState};
use crate::{parse_device, TrainError};
use lkd_dist::{LaunchEnv, ProcessGroup, ReduceOp};
use tch::{Device, Tensor};

/// A data-parallel run joins its group before touching the run dir; a resumed run's device and
/// timeout are its stored config's, read (not locked) before rank 0 opens the run.
pub(super) fn join_group(
    start: &Start,
    launch: Option<&LaunchEnv>,
) -> Result<Option<ProcessGroup>, TrainError> {
    let Some(launch) = launch else {
        return Ok(None);
    };
    let stored;
    let setup = match start {
        Start::New(n) => &n.config,
        Start::Resume(dir) => {
            stored = RunDir::open(dir)?.config()?;
            &stored
        }
    };
    let device = worker_device(&setup.run.device, launch)?;
    let timeout = std::time::Duration::from_secs(setup.run.dist_timeout_s);
    Ok(Some(ProcessGroup::init(launch, device, timeout)?))
}

/// Rank 0 opens (or creates) the run; the other ranks then read what it holds.
pub(super) fn open_shared(
    group: Option<&ProcessGroup>,
    start: Start,
) -> Result<OpenedRun, TrainError> {
    match group {
        None => open_run(start),
        Some(g) if g.is_main() => {
            let opened = open_run(start);
            let code = opened.as_ref().map_or(0, |o| 1 + i64::from(o.resume));
            share_from_main(g, code)?;
            opened
        }
        Some(g) => match share_from_main(g, 0)? {
            0 => Err(TrainError::Other(format!(
                "rank {}: rank 0 could not open the run {} (its error says why)",
                g.rank(),
                start.run_dir().display()
            ))),
            code => open_run_follower(start.run_dir(), code == 2),
        },
    }
}

/// The device of a data-parallel worker: CPU, or `cuda:LOCAL_RANK` whatever CUDA index the
/// config names (one GPU per worker, as torchrun launches).
pub(super) fn worker_device(configured: &str, launch: &LaunchEnv) -> Result<Device, TrainError> {
    match parse_device(configured)? {
        Device::Cuda(_) => parse_device(&format!("cuda:{}", launch.local_rank)),
        other => Ok(other),
    }
}

/// Cores per worker when several workers share a node (torchrun's `LOCAL_WORLD_SIZE`).
pub(super) fn cores_per_worker(launch: &LaunchEnv) -> usize {
    let local_world = std::env::var("LOCAL_WORLD_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(launch.world_size);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / local_world).max(1)
}

/// Rank 0's small integer, given to every rank.
pub(super) fn share_from_main(group: &ProcessGroup, value: i64) -> Result<i64, TrainError> {
    let t = Tensor::f_from_slice(&[value])?.f_to_device(group.device())?;
    group.broadcast(&t, 0)?;
    Ok(t.f_to_device(Device::Cpu)?.f_int64_value(&[0])?)
}

/// Averages the loss sums waiting for the next metric line over the workers, so rank 0 logs
/// the global batch's mean loss (as one worker with the global batch would). Averaging is
/// linear, so doing it again later (another line, a checkpoint) stays correct.
pub(super) fn average_pending(
    group: Option<&ProcessGroup>,
    state: &mut TrainerState,
) -> Result<(), TrainError> {
    let Some(g) = group.filter(|g| g.world_size() > 1) else {
        return Ok(());
    };
    if state.pending_loss.is_empty() {
        return Ok(());
    }
    let values: Vec<f64> = state.pending_loss.values().copied().collect();
    let t = Tensor::f_from_slice(&values)?.f_to_device(g.device())?;
    g.allreduce(&t, ReduceOp::Average)?;
    let averaged = Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?)?;
    for (v, a) in state.pending_loss.values_mut().zip(averaged) {
        *v = a;
    }
    Ok(())
}

/// The run's global batch: a resumed run keeps its checkpoint's whatever the world size, and
/// the per-worker batch in `opened.config` becomes `global / world`.
pub(super) fn settle_global_batch(
    opened: &mut OpenedRun,
    world: usize,
    main: bool,
) -> Result<usize, TrainError> {
    let config = &mut opened.config;
    let global_batch = if opened.resume {
        match opened.run.load_trainer_state()?.global_batch {
            0 => config.optim.batch_size,
            g => g,
        }
    } else {
        config.optim.batch_size * world
    };
    if global_batch % world != 0 {
        return Err(TrainError::Config(format!(
            "run {} trains with a global batch of {global_batch}, which {world} workers cannot split evenly: \
             resume it with a world size that divides {global_batch}",
            opened.run.path.display()
        )));
    }
    if global_batch / world != config.optim.batch_size {
        if main {
            eprintln!(
                "resuming {} with {world} worker(s): batch {} per worker keeps the run's global batch of \
                 {global_batch} (the config's {} was per worker for another world size)",
                opened.run.path.display(),
                global_batch / world,
                config.optim.batch_size
            );
        }
        config.optim.batch_size = global_batch / world;
    }
    Ok(global_batch)
}
