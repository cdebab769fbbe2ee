//! Data-parallel collectives over real c10d Gloo on loopback, with real worker processes: this
//! test binary re-runs itself as `worker_entry` with a torchrun-style environment.

use anyhow::{bail, ensure, Context, Result};
use lkd_dist::equivalence::{sorted_params, Workload};
use lkd_dist::{LaunchEnv, ProcessGroup, ReduceOp};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

const ROLE_VAR: &str = "LKD_DIST_TEST_ROLE";
const OUT_VAR: &str = "LKD_DIST_TEST_OUT";
/// Short, so that a broken peer shows up quickly in tests.
const TIMEOUT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_worker(role: &str, rank: usize, world: usize, port: u16, out: &Path) -> Result<Child> {
    let launch = LaunchEnv {
        rank,
        world_size: world,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
    };
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--exact", "worker_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(OUT_VAR, out)
        // One intra-op thread per worker: the test machine has few cores.
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in launch.vars() {
        cmd.env(k, v);
    }
    Ok(cmd.spawn()?)
}

/// Waits for `child` until `deadline`; a worker still running then is killed and reported.
fn finish(name: &str, mut child: Child, deadline: Instant) -> Result<std::process::Output> {
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "{name} still running at the deadline (hung); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn expect_success(name: &str, out: &std::process::Output) -> Result<()> {
    ensure!(
        out.status.success(),
        "{name} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn run_workers(role: &str, world: usize, out: &Path) -> Result<()> {
    let port = free_port();
    let children: Vec<Child> = (0..world)
        .map(|r| spawn_worker(role, r, world, port, out))
        .collect::<Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for (r, child) in children.into_iter().enumerate() {
        let output = finish(&format!("{role} rank {r}"), child, deadline)?;
        expect_success(&format!("{role} rank {r}"), &output)?;
    }
    Ok(())
}

/// The worker side: does nothing unless started by one of the tests below.
#[test]
fn worker_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let out = PathBuf::from(std::env::var(OUT_VAR).expect("output folder"));
    let launch = LaunchEnv::from_env()
        .expect("launch env")
        .expect("WORLD_SIZE set");
    tch::set_num_threads(1);
    let result = match role.as_str() {
        "collectives" => collectives_worker(&launch),
        "train" => train_worker(&launch, &out),
        "kill" => kill_worker(&launch, &out),
        other => Err(anyhow::anyhow!("unknown role {other}")),
    };
    if let Err(e) = result {
        panic!("rank {}: {e:#}", launch.rank);
    }
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    let diff = (got - want).abs().max().double_value(&[]);
    ensure!(
        diff == 0.0,
        "{what}: got {got:?} want {want:?} (max diff {diff})"
    );
    Ok(())
}

