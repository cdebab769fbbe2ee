//! Finding and loading the OpenVINO runtime, in a process of its own (the library loads once per
//! process): every way it can be missing or unloadable is an exact error, and a corrected
//! setting then loads it. One test function, because it changes the environment.

use lkd_openvino::{Engine, EngineConfig, INSTALL_HINT, LIBRARY_ENV};

#[test]
fn missing_or_unloadable_runtime_is_an_exact_error_then_the_real_one_loads() {
    let real = std::env::var_os(LIBRARY_ENV)
        .filter(|v| !v.is_empty())
        .expect(
            "LKD_OPENVINO_LIB is not set: run through `make test` or `eval \"$(make -s env)\"`",
        );
    let model = std::path::Path::new("unused.onnx");
    let cfg = EngineConfig::default();
    let tmp = tempfile::tempdir().unwrap();

    let missing = tmp.path().join("libopenvino_c.so.2641");
    std::env::set_var(LIBRARY_ENV, &missing);
    assert_eq!(
        Engine::from_file(model, &cfg).unwrap_err().to_string(),
        format!(
            "OpenVINO runtime library not found: LKD_OPENVINO_LIB=`{}` does not exist. {INSTALL_HINT}",
            missing.display()
        )
    );

    std::env::set_var(LIBRARY_ENV, tmp.path());
    assert_eq!(
        Engine::from_file(model, &cfg).unwrap_err().to_string(),
        format!(
            "OpenVINO runtime library not found: LKD_OPENVINO_LIB=`{}` is a directory without libopenvino_c.so*. {INSTALL_HINT}",
            tmp.path().display()
        )
    );

    // Not set: only the executable's directory is searched (target/.../deps has no OpenVINO).
    std::env::remove_var(LIBRARY_ENV);
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(
        Engine::from_file(model, &cfg).unwrap_err().to_string(),
        format!(
            "OpenVINO runtime library not found: LKD_OPENVINO_LIB is not set and `{}` holds no libopenvino_c.so*. {INSTALL_HINT}",
            exe_dir.display()
        )
    );

    // A file by the right name that is not a shared library.
    std::fs::write(&missing, b"not an ELF file").unwrap();
    std::env::set_var(LIBRARY_ENV, &missing);
    let err = Engine::from_file(model, &cfg).unwrap_err().to_string();
    let prefix = format!(
        "cannot load the OpenVINO runtime from `{}`: ",
        missing.display()
    );
    assert!(err.starts_with(&prefix), "{err}");
    assert!(err.ends_with(INSTALL_HINT), "{err}");

    // The real library: the engine now gets as far as the model.
    std::env::set_var(LIBRARY_ENV, &real);
    assert_eq!(
        Engine::from_file(model, &cfg).unwrap_err().to_string(),
        "model file `unused.onnx` does not exist"
    );
    let version = lkd_openvino::openvino_version().unwrap();
    assert!(version.starts_with("2026."), "{version}");
}
