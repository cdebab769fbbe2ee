//! Model configs are checked where they are read: every bad value is a `ModelError` naming the
//! preset, the field, the value and what is allowed, never a panic (issue 13, probe 2).

use lkd_models::families::{slak::SlakConfig, FamilySpec};
use lkd_models::{find_preset, preset_names, ModelConfig, ModelError, PRESETS};

/// A `[model]` table as `--set model.KEY=VALUE` leaves it (values are TOML), parsed the way a
/// run's config is.
fn parse_toml(preset: &str, sets: &str) -> Result<ModelConfig, String> {
    let text = format!(
        "preset = \"{preset}\"\n{}",
        sets.split(" ; ").collect::<Vec<_>>().join("\n")
    );
    toml::from_str::<ModelConfig>(&text).map_err(|e| e.to_string())
}

/// The same values as a resolved config error (what `build` reports for configs made in code).
fn build_error(preset: &str, sets: &str) -> String {
    let mut cfg = ModelConfig::preset(preset);
    let table: toml::Table =
        toml::from_str(&sets.split(" ; ").collect::<Vec<_>>().join("\n")).unwrap();
    let get_list = |k: &str| {
        table.get(k).map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_integer().unwrap() as usize)
                .collect::<Vec<_>>()
        })
    };
    let get_one = |k: &str| table.get(k).map(|v| v.as_integer().unwrap() as usize);
    cfg.depths = get_list("depths");
    cfg.dims = get_list("dims");
    cfg.kernels = get_list("kernels");
    cfg.kernel_size = get_one("kernel_size");
    cfg.small_kernel = get_one("small_kernel");
    cfg.in_chans = get_one("in_chans");
    cfg.num_classes = get_one("num_classes");
    cfg.input_size = get_one("input_size");
    cfg.drop_path = table.get("drop_path").map(|v| v.as_float().unwrap());
    cfg.decompose = table.get("decompose").map(|v| v.as_bool().unwrap());
    cfg.build().unwrap_err().to_string()
}

/// Each probe is refused while parsing, with exactly this message, and `build` on the same
/// values in code gives the same message.
fn refused(preset: &str, sets: &str, message: &str) {
    let err = parse_toml(preset, sets).expect_err(sets);
    assert!(
        err.contains(message),
        "{preset} {sets}:\n got: {err}\nwant: {message}"
    );
    if !sets.contains('-') && !sets.contains("nan") {
        assert_eq!(build_error(preset, sets), message, "{preset} {sets}");
    }
}

#[test]
fn probe_empty_depths_and_dims() {
    // Issue 13 probe 2: `--set model.depths=[] --set model.dims=[]` panicked in convnext_macro.
    refused("convnext_proxy", "depths = [] ; dims = []", "model `convnext_proxy`: `depths` = [] is invalid: expected 1 to 8 stages, each of 1..=64 blocks");
    refused("slak_proxy", "depths = [] ; dims = [] ; kernels = []", "model `slak_proxy`: `depths` = [] is invalid: expected 1 to 8 stages, each of 1..=64 blocks");
    // resnet_proxy with empty depths panicked indexing `widths[0]`.
    refused("resnet_proxy", "depths = [] ; dims = []", "model `resnet_proxy`: `depths` = [] is invalid: expected 1 to 8 stages, each of 1..=64 blocks");
    refused("resnet_proxy", "depths = []", "model `resnet_proxy`: `depths` = [] is invalid: expected 1 to 8 stages, each of 1..=64 blocks");
    refused(
        "vit_proxy",
        "depths = []",
        "model `vit_proxy`: `depths` = [] is invalid: expected 1 to 8 stages, each of 1..=64 blocks",
    );
}

