//! lkd-dist: data-parallel collectives for LKD over PyTorch's own c10d library — a `TCPStore`
//! rendezvous (rank 0 serves it), `ProcessGroupGloo` for CPU tensors and `ProcessGroupNCCL` for
//! CUDA tensors — reached through a small C++ shim compiled against the torch wheel's headers.
//! It also sets the autocast dtype, which tch cannot.
//!
//! It owns process groups, collectives on tch tensors (broadcast, all-reduce, bucketed gradient
//! averaging, barrier) and the torchrun launch environment. It knows nothing about models,
//! data or the training loop; no collective or rendezvous protocol is implemented here.

pub mod equivalence;
mod ffi;

use std::ffi::{CStr, CString};
use std::fmt;
use std::ptr::NonNull;
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// PyTorch DDP's default gradient bucket size (`bucket_cap_mb=25`).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// torch.distributed's default collective timeout for Gloo (30 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The launch environment (`RANK`, `WORLD_SIZE`, ...) is missing or inconsistent.
    #[error("distributed launch environment: {0}")]
    Env(String),
    /// c10d reported an error (its own message, without the C++ backtrace).
    #[error("c10d {op} failed on rank {rank}: {message}")]
    C10d {
        op: &'static str,
        rank: usize,
        message: String,
    },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = DistError> = std::result::Result<T, E>;

/// A torchrun-style launch: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world_size: usize,
    /// Index of this worker on its node; picks the CUDA device (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

/// More workers than this is almost certainly a typo (a node count times GPUs rarely exceeds it).
const MAX_WORLD_SIZE: usize = 65_536;

impl LaunchEnv {
    /// Reads the process environment. `Ok(None)` when `WORLD_SIZE` is unset (a plain
    /// single-process run); every other variable is then required and checked.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`LaunchEnv::from_env`] over any variable lookup (tests, launchers).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let number = |name: &str, text: &str| -> Result<usize> {
            text.trim().parse::<usize>().map_err(|_| {
                DistError::Env(format!("{name}={text:?} is not a non-negative integer"))
            })
        };
        let required = |name: &str| -> Result<String> {
            var(name).ok_or_else(|| {
                DistError::Env(format!(
                    "WORLD_SIZE is set but {name} is not; a torchrun-style launch sets RANK, WORLD_SIZE, LOCAL_RANK, \
                     MASTER_ADDR and MASTER_PORT"
                ))
            })
        };
        let world_size = number("WORLD_SIZE", &world)?;
        if world_size == 0 || world_size > MAX_WORLD_SIZE {
            return Err(DistError::Env(format!(
                "WORLD_SIZE={world_size} must be in 1..={MAX_WORLD_SIZE}"
            )));
        }
        let rank = number("RANK", &required("RANK")?)?;
        if rank >= world_size {
            return Err(DistError::Env(format!(
                "RANK={rank} must be below WORLD_SIZE={world_size}"
            )));
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(t) => number("LOCAL_RANK", &t)?,
            None if world_size == 1 => 0,
            None => {
                return Err(DistError::Env(
                    "WORLD_SIZE > 1 but LOCAL_RANK is not set".into(),
                ))
            }
        };
        if local_rank > rank {
            return Err(DistError::Env(format!(
                "LOCAL_RANK={local_rank} cannot exceed RANK={rank}"
            )));
        }
        let master_addr = required("MASTER_ADDR")?.trim().to_string();
        if master_addr.is_empty()
            || master_addr.len() > 253
            || master_addr.contains(char::is_whitespace)
        {
            return Err(DistError::Env(format!(
                "MASTER_ADDR={master_addr:?} is not a host name or address"
            )));
        }
        let port_text = required("MASTER_PORT")?;
        let master_port = number("MASTER_PORT", &port_text)?;
        if master_port == 0 || master_port > u16::MAX as usize {
            return Err(DistError::Env(format!(
                "MASTER_PORT={master_port} must be in 1..=65535"
            )));
        }
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port: master_port as u16,
        }))
    }

    /// The environment variables that describe this launch (for spawning a worker).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RANK", self.rank.to_string()),
            ("WORLD_SIZE", self.world_size.to_string()),
            ("LOCAL_RANK", self.local_rank.to_string()),
            ("LOCAL_WORLD_SIZE", self.world_size.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }
}

/// The c10d backend a group runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors, TCP between processes.
    Gloo,
    /// CUDA tensors, one GPU per process.
    Nccl,
}

