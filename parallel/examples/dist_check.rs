//! Checks lkd-dist on a machine's real devices (scripts/gpu-check.sh runs it on a GPU host):
//! N local workers (one per GPU with NCCL, or Gloo on CPU) broadcast, all-reduce and average
//! bucketed gradients with exact expected results; with N ≥ 2, N workers × batch B train a small
//! conv net to the weights of 1 worker × batch N·B; and the CUDA autocast dtype switches from
//! fp16 to bf16. Prints one JSON object.
//!
//!     dist_check [--device cuda|cpu] [--nproc N] [--timeout-s S]

use anyhow::{bail, ensure, Context, Result};
use lkd_dist::equivalence::Workload;
use lkd_dist::{AutocastDtype, LaunchEnv, ProcessGroup, ReduceOp};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// N workers × 8 rows of 3×16×16 images, 5 classes, 3 SGD steps.
const WORKLOAD: Workload = Workload {
    in_chans: 3,
    side: 16,
    width: 8,
    classes: 5,
    batch: 8,
    steps: 3,
    lr: 0.1,
};

struct Args {
    cuda: bool,
    nproc: usize,
    timeout: Duration,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        cuda: tch::Cuda::is_available(),
        nproc: 0,
        timeout: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--device" => {
                args.cuda = match value()?.as_str() {
                    "cuda" => true,
                    "cpu" => false,
                    other => bail!("--device {other}: expected cuda or cpu"),
                }
            }
            "--nproc" => args.nproc = value()?.parse().context("--nproc")?,
            "--timeout-s" => {
                args.timeout = Duration::from_secs(value()?.parse().context("--timeout-s")?)
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if args.cuda && !tch::Cuda::is_available() {
        bail!("--device cuda but libtorch sees no CUDA device");
    }
    if args.nproc == 0 {
        args.nproc = if args.cuda {
            tch::Cuda::device_count() as usize
        } else {
            2
        };
    }
    Ok(args)
}

fn device(cuda: bool, local_rank: usize) -> Device {
    if cuda {
        Device::Cuda(local_rank)
    } else {
        Device::Cpu
    }
}

/// Trains the workload (this rank's rows with a group, all rows without); the flat weights.
fn train(pg: Option<&ProcessGroup>, world: usize, dev: Device) -> Result<Tensor> {
    let params = WORKLOAD.train(pg, world, dev, 1 << 12)?;
    Ok(Tensor::f_cat(
        &params
            .iter()
            .map(|(_, t)| t.f_detach()?.f_reshape(-1)?.f_to_device(Device::Cpu))
            .collect::<Result<Vec<_>, _>>()?,
        0,
    )?)
}

fn worker(launch: &LaunchEnv, cuda: bool, timeout: Duration) -> Result<Value> {
    let dev = device(cuda, launch.local_rank);
    let t0 = Instant::now();
    let pg = ProcessGroup::init(launch, dev, timeout)?;
    let init_s = t0.elapsed().as_secs_f64();
    let world = pg.world_size() as f64;
    let opts = (Kind::Float, dev);
    let b = if pg.is_main() {
        Tensor::arange(1000, opts)
    } else {
        Tensor::zeros([1000], opts)
    };
    pg.broadcast(&b, 0)?;
    ensure!(b.equal(&Tensor::arange(1000, opts)), "broadcast");
    let s = Tensor::full([1 << 20], pg.rank() as f64 + 1.0, opts);
    pg.allreduce(&s, ReduceOp::Sum)?;
    ensure!(
        s.equal(&s.full_like(world * (world + 1.0) / 2.0)),
        "allreduce sum"
    );
    let a = Tensor::full([4096], pg.rank() as f64 + 1.0, opts);
    pg.allreduce(&a, ReduceOp::Average)?;
    ensure!(
        a.equal(&a.full_like((world + 1.0) / 2.0)),
        "allreduce average"
    );
    pg.barrier()?;
    let weights = train(Some(&pg), pg.world_size(), dev)?;
    weights.save(weights_path(
        &std::env::var("LKD_DIST_CHECK_PARENT")?,
        pg.rank(),
    ))?;
    Ok(json!({"rank": pg.rank(), "init_s": init_s}))
}

fn weights_path(parent: &str, rank: usize) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lkd-dist-check-{parent}-rank{rank}.ot"))
}

fn autocast_check() -> Result<Value> {
    let dev = Device::Cuda(0);
    let default = lkd_dist::autocast_dtype(dev)?;
    let a = Tensor::ones([64, 64], (Kind::Float, dev));
    let before = tch::autocast(true, || a.matmul(&a)).kind();
    lkd_dist::set_autocast_dtype(dev, AutocastDtype::BFloat16)?;
    let after = tch::autocast(true, || a.matmul(&a)).kind();
    ensure!(
        after == Kind::BFloat16,
        "after set_autocast_dtype(bf16) a CUDA matmul under autocast is {after:?}"
    );
    Ok(
        json!({"default": format!("{default:?}"), "matmul_before": format!("{before:?}"), "matmul_after_bf16": format!("{after:?}")}),
    )
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(launch) = LaunchEnv::from_env()? {
        println!("{}", worker(&launch, args.cuda, args.timeout)?);
        return Ok(());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let me = std::process::id().to_string();
    let started = Instant::now();
    let mut children = Vec::new();
    for rank in 0..args.nproc {
        let launch = LaunchEnv {
            rank,
            world_size: args.nproc,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        };
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "--device",
            if args.cuda { "cuda" } else { "cpu" },
            "--timeout-s",
            &args.timeout.as_secs().to_string(),
        ])
        .env("LKD_DIST_CHECK_PARENT", &me)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in launch.vars() {
            cmd.env(k, v);
        }
        children.push(cmd.spawn()?);
    }
    let deadline = started + args.timeout + Duration::from_secs(60);
    let mut ranks = Vec::new();
    let mut failures = Vec::new();
    for (rank, mut child) in children.into_iter().enumerate() {
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait()?.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            ranks.push(serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null));
        } else {
            failures.push(format!(
                "rank {rank} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let collective_s = started.elapsed().as_secs_f64();
    let mut equivalence = Value::Null;
    if failures.is_empty() {
        let reference = train(None, args.nproc, device(args.cuda, 0))?;
        let mut max = 0f64;
        for rank in 0..args.nproc {
            let path = weights_path(&me, rank);
            let w = Tensor::load(&path)?;
            let _ = std::fs::remove_file(&path);
            max = max.max((w - &reference).abs().max().double_value(&[]));
        }
        equivalence = json!({"workers": args.nproc, "batch_per_worker": WORKLOAD.batch, "steps": WORKLOAD.steps,
            "max_abs_diff_vs_one_worker": max, "pass": max <= 1e-5});
        if max > 1e-5 {
            failures.push(format!(
                "{} workers vs 1 worker: max diff {max:e} > 1e-5",
                args.nproc
            ));
        }
    }
    let autocast = if args.cuda {
        autocast_check().unwrap_or_else(|e| {
            failures.push(format!("autocast: {e:#}"));
            Value::Null
        })
    } else {
        Value::Null
    };
    let pass = failures.is_empty();
    let report = json!({"backend": if args.cuda { "nccl" } else { "gloo" }, "nccl_compiled": lkd_dist::nccl_available(),
        "nproc": args.nproc, "ranks": ranks, "seconds": collective_s, "equivalence": equivalence,
        "autocast": autocast, "failures": failures, "pass": pass});
    println!("{report}");
    if !pass {
        std::process::exit(1);
    }
    Ok(())
}