#[test]
fn probe_zero_dims() {
    // Issue 13 probe 2: `--model-override '{"dims":[0,0,0]}'` divided by zero building the graph.
    let depths = match find_preset("convnext_proxy").unwrap().spec().family {
        FamilySpec::ConvNext(c) => c.depths,
        other => panic!("convnext_proxy is {other:?}"),
    };
    let json_err =
        serde_json::from_str::<ModelConfig>(r#"{"preset":"convnext_proxy","dims":[0,0,0]}"#)
            .unwrap_err()
            .to_string();
    let want = format!(
        "model `convnext_proxy`: `dims` = [0, 0, 0] is invalid: expected {} widths, one per stage of depths = {depths:?}, each in 1..=16384",
        depths.len()
    );
    assert!(json_err.starts_with(&want), "{json_err}");
    refused("convnext_tiny", "dims = [96, 0, 384, 768]", "model `convnext_tiny`: `dims` = [96, 0, 384, 768] is invalid: expected 4 widths, one per stage of depths = [3, 3, 9, 3], each in 1..=16384");
    refused("resnet18", "depths = [1, 1] ; dims = [0, 0]", "model `resnet18`: `dims` = [0, 0] is invalid: expected 2 widths, one per stage of depths = [1, 1], each in 1..=16384");
    refused("vit_small", "dims = [0]", "model `vit_small`: `dims` = [0] is invalid: expected one width, a multiple of the 6 attention heads, in 1..=16384");
}

#[test]
fn mismatched_lengths_name_both_lists() {
    refused("convnext_tiny", "dims = [96, 192]", "model `convnext_tiny`: `dims` = [96, 192] is invalid: expected 4 widths, one per stage of depths = [3, 3, 9, 3], each in 1..=16384");
    refused("convnext_tiny", "depths = [1, 1]", "model `convnext_tiny`: `dims` = [96, 192, 384, 768] is invalid: expected 2 widths, one per stage of depths = [1, 1], each in 1..=16384");
    refused("slak_tiny", "kernels = [51, 49, 47]", "model `slak_tiny`: `kernels` = [51, 49, 47] is invalid: expected 4 odd kernel sizes, one per stage of depths = [3, 3, 9, 3], each in 1..=127");
    refused("resnet50", "depths = [3, 4, 6]", "model `resnet50`: `dims` = [64, 128, 256, 512] is invalid: expected 3 widths, one per stage of depths = [3, 4, 6], each in 1..=16384");
    refused("vit_small", "dims = [384, 384]", "model `vit_small`: `dims` = [384, 384] is invalid: expected one width, a multiple of the 6 attention heads, in 1..=16384");
    refused(
        "vit_small",
        "depths = [2, 1]",
        "model `vit_small`: `depths` = [2, 1] is invalid: expected the same number of blocks between every feature tap (taps are evenly spaced), e.g. [1, 1, 1]",
    );
}

#[test]
fn sizes_out_of_range() {
    refused("convnext_tiny", "kernel_size = 4", "model `convnext_tiny`: `kernel_size` = 4 is invalid: expected an odd kernel size in 1..=127");
    refused("convnext_tiny", "kernel_size = 0", "model `convnext_tiny`: `kernel_size` = 0 is invalid: expected an odd kernel size in 1..=127");
    refused("convnext_tiny", "kernel_size = 129", "model `convnext_tiny`: `kernel_size` = 129 is invalid: expected an odd kernel size in 1..=127");
    refused("slak_tiny", "kernels = [51, 49, 48, 13]", "model `slak_tiny`: `kernels` = [51, 49, 48, 13] is invalid: expected 4 odd kernel sizes, one per stage of depths = [3, 3, 9, 3], each in 1..=127");
    refused("slak_tiny", "small_kernel = 61", "model `slak_tiny`: `small_kernel` = 61 is invalid: expected an odd kernel size at most every stage's kernel (kernels = [51, 49, 47, 13])");
    refused(
        "slak_tiny",
        "small_kernel = 4",
        "model `slak_tiny`: `small_kernel` = 4 is invalid: expected an odd kernel size in 1..=127",
    );
    refused("convnext_tiny", "depths = [3, 3, 65, 3]", "model `convnext_tiny`: `depths` = [3, 3, 65, 3] is invalid: expected 1 to 8 stages, each of 1..=64 blocks");
    refused("convnext_tiny", "depths = [1, 1, 1, 1, 1, 1, 1, 1, 1] ; dims = [8, 8, 8, 8, 8, 8, 8, 8, 8]", "model `convnext_tiny`: `depths` = [1, 1, 1, 1, 1, 1, 1, 1, 1] is invalid: expected 1 to 8 stages, each of 1..=64 blocks");
    refused("convnext_tiny", "dims = [96, 192, 384, 16385]", "model `convnext_tiny`: `dims` = [96, 192, 384, 16385] is invalid: expected 4 widths, one per stage of depths = [3, 3, 9, 3], each in 1..=16384");
    refused(
        "convnext_tiny",
        "num_classes = 0",
        "model `convnext_tiny`: `num_classes` = 0 is invalid: expected a class count in 1..=100000",
    );
    refused(
        "convnext_tiny",
        "in_chans = 65",
        "model `convnext_tiny`: `in_chans` = 65 is invalid: expected a channel count in 1..=64",
    );
    refused(
        "convnext_tiny",
        "input_size = 0",
        "model `convnext_tiny`: `input_size` = 0 is invalid: expected an image side in 1..=4096",
    );
    refused(
        "convnext_tiny",
        "input_size = 5000",
        "model `convnext_tiny`: `input_size` = 5000 is invalid: expected an image side in 1..=4096",
    );
    refused(
        "convnext_tiny",
        "input_size = 16",
        "model `convnext_tiny`: `input_size` = 16 is invalid: expected at least 32 (the stem's stride 4 times 2 per later stage, 4 stages), at most 4096",
    );
    refused("vit_small", "input_size = 100", "model `vit_small`: `input_size` = 100 is invalid: expected a multiple of the patch size 16 in 16..=4096");
}

#[test]
fn negative_and_non_finite_values() {
    refused("convnext_tiny", "dims = [-96, 192, 384, 768]", "model `convnext_tiny`: `dims` = [-96, 192, 384, 768] is invalid: expected one width per stage, each in 1..=16384");
    refused("convnext_tiny", "depths = [3, -3, 9, 3]", "model `convnext_tiny`: `depths` = [3, -3, 9, 3] is invalid: expected 1 to 8 stages, each of 1..=64 blocks");
    refused(
        "convnext_tiny",
        "input_size = -224",
        "model `convnext_tiny`: `input_size` = -224 is invalid: expected an image side in 1..=4096",
    );
    refused(
        "slak_tiny",
        "small_kernel = -5",
        "model `slak_tiny`: `small_kernel` = -5 is invalid: expected an odd kernel size in 1..=127",
    );
    refused(
        "convnext_tiny",
        "drop_path = 1.0",
        "model `convnext_tiny`: `drop_path` = 1.0 is invalid: expected a rate in [0, 1)",
    );
    refused(
        "convnext_tiny",
        "drop_path = -0.1",
        "model `convnext_tiny`: `drop_path` = -0.1 is invalid: expected a rate in [0, 1)",
    );
    refused(
        "convnext_tiny",
        "drop_path = nan",
        "model `convnext_tiny`: `drop_path` = NaN is invalid: expected a rate in [0, 1)",
    );
}

#[test]
fn fields_of_another_family_are_refused() {
    refused(
        "convnext_tiny",
        "kernels = [7, 7, 7, 7]",
        "model `convnext_tiny`: `kernels` does not apply to the convnext family (its fields: in_chans, num_classes, input_size, drop_path, depths, dims, kernel_size)",
    );
    refused(
        "slak_tiny",
        "kernel_size = 7",
        "model `slak_tiny`: `kernel_size` does not apply to the slak family (its fields: in_chans, num_classes, input_size, drop_path, depths, dims, kernels, small_kernel, decompose)",
    );
    refused(
        "resnet50",
        "drop_path = 0.1",
        "model `resnet50`: `drop_path` does not apply to the resnet family (its fields: in_chans, num_classes, input_size, depths (blocks per layer), dims (widths))",
    );
    let err = parse_toml("convnext_tiny", "kernel = 7").unwrap_err();
    assert!(err.contains("unknown field `kernel`"), "{err}");
}

#[test]
fn slak_decomposition_settings() {
    refused(
        "convnext_tiny_slak7",
        "small_kernel = 7",
        "model `convnext_tiny_slak7`: `small_kernel` = 7 is invalid: expected an odd kernel size smaller than every stage's kernel (kernels = [7, 7, 7, 7])",
    );
    refused(
        "convnext_tiny_slak7",
        "decompose = true",
        "model `convnext_tiny_slak7`: `decompose` = true is invalid: expected false when the preset has no small kernel (a decomposed kernel is k×s + s×k); set small_kernel too",
    );
    // Undecomposed SLaK-T (one 51×51 conv per block plus the 5×5 branch) is a valid config.
    let g = parse_toml("slak_tiny", "decompose = false")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        g.param("stages.0.0.large_kernel.lkb_origin.conv.weight")
            .unwrap()
            .shape,
        vec![124, 1, 51, 51]
    );
    assert_eq!(
        g.param("stages.0.0.large_kernel.small_conv.conv.weight")
            .unwrap()
            .shape,
        vec![124, 1, 5, 5]
    );
    assert!(g
        .param("stages.0.0.large_kernel.LoRA1.conv.weight")
        .is_none());
}