impl Backend {
    /// NCCL for CUDA, Gloo for CPU (what torch.distributed picks).
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cuda(_) => Backend::Nccl,
            _ => Backend::Gloo,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// Whether this build of lkd-dist has ProcessGroupNCCL compiled in.
pub fn nccl_available() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { ffi::lkd_has_nccl() != 0 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// Sum then divide by the world size (Gloo has no native average).
    Average,
    Max,
    Min,
}

/// One process's membership in a c10d process group. Collectives must be called in the same
/// order on every rank; a rank that dies or stops calling makes the others fail with
/// [`DistError::C10d`] within the group's timeout instead of hanging.
pub struct ProcessGroup {
    raw: NonNull<ffi::LkdPg>,
    launch: LaunchEnv,
    backend: Backend,
    device: Device,
    timeout: Duration,
}

// SAFETY: the c10d backend may be used from any thread; `&mut`-free use from one thread at a
// time is all this type allows (it is not Sync).
unsafe impl Send for ProcessGroup {}

/// Turns a shim result (null = success) into a `Result`, freeing the message.
fn check(message: *mut std::os::raw::c_char, op: &'static str, rank: usize) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: the shim returns a NUL-terminated malloc'ed string or null.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .trim()
        .to_string();
    // SAFETY: the string came from the shim's malloc and is freed once.
    unsafe { ffi::lkd_free_message(message) };
    Err(DistError::C10d {
        op,
        rank,
        message: text,
    })
}

impl ProcessGroup {
    /// Joins the group described by `launch` on `device`'s backend: rank 0 serves the
    /// `TCPStore` at `MASTER_ADDR:MASTER_PORT`, the others connect to it. Every rendezvous and
    /// collective fails after `timeout` rather than waiting forever.
    pub fn init(launch: &LaunchEnv, device: Device, timeout: Duration) -> Result<Self> {
        let backend = Backend::for_device(device);
        let cuda_device = match device {
            Device::Cpu => -1,
            Device::Cuda(i) => {
                if !nccl_available() {
                    return Err(DistError::Input(format!(
                        "device {device:?} needs the NCCL backend, but this build has none (lkd-dist was built without \
                         libtorch_cuda.so or the CUDA headers; see scripts/bootstrap.sh)"
                    )));
                }
                i as i32
            }
            other => {
                return Err(DistError::Input(format!(
                    "data-parallel training supports cpu and cuda, not {other:?}"
                )))
            }
        };
        if timeout.is_zero() || timeout > Duration::from_secs(24 * 3600) {
            return Err(DistError::Input(format!(
                "timeout {timeout:?} must be between 1 ms and 24 h"
            )));
        }
        let addr = CString::new(launch.master_addr.as_str())
            .map_err(|_| DistError::Env("MASTER_ADDR contains a NUL byte".into()))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; `raw` is written only on success.
        let message = unsafe {
            ffi::lkd_pg_new(
                match backend {
                    Backend::Gloo => 0,
                    Backend::Nccl => 1,
                },
                addr.as_ptr(),
                i32::from(launch.master_port),
                launch.rank as i32,
                launch.world_size as i32,
                cuda_device,
                timeout.as_millis().max(1) as i64,
                &mut raw,
            )
        };
        check(message, "init", launch.rank)?;
        let raw = NonNull::new(raw).ok_or_else(|| DistError::C10d {
            op: "init",
            rank: launch.rank,
            message: "the shim returned no process group".into(),
        })?;
        Ok(Self {
            raw,
            launch: launch.clone(),
            backend,
            device,
            timeout,
        })
    }

    pub fn rank(&self) -> usize {
        self.launch.rank
    }

    pub fn world_size(&self) -> usize {
        self.launch.world_size
    }

    pub fn local_rank(&self) -> usize {
        self.launch.local_rank
    }

    /// Rank 0: the only rank that writes run dirs, logs and checkpoints.
    pub fn is_main(&self) -> bool {
        self.launch.rank == 0
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn check_tensor(&self, what: &str, t: &Tensor) -> Result<()> {
        if !t.defined() {
            return Err(DistError::Input(format!("{what}: undefined tensor")));
        }
        if t.device() != self.device {
            return Err(DistError::Input(format!(
                "{what}: tensor on {:?} but the {} group runs on {:?}",
                t.device(),
                self.backend,
                self.device
            )));
        }
        if !t.is_contiguous() {
            return Err(DistError::Input(format!(
                "{what}: tensor must be contiguous (c10d works in place on its storage)"
            )));
        }
        Ok(())
    }

    /// Overwrites `tensor` on every rank with rank `root`'s values (in place).
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        self.check_tensor("broadcast", tensor)?;
        if root >= self.world_size() {
            return Err(DistError::Input(format!(
                "broadcast root {root} is not a rank of a group of {}",
                self.world_size()
            )));
        }
        // SAFETY: `raw` is live; `tensor.as_ptr()` is the `at::Tensor*` tch owns, read for the call.
        let message = unsafe {
            ffi::lkd_pg_broadcast(self.raw.as_ptr(), tensor.as_ptr().cast(), root as i32)
        };
        check(message, "broadcast", self.rank())
    }