fn collectives_worker(launch: &LaunchEnv) -> Result<()> {
    let pg = ProcessGroup::init(launch, Device::Cpu, TIMEOUT)?;
    let rank = pg.rank() as f64;
    let world = pg.world_size() as f64;

    let b = if pg.is_main() {
        Tensor::arange(6, (Kind::Float, Device::Cpu))
    } else {
        Tensor::zeros([6], (Kind::Float, Device::Cpu))
    };
    pg.broadcast(&b, 0)?;
    assert_close(
        "broadcast",
        &b,
        &Tensor::arange(6, (Kind::Float, Device::Cpu)),
    )?;

    let mine = || Tensor::full([4], rank + 1.0, (Kind::Float, Device::Cpu));
    let sum = world * (world + 1.0) / 2.0;
    for (op, want) in [
        (ReduceOp::Sum, sum),
        (ReduceOp::Average, sum / world),
        (ReduceOp::Max, world),
        (ReduceOp::Min, 1.0),
    ] {
        let t = mine();
        pg.allreduce(&t, op)?;
        assert_close(
            &format!("{op:?}"),
            &t,
            &Tensor::full([4], want, (Kind::Float, Device::Cpu)),
        )?;
    }

    // Gradients of several shapes and two dtypes, in buckets of 64 bytes (so several buckets
    // and one tensor larger than a bucket); `skip` gets no gradient on rank 1.
    let opts = (Kind::Float, Device::Cpu);
    let params = [
        Tensor::ones([3, 2], opts).set_requires_grad(true),
        Tensor::ones([40], opts).set_requires_grad(true),
        Tensor::ones([2, 2], (Kind::Double, Device::Cpu)).set_requires_grad(true),
        Tensor::ones([5], opts).set_requires_grad(true),
    ];
    let skip = Tensor::ones([7], opts).set_requires_grad(true);
    let mut loss = Tensor::zeros([], (Kind::Double, Device::Cpu));
    for (i, p) in params.iter().enumerate() {
        let w = (rank + 1.0) * (i as f64 + 1.0);
        loss += (p * w).sum(Kind::Double);
    }
    if !pg.is_main() {
        loss += skip.sum(Kind::Double);
    }
    loss.backward();
    let mut all = params.iter().map(Tensor::shallow_clone).collect::<Vec<_>>();
    all.push(skip.shallow_clone());
    pg.allreduce_gradients(&all, 64)?;
    // d loss / d p_i on rank r is (r + 1)(i + 1); the average over ranks is (i + 1)(W + 1)/2.
    for (i, p) in params.iter().enumerate() {
        let want = (i as f64 + 1.0) * (world + 1.0) / 2.0;
        assert_close(&format!("grad {i}"), &p.grad(), &p.grad().full_like(want))?;
    }
    // 1 on rank 1, zero elsewhere, averaged.
    assert_close(
        "grad of skipped",
        &skip.grad(),
        &skip.grad().full_like(1.0 / world),
    )?;

    // broadcast_tensors makes rank 0's values everyone's.
    let state = [
        Tensor::full([3], rank, opts),
        Tensor::full([2, 2], 10.0 + rank, (Kind::Double, Device::Cpu)),
    ];
    pg.broadcast_tensors(&state, 16)?;
    assert_close("broadcast_tensors 0", &state[0], &state[0].full_like(0.0))?;
    assert_close("broadcast_tensors 1", &state[1], &state[1].full_like(10.0))?;

    // Bad input is rejected before any collective (so the ranks stay in step).
    let err = pg
        .broadcast(&Tensor::zeros([2], opts), 5)
        .unwrap_err()
        .to_string();
    ensure!(
        err == "broadcast root 5 is not a rank of a group of 2",
        "{err}"
    );
    let err = pg
        .allreduce(&Tensor::zeros([2, 3], opts).transpose(0, 1), ReduceOp::Sum)
        .unwrap_err()
        .to_string();
    ensure!(err.contains("must be contiguous"), "{err}");
    pg.barrier()?;
    Ok(())
}

/// Two workers × 4 rows of 1×8×8 images, 3 classes, 3 SGD steps.
const WORKLOAD: Workload = Workload {
    in_chans: 1,
    side: 8,
    width: 4,
    classes: 3,
    batch: 4,
    steps: 3,
    lr: 0.1,
};

fn train_worker(launch: &LaunchEnv, out: &Path) -> Result<()> {
    let pg = ProcessGroup::init(launch, Device::Cpu, TIMEOUT)?;
    // Small buckets, so gradients span several of them.
    let named = WORKLOAD.train(Some(&pg), 2, Device::Cpu, 256)?;
    let path = out.join(format!("rank{}.ot", pg.rank()));
    Tensor::save_multi(
        &named
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .collect::<Vec<_>>(),
        &path,
    )?;
    Ok(())
}

#[test]
fn broadcast_allreduce_and_buckets_are_exact_over_two_processes() -> Result<()> {
    if std::env::var(ROLE_VAR).is_ok() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    run_workers("collectives", 2, dir.path())
}