#[test]
fn too_many_parameters_is_refused_before_allocation() {
    // Each field is in range, so this parses; `build` counts the parameters before anyone
    // allocates them.
    let cfg = parse_toml(
        "convnext_tiny",
        "depths = [64, 64, 64, 64] ; dims = [16384, 16384, 16384, 16384]",
    )
    .unwrap();
    let err = cfg.build().unwrap_err().to_string();
    let at = err
        .find("model `convnext_tiny` would have ")
        .unwrap_or_else(|| panic!("{err}"));
    let rest = &err[at + "model `convnext_tiny` would have ".len()..];
    let (count, tail) = rest.split_once(' ').unwrap();
    assert!(count.parse::<usize>().unwrap() > 2_000_000_000, "{err}");
    assert_eq!(
        tail.trim_end(),
        "parameters; at most 2000000000 are allowed"
    );
}

#[test]
fn unknown_preset_lists_every_known_one() {
    let err = parse_toml("convnext_huge", "").unwrap_err();
    let want = format!(
        "unknown preset `convnext_huge`; known presets: {}",
        preset_names().join(", ")
    );
    assert!(err.contains(&want), "{err}");
    assert!(want.contains("convnext_tiny_slak7") && want.contains("vit_proxy"));
}

#[test]
fn presets_build_themselves() {
    let names = preset_names();
    for (i, p) in PRESETS.iter().enumerate() {
        assert!(
            !names[..i].contains(&p.name),
            "preset {} listed twice",
            p.name
        );
        let spec = p.spec();
        assert_eq!(spec.common.preset, p.name);
        let g = ModelConfig::preset(p.name)
            .build()
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        assert_eq!(g.arch, p.family_name(), "{}", p.name);
        assert_eq!(g.preset, p.name);
        assert_eq!(
            g,
            spec.build().unwrap(),
            "{}: ModelConfig::preset and the table entry agree",
            p.name
        );
    }
}