    /// Reduces `tensor` over all ranks, in place; every rank ends with the result.
    pub fn allreduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<()> {
        self.check_tensor("allreduce", tensor)?;
        let code = match op {
            ReduceOp::Sum | ReduceOp::Average => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        };
        // SAFETY: as in `broadcast`.
        let message =
            unsafe { ffi::lkd_pg_allreduce(self.raw.as_ptr(), tensor.as_ptr().cast(), code) };
        check(message, "allreduce", self.rank())?;
        if op == ReduceOp::Average {
            let mut t = tensor.shallow_clone();
            let _ = tch::no_grad(|| t.f_div_scalar_(self.world_size() as f64))?;
        }
        Ok(())
    }

    /// Waits until every rank reaches this call.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: `raw` is live.
        let message = unsafe { ffi::lkd_pg_barrier(self.raw.as_ptr()) };
        check(message, "barrier", self.rank())
    }

    /// Makes every rank's `tensors` equal to rank 0's (parameters after init, buffers), in flat
    /// buckets of at most `bucket_bytes`.
    pub fn broadcast_tensors(&self, tensors: &[Tensor], bucket_bytes: usize) -> Result<()> {
        let views: Vec<Tensor> = tensors.iter().map(Tensor::shallow_clone).collect();
        self.bucketed("broadcast_tensors", &views, bucket_bytes, |flat| {
            self.broadcast(flat, 0)
        })
    }

    /// Averages the gradients of `params` over all ranks, as DDP does after backward: the
    /// gradients are packed into flat buckets of at most `bucket_bytes` (grouped by dtype),
    /// each bucket all-reduced once, and the averages copied back. A parameter with no gradient
    /// on this rank gets a zero one, so every rank sends the same bucket layout.
    pub fn allreduce_gradients<T: std::borrow::Borrow<Tensor>>(
        &self,
        params: &[T],
        bucket_bytes: usize,
    ) -> Result<()> {
        let mut grads = Vec::with_capacity(params.len());
        for (i, p) in params.iter().map(std::borrow::Borrow::borrow).enumerate() {
            if !p.requires_grad() {
                return Err(DistError::Input(format!(
                    "allreduce_gradients: parameter {i} does not require grad"
                )));
            }
            let mut g = p.f_grad()?;
            if !g.defined() {
                let zero = tch::no_grad(|| p.f_zeros_like())?;
                // SAFETY: both handles are live tch tensors for the call.
                let message = unsafe { ffi::lkd_set_grad(p.as_ptr().cast(), zero.as_ptr().cast()) };
                check(message, "set_grad", self.rank())?;
                g = p.f_grad()?;
            }
            grads.push(g);
        }
        self.bucketed("allreduce_gradients", &grads, bucket_bytes, |flat| {
            self.allreduce(flat, ReduceOp::Average)
        })
    }

    /// Packs `tensors` into contiguous buckets (same dtype, at most `bucket_bytes` unless one
    /// tensor alone is larger), runs `collective` on each and copies the results back.
    fn bucketed(
        &self,
        what: &str,
        tensors: &[Tensor],
        bucket_bytes: usize,
        collective: impl Fn(&Tensor) -> Result<()>,
    ) -> Result<()> {
        if bucket_bytes == 0 {
            return Err(DistError::Input(format!(
                "{what}: bucket size must be positive"
            )));
        }
        for (i, t) in tensors.iter().enumerate() {
            if !t.defined() || t.device() != self.device {
                return Err(DistError::Input(format!(
                    "{what}: tensor {i} is {} but the {} group runs on {:?}",
                    if t.defined() {
                        format!("on {:?}", t.device())
                    } else {
                        "undefined".into()
                    },
                    self.backend,
                    self.device
                )));
            }
        }
        tch::no_grad(|| -> Result<()> {
            for bucket in plan_buckets(tensors, bucket_bytes)? {
                let members: Vec<&Tensor> = bucket.iter().map(|&i| &tensors[i]).collect();
                let flat = Tensor::f_cat(
                    &members
                        .iter()
                        .map(|t| t.f_reshape(-1))
                        .collect::<Result<Vec<_>, _>>()?,
                    0,
                )?;
                collective(&flat)?;
                let mut offset = 0i64;
                for t in members {
                    let n = t.numel() as i64;
                    let mut dst = t.shallow_clone();
                    dst.f_copy_(&flat.f_narrow(0, offset, n)?.f_view_as(t)?)?;
                    offset += n;
                }
            }
            Ok(())
        })
    }
}