#[test]
fn two_workers_batch_b_match_one_worker_batch_2b() -> Result<()> {
    if std::env::var(ROLE_VAR).is_ok() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    run_workers("train", 2, dir.path())?;

    // Reference: one process, the whole global batch, rank 0's initial weights.
    let named = WORKLOAD.train(None, 2, Device::Cpu, 0)?;
    let load = |r: usize| -> Result<Vec<(String, Tensor)>> {
        let mut v =
            Tensor::load_multi(dir.path().join(format!("rank{r}.ot"))).context("worker weights")?;
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    };
    let (w0, w1) = (load(0)?, load(1)?);
    ensure!(
        w0.len() == named.len() && w1.len() == named.len(),
        "parameter count"
    );
    for (((name, reference), (n0, t0)), (n1, t1)) in named.iter().zip(&w0).zip(&w1) {
        ensure!(name == n0 && name == n1, "names {name} {n0} {n1}");
        // Ranks apply the same averaged gradients to the same weights: bitwise equal.
        assert_close(&format!("{name}: rank 0 vs rank 1"), t0, t1)?;
        let diff = (t0 - reference).abs().max().double_value(&[]);
        ensure!(
            diff <= 1e-5,
            "{name}: 2 workers x {} vs 1 worker x {}: max diff {diff}",
            WORKLOAD.batch,
            2 * WORKLOAD.batch
        );
        // The weights moved: equality is not trivially true.
        let moved = (t0 - &small_model_initial(name))
            .abs()
            .max()
            .double_value(&[]);
        ensure!(moved > 1e-4, "{name} did not change ({moved})");
    }
    Ok(())
}

fn small_model_initial(name: &str) -> Tensor {
    let (vs, _) = WORKLOAD.model(10, Device::Cpu);
    sorted_params(&vs)
        .into_iter()
        .find(|(n, _)| n == name)
        .expect("parameter")
        .1
}

fn kill_worker(launch: &LaunchEnv, out: &Path) -> Result<()> {
    let pg = ProcessGroup::init(launch, Device::Cpu, TIMEOUT)?;
    let t = Tensor::ones([1000], (Kind::Float, Device::Cpu));
    pg.allreduce(&t, ReduceOp::Sum)?;
    if !pg.is_main() {
        std::fs::write(out.join("ready"), "")?;
        // Waits to be killed by the test.
        std::thread::sleep(Duration::from_secs(120));
        bail!("rank 1 was not killed");
    }
    loop {
        if let Err(e) = pg.allreduce(&t, ReduceOp::Sum) {
            std::fs::write(out.join("error"), e.to_string())?;
            drop(pg);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_worker_ends_the_other_with_an_error_not_a_hang() -> Result<()> {
    if std::env::var(ROLE_VAR).is_ok() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let rank0 = spawn_worker("kill", 0, 2, port, dir.path())?;
    let mut rank1 = spawn_worker("kill", 1, 2, port, dir.path())?;
    let ready_by = Instant::now() + Duration::from_secs(60);
    while !dir.path().join("ready").exists() {
        if Instant::now() > ready_by || rank1.try_wait()?.is_some() {
            let _ = rank1.kill();
            let out = finish("rank 0", rank0, Instant::now())?;
            bail!(
                "rank 1 never got ready; rank 0 stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    rank1.kill()?;
    let killed_at = Instant::now();
    rank1.wait()?;
    // The timeout bounds the wait; allow slack for a loaded machine.
    let out = finish(
        "rank 0",
        rank0,
        killed_at + TIMEOUT + Duration::from_secs(20),
    )?;
    expect_success("rank 0", &out)?;
    let message = std::fs::read_to_string(dir.path().join("error"))?;
    ensure!(
        message.starts_with("c10d allreduce failed on rank 0: "),
        "{message}"
    );
    eprintln!(
        "rank 0 stopped {:.1} s after the kill: {message}",
        killed_at.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn init_without_a_master_fails_within_the_timeout() -> Result<()> {
    if std::env::var(ROLE_VAR).is_ok() {
        return Ok(());
    }
    let launch = LaunchEnv {
        rank: 1,
        world_size: 2,
        local_rank: 1,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
    };
    let start = Instant::now();
    let err = ProcessGroup::init(&launch, Device::Cpu, Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    let took = start.elapsed();
    ensure!(err.starts_with("c10d init failed on rank 1: "), "{err}");
    ensure!(took < Duration::from_secs(30), "took {took:?}");
    Ok(())
}
