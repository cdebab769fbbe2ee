//! Training evaluation and serving see identical tensors: the fixture images (odd sizes; grey,
//! RGB, RGBA, grey+alpha, palette, 16-bit PNG; JPEG) go through the trainer's eval pipeline
//! (folder dataset → `Loader::eval` → tch batch) and through the runtime's `preprocess_batch`
//! (what `predict` and `serve` run), for a grey and an RGB model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lkd_models::preprocess::{Interpolation, Preprocess};
use lkd_trainer::data::{self, DatasetKind, DatasetSpec, Loader, Split};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../preprocess/tests/fixtures")
}

#[test]
fn trainer_eval_and_runtime_tensors_are_identical() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "fixtures missing: {files:?}");
    let tmp = tempfile::tempdir().unwrap();
    let class = tmp.path().join("val/all");
    std::fs::create_dir_all(&class).unwrap();
    for f in &files {
        std::fs::copy(f, class.join(f.file_name().unwrap())).unwrap();
    }
    let ds = Arc::new(
        data::open(
            &DatasetSpec::new(DatasetKind::Folder, tmp.path()),
            Split::Val,
        )
        .unwrap(),
    );
    assert_eq!(ds.len(), files.len());
    let encoded: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (f.display().to_string(), std::fs::read(f).unwrap()))
        .collect();

    let grey_odd = Preprocess {
        input_size: [28, 28],
        crop_pct: 1.0,
        ..Preprocess::fashion_mnist()
    };
    let rgb = Preprocess {
        interpolation: Interpolation::Bicubic,
        ..Preprocess::imagenet(24)
    };
    for p in [grey_odd, rgb] {
        let loader = Loader::eval(ds.clone(), &p, 4, 2).unwrap();
        let mut trained: Vec<f32> = Vec::new();
        for batch in loader.epoch(0, 0).unwrap() {
            let images = batch.unwrap().images;
            trained.extend(Vec::<f32>::try_from(&images.flatten(0, -1)).unwrap());
        }
        let served = lkd_runtime::preprocess_batch(&encoded, &p).unwrap();
        assert_eq!(
            served.shape,
            [files.len(), p.channels, p.input_size[0], p.input_size[1]]
        );
        let len = lkd_preprocess::tensor_len(&p);
        for (i, (a, b)) in trained.chunks(len).zip(served.data.chunks(len)).enumerate() {
            let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(
                differ,
                0,
                "{}: {differ} of {len} values differ for {p:?}",
                files[i].display()
            );
        }
        assert_eq!(trained.len(), served.data.len());
    }
}