/// Groups tensor indices into buckets: consecutive tensors of one dtype, each bucket at most
/// `bucket_bytes` (a larger tensor gets a bucket of its own). Order is kept within a dtype, so
/// every rank builds the same plan from the same parameter list.
pub fn plan_buckets(tensors: &[Tensor], bucket_bytes: usize) -> Result<Vec<Vec<usize>>> {
    let mut kinds: Vec<Kind> = Vec::new();
    let mut open: Vec<(Vec<usize>, usize)> = Vec::new();
    let mut done = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let kind = t.f_kind()?;
        let bytes = t.numel() * kind.elt_size_in_bytes();
        let slot = match kinds.iter().position(|&k| k == kind) {
            Some(s) => s,
            None => {
                kinds.push(kind);
                open.push((Vec::new(), 0));
                kinds.len() - 1
            }
        };
        let (members, size) = &mut open[slot];
        if !members.is_empty() && *size + bytes > bucket_bytes {
            done.push(std::mem::take(members));
            *size = 0;
        }
        members.push(i);
        *size += bytes;
    }
    done.extend(open.into_iter().map(|(m, _)| m).filter(|m| !m.is_empty()));
    Ok(done)
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `lkd_pg_new` and is freed exactly once.
        unsafe { ffi::lkd_pg_free(self.raw.as_ptr()) }
    }
}

impl fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank())
            .field("world_size", &self.world_size())
            .field("backend", &self.backend)
            .field("device", &self.device)
            .finish()
    }
}

/// The floating-point type autocast runs eligible ops in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutocastDtype {
    Float32,
    BFloat16,
    Float16,
}

impl AutocastDtype {
    fn code(self) -> i32 {
        match self {
            AutocastDtype::Float32 => 0,
            AutocastDtype::BFloat16 => 1,
            AutocastDtype::Float16 => 2,
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            AutocastDtype::Float32 => Kind::Float,
            AutocastDtype::BFloat16 => Kind::BFloat16,
            AutocastDtype::Float16 => Kind::Half,
        }
    }
}

fn device_code(device: Device) -> Result<i32> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(DistError::Input(format!(
            "autocast is configured for cpu or cuda, not {other:?}"
        ))),
    }
}

/// Sets the dtype autocast uses on `device`'s type (CUDA's default is fp16; tch has no
/// setter). ATen keeps this per thread: call it on the thread that runs the forward pass.
pub fn set_autocast_dtype(device: Device, dtype: AutocastDtype) -> Result<()> {
    let d = device_code(device)?;
    // SAFETY: plain values.
    check(
        unsafe { ffi::lkd_set_autocast_dtype(d, dtype.code()) },
        "set_autocast_dtype",
        0,
    )
}

/// The dtype autocast uses on `device`'s type on this thread.
pub fn autocast_dtype(device: Device) -> Result<AutocastDtype> {
    let d = device_code(device)?;
    let mut code = -1;
    // SAFETY: `code` is valid for the call.
    check(
        unsafe { ffi::lkd_get_autocast_dtype(d, &mut code) },
        "get_autocast_dtype",
        0,
    )?;
    Ok(match code {
        0 => AutocastDtype::Float32,
        1 => AutocastDtype::BFloat16,
        _ => AutocastDtype::Float16,
    })
}

