//! Every shipped training config parses and its model builds.

mod common;

use lkd_trainer::config::TrainConfig;

#[test]
fn shipped_configs_parse_and_build() {
    let dir = common::repo_root().join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".toml") || name.starts_with("study-") {
            continue;
        }
        let cfg = TrainConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.model.build().unwrap_or_else(|e| panic!("{name}: {e}"));
        // Round trip through the run dir's config.toml.
        assert_eq!(
            TrainConfig::from_toml_str(&cfg.to_toml()).unwrap(),
            cfg,
            "{name}"
        );
        n += 1;
    }
    assert!(n >= 4, "found {n} configs");
    let imagenet =
        TrainConfig::load(&dir.join("imagenet-convnext-tiny-nkd-slak-tiny.toml")).unwrap();
    assert_eq!(imagenet.optim.batch_size * imagenet.optim.update_freq, 2048);
    assert_eq!(
        imagenet.distill.unwrap().teacher_model.unwrap().preset,
        "slak_tiny"
    );
}

#[test]
fn overrides_apply_and_reject_unknown_fields() {
    let text =
        std::fs::read_to_string(common::repo_root().join("configs/fmnist-convnext-proxy.toml"))
            .unwrap();
    let cfg = TrainConfig::from_toml_str(&text).unwrap();
    let c = cfg
        .with_overrides(&[
            "optim.lr=0.01".into(),
            "model.kernel_size=5".into(),
            "run.device=\"cuda:1\"".into(),
        ])
        .unwrap();
    assert_eq!(c.optim.lr, 0.01);
    assert_eq!(c.model.kernel_size, Some(5));
    assert_eq!(c.run.device, "cuda:1");
    let err = cfg
        .with_overrides(&["optim.learning_rate=0.1".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("learning_rate"), "{err}");
}

/// A run stores its config with the model fields taken from the data filled in; the config
/// that asked for it (fields open) is still the same recipe, so studies and `train_or_reuse`
/// resume it instead of training it again. Another value, or another data setting, is not.
#[test]
fn a_stored_config_with_data_filled_fields_is_the_same_recipe() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/study-cluttered.toml"),
    )
    .unwrap();
    let study: toml::Value = toml::from_str(&text).unwrap();
    let base = toml::to_string(&study["base"]).unwrap();
    let asked = TrainConfig::from_toml_str(&base).unwrap();
    assert_eq!(asked.model.input_size, None);
    let mut stored = asked.clone();
    stored.model.input_size = Some(64);
    stored.model.num_classes = Some(10);
    assert!(asked.same_recipe_as(&stored));
    assert_ne!(asked.result_digest(), stored.result_digest());

    let mut other_size = asked.clone();
    other_size.model.input_size = Some(32);
    assert!(!other_size.same_recipe_as(&stored));
    let mut other_data = asked.clone();
    other_data.data.dataset.limit = Some(123);
    assert!(!other_data.same_recipe_as(&stored));
}
