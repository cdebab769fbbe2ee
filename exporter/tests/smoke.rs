mod common;
use lkd_exporter::*;

#[test]
fn nano_presets_export_and_check() {
    common::ort_env_ok();
    for preset in ["slak_nano", "convnext_nano", "resnet_nano", "vit_nano"] {
        let g = common::build(preset, "");
        let w = common::random_weights(&g, 1);
        let (bytes, rep) = export_bytes(&g, &w, &ExportOptions::default()).unwrap_or_else(|e| panic!("{preset}: {e}"));
        println!("{preset}: {} | {:?}", rep.summary(), rep.reparam);
        assert!(bytes.len() > 1000);
    }
}
