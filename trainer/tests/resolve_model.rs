//! The model follows the dataset where the config leaves it open (a preset's defaults yield),
//! says what it took, and refuses a count the config sets that the data cannot give.

use lkd_models::ModelConfig;
use lkd_trainer::data::{self, DatasetKind, DatasetSpec, Split};
use lkd_trainer::train::resolve_model;

fn fashion() -> data::Dataset {
    let path = std::env::var("LKD_FASHION_MNIST")
        .expect("LKD_FASHION_MNIST is not set: run through `make test`");
    let mut spec = DatasetSpec::new(DatasetKind::FashionMnist, std::path::Path::new(&path));
    spec.limit = Some(16);
    data::open(&spec, Split::Train).unwrap()
}

fn rgb_folder(dir: &std::path::Path) -> data::Dataset {
    data::synthetic::write_jpeg_folder(dir, 3, 2, 1, 20, 16, 1).unwrap();
    data::open(&DatasetSpec::new(DatasetKind::Folder, dir), Split::Train).unwrap()
}

fn with_chans(preset: &str, in_chans: Option<usize>) -> ModelConfig {
    ModelConfig {
        in_chans,
        ..ModelConfig::preset(preset)
    }
}

#[test]
fn preset_defaults_yield_to_the_data_and_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = rgb_folder(tmp.path());
    let r = resolve_model(&ModelConfig::preset("convnext_proxy"), &folder).unwrap();
    assert_eq!((r.model.in_chans, r.model.num_classes), (Some(3), Some(3)));
    assert_eq!(
        r.adapted,
        [
            "model.num_classes = 3 from dataset folder/train (preset convnext_proxy has 10)",
            "model.in_chans = 3 from dataset folder/train (preset convnext_proxy has 1)",
        ]
    );
    // An ImageNet preset on Fashion-MNIST: channels, classes and size all follow.
    let r = resolve_model(&ModelConfig::preset("resnet18"), &fashion()).unwrap();
    assert_eq!(
        (r.model.in_chans, r.model.num_classes, r.model.input_size),
        (Some(1), Some(10), Some(28))
    );
    assert_eq!(r.adapted.len(), 3, "{:?}", r.adapted);
    // Nothing to adapt: nothing said, nothing set.
    let r = resolve_model(&ModelConfig::preset("convnext_proxy"), &fashion()).unwrap();
    assert!(r.adapted.is_empty(), "{:?}", r.adapted);
    assert_eq!(r.model, ModelConfig::preset("convnext_proxy"));
}

#[test]
fn a_channel_count_the_data_cannot_give_is_an_error() {
    let e = resolve_model(&with_chans("convnext_proxy", Some(3)), &fashion())
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "config: model.in_chans = 3, but dataset fashion-mnist/train has 1-channel images: \
         remove model.in_chans to follow the dataset"
    );
    let tmp = tempfile::tempdir().unwrap();
    let folder = rgb_folder(tmp.path());
    let e = resolve_model(&with_chans("convnext_proxy", Some(4)), &folder)
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "config: model.in_chans = 4, but dataset folder/train is an image folder, read as RGB: \
         remove model.in_chans to follow the dataset (3), or set 1 for grayscale"
    );
    // A folder read as luma is a choice the config may make; the data's own count always is.
    for (preset, c, data) in [
        ("resnet18", 1, &folder),
        ("resnet18", 3, &folder),
        ("convnext_proxy", 1, &fashion()),
    ] {
        let r = resolve_model(&with_chans(preset, Some(c)), data).unwrap();
        assert_eq!(r.model.in_chans, Some(c));
    }
}
