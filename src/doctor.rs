//! `lkd doctor`: what this binary actually runs on.

use anyhow::Result;
use std::path::PathBuf;

/// The directory of a shared library mapped into this process, read from /proc/self/maps,
/// so the report names the library really loaded rather than the one configured.
fn loaded_library_dir(name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains(name))
        .map(|p| PathBuf::from(p).parent().unwrap().to_path_buf())
}

fn torch_version() -> Option<String> {
    let lib = loaded_library_dir("libtorch_cpu.so")?;
    let text = std::fs::read_to_string(lib.parent()?.join("version.py")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("__version__ = ")
            .map(|v| v.trim_matches(['\'', '"']).to_string())
    })
}

pub fn run() -> Result<()> {
    use lkd_trainer::tch::Cuda;
    // Touch libtorch so it is loaded before reading the maps.
    let cuda = Cuda::is_available();
    println!(
        "libtorch       {}",
        torch_version().unwrap_or_else(|| "unknown".into())
    );
    println!(
        "  location     {}",
        loaded_library_dir("libtorch_cpu.so")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "not loaded".into())
    );
    println!(
        "  libtorch_cuda {}",
        if loaded_library_dir("libtorch_cuda.so").is_some() {
            "linked"
        } else {
            "not linked (CPU-only build)"
        }
    );
    println!(
        "  CUDA         {}",
        if cuda {
            format!(
                "available, {} device(s), cuDNN {}",
                Cuda::device_count(),
                Cuda::cudnn_is_available()
            )
        } else {
            "not available".into()
        }
    );
    println!("  threads      {}", lkd_trainer::tch::get_num_threads());
    match lkd_runtime::session::ort_build_info() {
        Ok((info, providers)) => {
            let lib = std::env::var("ORT_DYLIB_PATH").unwrap_or_default();
            let version = lib
                .rsplit_once(".so.")
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| "unknown".into());
            println!("onnxruntime    {version}");
            println!(
                "  build        {}",
                info.trim().trim_start_matches("ORT Build Info: ")
            );
            println!("  library      {lib}");
            println!("  providers    {}", providers.join(", "));
            let cuda_ep = providers.iter().any(|p| p == "CUDAExecutionProvider");
            println!(
                "  CUDA EP      {}",
                if cuda_ep {
                    "compiled in (onnxruntime-gpu)"
                } else {
                    "not in this build (CPU wheel)"
                }
            );
        }
        Err(e) => println!("onnxruntime    unavailable: {e}"),
    }
    let data = std::env::var("LKD_FASHION_MNIST")
        .unwrap_or_else(|_| "/usr/share/datasets/fashion-mnist".into());
    let present = PathBuf::from(&data)
        .join("train-images-idx3-ubyte.gz")
        .exists();
    println!(
        "dataset        Fashion-MNIST at {data} ({})",
        if present {
            "present"
        } else {
            "missing: run `make`, which installs dataset-fashion-mnist"
        }
    );
    Ok(())
}