/// The SLaK authors' ConvNeXt-T students: ConvNeXt-T's structure and widths, each 7×7
/// depthwise conv without bias and with BatchNorm, named `large_kernel.lkb_origin.*`.
#[test]
fn convnext_tiny_slak7_is_convnext_tiny_with_batchnorm() {
    let g = ModelConfig::preset("convnext_tiny_slak7").build().unwrap();
    assert_eq!(
        SlakConfig::convnext_tiny_slak7().dims,
        vec![96, 192, 384, 768]
    );
    assert_eq!(
        g.param("stages.2.8.large_kernel.lkb_origin.conv.weight")
            .unwrap()
            .shape,
        vec![384, 1, 7, 7]
    );
    for leaf in ["weight", "bias", "running_mean", "running_var"] {
        assert_eq!(
            g.param(&format!("stages.3.2.large_kernel.lkb_origin.bn.{leaf}"))
                .unwrap()
                .shape,
            vec![768]
        );
    }
    assert!(g
        .param("stages.0.0.large_kernel.lkb_origin.conv.bias")
        .is_none());
    assert!(g.params.iter().all(|p| !p.name.contains("small_conv")
        && !p.name.contains("LoRA")
        && !p.name.contains("dwconv")));
    // ConvNeXt-T's 28,589,128 parameters, less the 6,624 depthwise biases, plus a BatchNorm
    // weight and bias per block channel (2 × 6,624).
    let block_channels = 3 * 96 + 3 * 192 + 9 * 384 + 3 * 768;
    assert_eq!(block_channels, 6_624);
    assert_eq!(
        g.num_parameters(),
        28_589_128 - block_channels + 2 * block_channels
    );
    let small = ModelConfig::preset("convnext_small_slak7").build().unwrap();
    assert!(small
        .param("stages.2.26.large_kernel.lkb_origin.conv.weight")
        .is_some());
}

/// Every `[model]`-like table in the shipped configs still parses and builds.
#[test]
fn shipped_config_models_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let doc: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut tables = vec![];
        for key in ["model", "distill.teacher_model", "base.model"] {
            if let Some(v) = key.split('.').try_fold(&doc, |v, k| v.get(k)) {
                tables.push(v.clone());
            }
        }
        tables.extend(
            doc.get("students")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
                .cloned(),
        );
        tables.extend(
            doc.get("teachers")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("model").cloned()),
        );
        for t in tables {
            let cfg: ModelConfig = t
                .clone()
                .try_into()
                .unwrap_or_else(|e| panic!("{}: {t}: {e}", path.display()));
            cfg.build()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                toml::Value::try_from(&cfg)
                    .unwrap()
                    .try_into::<ModelConfig>()
                    .unwrap(),
                cfg,
                "round trip"
            );
            n += 1;
        }
    }
    assert!(n >= 8, "found {n} model tables");
}

#[test]
fn model_error_is_the_deserialisation_error() {
    // Built in code, the same checks run in `build`.
    let mut cfg = ModelConfig::preset("convnext_tiny");
    cfg.dims = Some(vec![]);
    assert!(matches!(
        cfg.build().unwrap_err(),
        ModelError::InvalidField { field: "dims", .. }
    ));
}

#[test]
fn a_retired_proxy_name_says_the_new_one() {
    let err = lkd_models::find_preset("resnet_nano")
        .err()
        .expect("a retired name is refused")
        .to_string();
    assert_eq!(
        err,
        "preset `resnet_nano` was renamed `resnet_proxy`: the CPU-scale proxies are `*_proxy`, so that no preset name means two networks"
    );
    // `convnext_nano` is timm's network now, not the proxy.
    let g = lkd_models::ModelConfig::preset("convnext_nano")
        .build()
        .unwrap();
    assert_eq!(g.num_parameters(), 15_593_560);
}
