// Compiles csrc/shim.cpp against the headers of the libtorch tch links (the torch wheel at
// $LIBTORCH), as torch-sys does for its own C++.
//
// Gloo: the wheel lacks Gloo's headers; Debian's libgloo-dev puts them in /usr/include/gloo
// (scripts/bootstrap.sh installs it). Its libgloo is not linked: the copy in libtorch_cpu runs.
// NCCL: compiled only when the libtorch has libtorch_cuda.so and the CUDA headers the wheel lacks
// (CCCL's nv/target, crt/host_config.h) are found; otherwise `nccl_available()` is false and a
// CUDA process group is an error that says so.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    for var in [
        "LIBTORCH",
        "LIBTORCH_CXX11_ABI",
        "LKD_CACHE",
        "LKD_CUDA_HEADERS",
        "CUDA_HOME",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let libtorch = PathBuf::from(std::env::var("LIBTORCH").unwrap_or_else(|_| {
        panic!("LIBTORCH is not set: run `eval \"$(make -s env)\"` (it points at the torch wheel, as for tch)")
    }));
    let include = libtorch.join("include");
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
        .exists()
    {
        panic!("{}: no c10d headers (torch/csrc/distributed/c10d); LIBTORCH must be a torch wheel or libtorch with distributed support", include.display());
    }
    if !Path::new("/usr/include/gloo/config.h").exists() {
        panic!("Gloo headers not found in /usr/include/gloo: `apt-get install libgloo-dev` (scripts/bootstrap.sh does this)");
    }
    let lib = libtorch.join("lib");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-interference-size")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false);

    let with_nccl =
        lib.join("libtorch_cuda.so").exists() && add_cuda_includes(&mut build, &libtorch);
    if with_nccl {
        build.define("LKD_WITH_NCCL", None);
    }
    build.compile("lkd_dist_shim");

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if with_nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
}

/// Adds the CUDA runtime, CCCL, crt and NCCL include folders; false (with a warning) when one is
/// missing.
fn add_cuda_includes(build: &mut cc::Build, libtorch: &Path) -> bool {
    let site = libtorch.parent().unwrap_or(libtorch);
    let mut extra: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var("LKD_CUDA_HEADERS") {
        extra.push(dir.into());
    }
    if let Ok(cache) = std::env::var("LKD_CACHE") {
        extra.push(Path::new(&cache).join("cuda-headers/nvidia/cu13/include"));
    }
    if let Ok(cuda) = std::env::var("CUDA_HOME") {
        extra.push(Path::new(&cuda).join("include"));
    }
    extra.push("/usr/local/cuda/include".into());
    let runtime = [
        site.join("nvidia/cu13/include"),
        site.join("nvidia/cuda_runtime/include"),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .find(|d| d.join("cuda_runtime_api.h").exists());
    let cccl = extra
        .iter()
        .find(|d| d.join("nv/target").exists() && d.join("crt/host_config.h").exists());
    let nccl = [site.join("nvidia/nccl/include")]
        .into_iter()
        .chain(extra.iter().cloned())
        .find(|d| d.join("nccl.h").exists());
    match (runtime, cccl, nccl) {
        (Some(runtime), Some(cccl), Some(nccl)) => {
            build.include(runtime).include(cccl).include(nccl);
            true
        }
        (runtime, cccl, nccl) => {
            println!(
                "cargo:warning=lkd-dist: libtorch_cuda.so found but building without NCCL (missing headers: {}{}{}); \
                 scripts/bootstrap.sh fetches them into $LKD_CACHE/cuda-headers",
                if runtime.is_none() { "cuda_runtime_api.h " } else { "" },
                if cccl.is_none() { "nv/target + crt/host_config.h " } else { "" },
                if nccl.is_none() { "nccl.h" } else { "" },
            );
            false
        }
    }
}