/// Runs `f` with autocast enabled on `device`'s type (this thread), as `torch.autocast` does:
/// the previous state is restored and the cast cache cleared afterwards, even if `f` panics.
/// tch's own `autocast` covers CUDA only; this covers CPU too.
pub fn with_autocast<T>(device: Device, f: impl FnOnce() -> T) -> Result<T> {
    struct Region {
        device: i32,
        previous: i32,
    }
    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: plain values. Exit only fails on an unknown device code, ruled out on entry.
            let message = unsafe { ffi::lkd_autocast_exit(self.device, self.previous) };
            let _ = check(message, "autocast_exit", 0);
        }
    }
    let device = device_code(device)?;
    let mut previous = 0;
    // SAFETY: `previous` is valid for the call.
    check(
        unsafe { ffi::lkd_autocast_enter(device, &mut previous) },
        "autocast_enter",
        0,
    )?;
    let _region = Region { device, previous };
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<LaunchEnv>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_vars(|k| map.get(k).cloned())
    }

    const FULL: [(&str, &str); 5] = [
        ("RANK", "1"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "29500"),
    ];

    fn with(changes: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = FULL
            .iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .cloned()
            .collect();
        v.extend(changes.iter().filter(|(_, val)| !val.is_empty()).cloned());
        v
    }

    #[test]
    fn launch_env_reads_torchrun_variables() {
        assert_eq!(launch(&[]).unwrap(), None);
        let env = launch(&FULL).unwrap().unwrap();
        assert_eq!(
            env,
            LaunchEnv {
                rank: 1,
                world_size: 4,
                local_rank: 1,
                master_addr: "node0".into(),
                master_port: 29500
            }
        );
        let round_trip: Vec<(&str, String)> = env.vars();
        let pairs: Vec<(&str, &str)> = round_trip.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(launch(&pairs).unwrap().unwrap(), env);
    }

    #[test]
    fn launch_env_rejects_bad_values() {
        let cases: [(&[(&'static str, &'static str)], &str); 7] = [
            (&[("RANK", "4")], "RANK=4 must be below WORLD_SIZE=4"),
            (&[("WORLD_SIZE", "0")], "WORLD_SIZE=0 must be in 1..=65536"),
            (
                &[("RANK", "-1")],
                "RANK=\"-1\" is not a non-negative integer",
            ),
            (
                &[("MASTER_PORT", "70000")],
                "MASTER_PORT=70000 must be in 1..=65535",
            ),
            (
                &[("MASTER_ADDR", "")],
                "WORLD_SIZE is set but MASTER_ADDR is not",
            ),
            (
                &[("LOCAL_RANK", "")],
                "WORLD_SIZE > 1 but LOCAL_RANK is not set",
            ),
            (&[("LOCAL_RANK", "3")], "LOCAL_RANK=3 cannot exceed RANK=1"),
        ];
        for (change, want) in cases {
            let err = launch(&with(change)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("distributed launch environment: {want}")),
                "{change:?}: {err}"
            );
        }
    }

    #[test]
    fn buckets_group_by_dtype_and_respect_the_cap() {
        let f = |n: i64| Tensor::zeros([n], (Kind::Float, Device::Cpu));
        let d = |n: i64| Tensor::zeros([n], (Kind::Double, Device::Cpu));
        // 4-byte floats, cap 40 bytes: [0, 1] = 32 bytes, 3 would overflow them, 4 (80 bytes) is
        // alone, 5 follows it; open buckets close in dtype order (float, then double).
        let tensors = [f(4), f(4), d(2), f(4), f(20), f(1)];
        let plan = plan_buckets(&tensors, 40).unwrap();
        assert_eq!(plan, vec![vec![0, 1], vec![3], vec![4], vec![5], vec![2]]);
        assert_eq!(
            plan_buckets(&tensors, DEFAULT_BUCKET_BYTES).unwrap(),
            vec![vec![0, 1, 3, 4, 5], vec![2]]
        );
    }

    #[test]
    fn autocast_dtype_is_set_and_honoured() {
        // CUDA's autocast dtype is thread-local state that needs no GPU to set or read.
        set_autocast_dtype(Device::Cuda(0), AutocastDtype::BFloat16).unwrap();
        assert_eq!(
            autocast_dtype(Device::Cuda(0)).unwrap(),
            AutocastDtype::BFloat16
        );
        set_autocast_dtype(Device::Cuda(0), AutocastDtype::Float16).unwrap();
        assert_eq!(
            autocast_dtype(Device::Cuda(0)).unwrap(),
            AutocastDtype::Float16
        );
        // On CPU the same switch changes what a matmul returns inside an autocast region.
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        for dtype in [AutocastDtype::BFloat16, AutocastDtype::Float16] {
            set_autocast_dtype(Device::Cpu, dtype).unwrap();
            let inside = with_autocast(Device::Cpu, || a.matmul(&a)).unwrap();
            assert_eq!(inside.kind(), dtype.kind());
        }
        assert_eq!(
            a.matmul(&a).kind(),
            Kind::Float,
            "autocast must be off after the region"
        );
    }
}
