//! Data pipeline: readers, transforms, Mixup/CutMix and the loader.

use lkd_models::preprocess::{Interpolation, Preprocess};
use lkd_trainer::data::{
    self, mixup, ops, randaug, transform, AugmentConfig, DataError, DatasetKind, DatasetSpec,
    Image, Loader, LoaderConfig, MixupConfig, RandAugment, RrcConfig, Split, Transform,
};
use lkd_trainer::tch::{Kind, Tensor};
use rand::SeedableRng;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

fn fashion() -> DatasetSpec {
    DatasetSpec::fashion_mnist_from_env()
        .expect("LKD_FASHION_MNIST must point at the Fashion-MNIST files (make test sets it)")
}

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.kind() == b.kind() && a.equal(b)
}

// ---------------------------------------------------------------- readers

#[test]
fn fashion_mnist_sizes_and_balanced_labels() {
    let spec = fashion();
    for (split, n) in [(Split::Train, 60_000), (Split::Val, 10_000)] {
        let ds = data::open(&spec, split).unwrap();
        assert_eq!(ds.len(), n);
        assert_eq!(ds.classes()[0], "T-shirt/top");
        assert_eq!(ds.classes()[9], "Ankle boot");
        assert_eq!(ds.image_shape(), Some((28, 28, 1)));
        let mut hist = [0usize; 10];
        for i in 0..ds.len() {
            hist[ds.label(i).unwrap()] += 1;
        }
        assert_eq!(hist, [n / 10; 10], "{split:?}");
        let s = ds.get(0).unwrap();
        assert_eq!(
            (s.image.width, s.image.height, s.image.channels),
            (28, 28, 1)
        );
    }
    let mut sub = spec.clone();
    sub.limit = Some(1000);
    let a = data::open(&sub, Split::Train).unwrap();
    let b = data::open(&sub, Split::Train).unwrap();
    assert_eq!(a.len(), 1000);
    assert_eq!(
        a.get(500).unwrap(),
        b.get(500).unwrap(),
        "a limit selects the same subset every time"
    );
}

fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn write_idx_set(dir: &Path, gz: bool, n: u32, images: &[u8], labels: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    for prefix in ["train", "t10k"] {
        for (name, bytes) in [
            (
                format!("{prefix}-images-idx3-ubyte"),
                idx_bytes(&[n, 3, 4], images),
            ),
            (
                format!("{prefix}-labels-idx1-ubyte"),
                idx_bytes(&[n], labels),
            ),
        ] {
            if gz {
                let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
                let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
                e.write_all(&bytes).unwrap();
                e.finish().unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

#[test]
fn idx_raw_and_gz_read_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 5u32;
    let images: Vec<u8> = (0..n * 12).map(|v| (v * 7 % 256) as u8).collect();
    let labels = [0u8, 3, 1, 3, 2];
    write_idx_set(&tmp.path().join("raw"), false, n, &images, &labels);
    write_idx_set(&tmp.path().join("gz"), true, n, &images, &labels);
    let raw = data::open(
        &DatasetSpec::new(DatasetKind::Idx, tmp.path().join("raw")),
        Split::Train,
    )
    .unwrap();
    let gz = data::open(
        &DatasetSpec::new(DatasetKind::Idx, tmp.path().join("gz")),
        Split::Val,
    )
    .unwrap();
    assert_eq!(raw.len(), 5);
    assert_eq!(raw.classes(), ["0", "1", "2", "3"]);
    assert_eq!(raw.image_shape(), Some((4, 3, 1)));
    for i in 0..5 {
        assert_eq!(raw.get(i).unwrap(), gz.get(i).unwrap());
    }
    let s = raw.get(1).unwrap();
    assert_eq!(s.label, 3);
    assert_eq!(s.image.data, images[12..24]);

    // A truncated file is an error that names it.
    let bad = tmp.path().join("bad");
    write_idx_set(&bad, false, n, &images[..30], &labels);
    let err = data::open(&DatasetSpec::new(DatasetKind::Mnist, &bad), Split::Train)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );

    // Zero-sized images and dimensions whose product overflows are refused, not panics.
    let hostile = tmp.path().join("hostile");
    std::fs::create_dir_all(&hostile).unwrap();
    let images_file = hostile.join("train-images-idx3-ubyte");
    std::fs::write(
        hostile.join("train-labels-idx1-ubyte"),
        idx_bytes(&[2], &[0, 1]),
    )
    .unwrap();
    let open = || {
        data::open(&DatasetSpec::new(DatasetKind::Idx, &hostile), Split::Train)
            .err()
            .unwrap()
            .to_string()
    };
    std::fs::write(&images_file, idx_bytes(&[2, 0, 4], &[])).unwrap();
    assert_eq!(
        open(),
        format!(
            "{}: malformed file: images must be 3-d (N,H,W) with H, W ≥ 1, found [2, 0, 4]",
            images_file.display()
        )
    );
    std::fs::write(
        &images_file,
        idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[1, 2]),
    )
    .unwrap();
    assert_eq!(
        open(),
        format!(
            "{}: malformed file: dims [4294967295, 4294967295, 4294967295] overflow",
            images_file.display()
        )
    );
}

fn cifar_record(labels: &[u8], seed: u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    for plane in 0..3u8 {
        r.extend((0..1024u32).map(|p| (p as u8).wrapping_mul(seed).wrapping_add(plane * 50)));
    }
    r
}

#[test]
fn cifar_binary_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    for b in 1..=5u8 {
        let recs: Vec<u8> = (0..2)
            .flat_map(|i| cifar_record(&[b + i], b * 2 + i))
            .collect();
        std::fs::write(d.join(format!("data_batch_{b}.bin")), recs).unwrap();
    }
    std::fs::write(
        d.join("test_batch.bin"),
        [cifar_record(&[9], 3), cifar_record(&[0], 5)].concat(),
    )
    .unwrap();
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    std::fs::write(d.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();

    // The parent directory works too: files are found in cifar-10-batches-bin/.
    let spec = DatasetSpec::new(DatasetKind::Cifar10, tmp.path());
    let train = data::open(&spec, Split::Train).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.classes(), names);
    assert_eq!(
        (0..10).map(|i| train.label(i).unwrap()).collect::<Vec<_>>(),
        [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    );
    let val = data::open(&spec, Split::Val).unwrap();
    let s = val.get(0).unwrap();
    assert_eq!(
        (s.label, s.image.width, s.image.height, s.image.channels),
        (9, 32, 32, 3)
    );
    // Planes become interleaved RGB: pixel p of plane k is (p * seed + 50 k).
    let p = 33usize;
    assert_eq!(s.image.px(1, 1, 0), (p as u8).wrapping_mul(3));
    assert_eq!(
        s.image.px(1, 1, 2),
        (p as u8).wrapping_mul(3).wrapping_add(100)
    );

    // CIFAR-100: coarse then fine label byte.
    let c = tmp.path().join("c100");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("train.bin"),
        [cifar_record(&[4, 71], 1), cifar_record(&[19, 99], 2)].concat(),
    )
    .unwrap();
    std::fs::write(c.join("test.bin"), cifar_record(&[0, 5], 1)).unwrap();
    let fine: Vec<String> = (0..100).map(|i| format!("fine{i}")).collect();
    std::fs::write(c.join("fine_label_names.txt"), fine.join("\n")).unwrap();
    let mut spec = DatasetSpec::new(DatasetKind::Cifar100, &c);
    let t = data::open(&spec, Split::Train).unwrap();
    assert_eq!(
        (t.num_classes(), t.label(0).unwrap(), t.label(1).unwrap()),
        (100, 71, 99)
    );
    assert_eq!(t.classes()[71], "fine71");
    spec.coarse_labels = true;
    let t = data::open(&spec, Split::Train).unwrap();
    assert_eq!(
        (t.num_classes(), t.label(0).unwrap(), t.label(1).unwrap()),
        (20, 4, 19)
    );

    // A truncated record is an error naming the file.
    std::fs::write(c.join("test.bin"), &cifar_record(&[0, 5], 1)[..100]).unwrap();
    let err = data::open(&spec, Split::Val).err().unwrap().to_string();
    assert!(err.contains("test.bin"), "{err}");
}

fn save_png(path: &Path, w: u32, h: u32, v: u8) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, (x * 10) as u8, (y * 10) as u8]))
        .save(path)
        .unwrap();
}

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 128]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// train/{cat,dog} with 3 good images each plus a corrupt and a truncated file under cat.
fn folder_dataset(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    for split in ["train", "val"] {
        for (ci, class) in ["cat", "dog"].iter().enumerate() {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            save_png(&d.join("a.png"), 40, 30, ci as u8 * 100);
            std::fs::write(d.join("b.jpg"), jpeg_bytes(30, 40)).unwrap();
            std::fs::write(d.join("c.JPEG"), jpeg_bytes(50, 50)).unwrap();
            std::fs::write(d.join("notes.txt"), "not an image, ignored").unwrap();
        }
    }
    let corrupt = root.join("train/cat/corrupt.jpg");
    std::fs::write(&corrupt, b"this is not a jpeg at all").unwrap();
    let truncated = root.join("train/cat/truncated.jpg");
    let j = jpeg_bytes(64, 64);
    std::fs::write(&truncated, &j[..j.len() / 2]).unwrap();
    (corrupt, truncated)
}

#[test]
fn folder_dataset_skips_and_counts_bad_files_or_fails_in_strict_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let (corrupt, truncated) = folder_dataset(tmp.path());
    let spec = DatasetSpec::new(DatasetKind::Folder, tmp.path());
    let ds = Arc::new(data::open(&spec, Split::Train).unwrap());
    assert_eq!(ds.classes(), ["cat", "dog"]);
    assert_eq!(ds.len(), 8);
    assert_eq!(data::open(&spec, Split::Val).unwrap().len(), 6);
    let err = ds.get(3).expect_err("the corrupt file sorts fourth");
    assert!(
        matches!(err, DataError::Decode { .. }) && err.to_string().contains("corrupt.jpg"),
        "{err}"
    );
    let err = (0..ds.len())
        .filter_map(|i| ds.get(i).err())
        .map(|e| e.to_string())
        .collect::<Vec<_>>();
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(err[1].contains("truncated.jpg"), "{err:?}");

    let pre = Preprocess::imagenet(32);
    let cfg = LoaderConfig {
        batch_size: 3,
        workers: 2,
        drop_last: false,
        ..LoaderConfig::default()
    };
    let loader = Loader::train(
        ds.clone(),
        &pre,
        &AugmentConfig::imagenet(),
        Some(&MixupConfig::default()),
        0.1,
        cfg.clone(),
    )
    .unwrap();
    let batches: Vec<_> = loader
        .epoch(0, 0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(batches.len(), 3);
    assert_eq!(
        batches.iter().map(|b| b.len()).sum::<usize>(),
        8,
        "bad files are replaced, batches stay full"
    );
    for b in &batches {
        assert_eq!(b.images.size()[1..], [3, 32, 32]);
        assert!(b.samples.iter().all(|&i| ds.get(i).is_ok()));
    }
    let stats = loader.stats();
    assert_eq!(stats.skipped, 2);
    assert_eq!(stats.images, 8);
    let skipped = loader.skipped();
    assert!(
        skipped[0].contains(&*corrupt.to_string_lossy())
            && skipped[1].contains(&*truncated.to_string_lossy())
    );

    let mut strict = spec.clone();
    strict.strict = true;
    let ds = Arc::new(data::open(&strict, Split::Train).unwrap());
    let loader = Loader::new(
        ds,
        Transform::eval(&pre),
        None,
        LoaderConfig {
            shuffle: false,
            ..cfg
        },
    )
    .unwrap();
    let res: Result<Vec<_>, _> = loader.epoch(0, 0).unwrap().collect();
    let err = res.err().expect("strict mode stops").to_string();
    assert!(err.contains(&*corrupt.to_string_lossy()), "{err}");
}

#[test]
fn missing_dataset_shows_expected_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let nowhere = tmp.path().join("nowhere");
    let err = data::open(
        &DatasetSpec::new(DatasetKind::Folder, &nowhere),
        Split::Train,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("train/<class>/") && err.contains("nowhere"),
        "{err}"
    );
    let err = data::open(
        &DatasetSpec::new(DatasetKind::FashionMnist, tmp.path()),
        Split::Train,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("train-images-idx3-ubyte[.gz]"), "{err}");
    let err = data::open(
        &DatasetSpec::new(DatasetKind::Cifar10, tmp.path()),
        Split::Val,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("data_batch_1.bin") && err.contains("test_batch.bin"),
        "{err}"
    );
    std::fs::create_dir_all(tmp.path().join("train/empty")).unwrap();
    let err = data::open(
        &DatasetSpec::new(DatasetKind::Folder, tmp.path()),
        Split::Val,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no `val/` folder"), "{err}");
}

#[test]
fn spec_and_configs_deserialize_from_toml() {
    let spec: DatasetSpec =
        toml::from_str("kind = \"fashion-mnist\"\npath = \"/d\"\nlimit = 500\nstrict = true")
            .unwrap();
    assert_eq!(
        (spec.kind, spec.limit, spec.strict),
        (DatasetKind::FashionMnist, Some(500), true)
    );
    assert!(toml::from_str::<DatasetSpec>("kind = \"imagenet\"\npath = \"/d\"").is_err());
    let aug: AugmentConfig = toml::from_str("crop_padding = 2\nhflip = 0.5").unwrap();
    assert_eq!(aug, AugmentConfig::proxy());
    let aug: AugmentConfig =
        toml::from_str("hflip = 0.5\nrand_augment = \"rand-m9-mstd0.5-inc1\"\nrandom_erasing = 0.25\n[random_resized_crop]").unwrap();
    assert_eq!(aug, AugmentConfig::imagenet());
    let m: MixupConfig = toml::from_str("cutmix_alpha = 0.0").unwrap();
    assert_eq!((m.mixup_alpha, m.cutmix_alpha), (0.8, 0.0));
}

// ---------------------------------------------------------------- transforms

fn gradient(w: usize, h: usize, c: usize) -> Image {
    Image::new(
        w,
        h,
        c,
        (0..w * h * c).map(|i| (i * 37 % 251) as u8).collect(),
    )
}

#[test]
fn eval_transform_matches_hand_computation() {
    // crop_pct 1, shorter side already the input size: no resize, centre crop offset
    // round((5 - 2) / 2) = round(1.5) = 2 (Python rounds half to even).
    let pre = Preprocess {
        input_size: [2, 2],
        channels: 1,
        crop_pct: 1.0,
        interpolation: Interpolation::Bilinear,
        mean: vec![0.25],
        std: vec![0.5],
    };
    let img = Image::new(5, 2, 1, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
    let t = Transform::eval(&pre);
    let mut out = vec![0f32; 4];
    t.apply(img, &mut rng(0), &mut out).unwrap();
    let expect: Vec<f32> = [20u8, 30, 70, 80]
        .iter()
        .map(|&v| (v as f32 / 255.0 - 0.25) / 0.5)
        .collect();
    assert_eq!(out, expect);

    // ImageNet 224: shorter side to 256 (torchvision keeps int(256 * 400 / 300) = 341), crop 224.
    let pre = Preprocess::imagenet(224);
    assert_eq!(pre.resize_size(), 256);
    let flat = Image::filled(400, 300, 3, 200);
    let r = ops::resize_shorter(&flat, 256, pre.interpolation);
    assert_eq!((r.width, r.height), (341, 256));
    let t = Transform::eval(&pre);
    let u = t.apply_u8(flat.clone(), &mut rng(0)).unwrap();
    // An image the eval geometry cannot take is an error, not a panic in a loader thread.
    let e = t
        .apply_u8(Image::filled(0, 5, 3, 0), &mut rng(0))
        .unwrap_err();
    assert_eq!(e.to_string(), "the image has no pixels (0×5)");
    assert_eq!((u.width, u.height, u.channels), (224, 224, 3));
    assert!(
        u.data.iter().all(|&v| v == 200),
        "a flat image stays flat through resize and crop"
    );
    let mut out = vec![0f32; 3 * 224 * 224];
    t.apply(flat, &mut rng(0), &mut out).unwrap();
    for c in 0..3 {
        let want = (200.0 / 255.0 - pre.mean[c]) / pre.std[c];
        assert!(out[c * 224 * 224..(c + 1) * 224 * 224]
            .iter()
            .all(|&v| (v - want).abs() < 1e-6));
    }

    // A grey image for an RGB model is replicated; an RGB image for a grey model uses PIL luma.
    let g = ops::to_channels(Image::new(1, 1, 1, vec![77]), 3);
    assert_eq!(g.data, [77, 77, 77]);
    let l = ops::to_channels(Image::new(1, 1, 3, vec![255, 0, 0]), 1);
    assert_eq!(l.data, [76]); // PIL: L = R * 299/1000 + ...
}

#[test]
fn random_resized_crop_follows_timm_including_fallback() {
    let cfg = RrcConfig::default();
    let mut r = rng(3);
    for _ in 0..200 {
        let (x, y, w, h) = transform::rrc_params(120, 80, &cfg, &mut r);
        assert!(x + w <= 120 && y + h <= 80 && w > 0 && h > 0);
        let ratio = w as f64 / h as f64;
        assert!(ratio > 0.7 && ratio < 1.45, "{ratio}");
    }
    // 100x1 can never hold a crop with ratio <= 4/3 of >= 99% area: centre-crop fallback.
    let narrow = RrcConfig {
        scale: [0.99, 1.0],
        ratio: [0.75, 4.0 / 3.0],
    };
    assert_eq!(
        transform::rrc_params(100, 1, &narrow, &mut r),
        (49, 0, 1, 1)
    );
}

#[test]
fn randaugment_ops_keep_shapes_and_match_pil_arithmetic() {
    let ra = RandAugment::parse(
        "rand-m9-mstd0.5-inc1",
        vec![124, 116, 104],
        Interpolation::Bicubic,
    )
    .unwrap();
    assert_eq!(
        (ra.num_ops, ra.magnitude, ra.magnitude_std, ra.prob),
        (2, 9.0, 0.5, 0.5)
    );
    assert_eq!(ra.ops, randaug::INCREASING);
    assert!(RandAugment::parse("rand-m9-x3", vec![0], Interpolation::Bilinear).is_err());
    assert!(RandAugment::parse("augmix-m9", vec![0], Interpolation::Bilinear).is_err());
    let gray = RandAugment {
        fill: vec![73],
        ..ra.clone()
    };
    for op in randaug::INCREASING {
        for (img, ra) in [(gradient(33, 21, 3), &ra), (gradient(28, 28, 1), &gray)] {
            let out = ra.apply_op(op, img.clone(), 9.0, &mut rng(1));
            assert_eq!(
                (out.width, out.height, out.channels),
                (img.width, img.height, img.channels),
                "{op:?}"
            );
        }
    }
    // Hand-checked against PIL's definitions.
    let img = Image::new(4, 1, 1, vec![10, 100, 200, 250]);
    let at = |op, m| ra.apply_op(op, img.clone(), m, &mut rng(0)).data;
    assert_eq!(at(randaug::Op::Invert, 0.0), [245, 155, 55, 5]);
    assert_eq!(at(randaug::Op::AutoContrast, 0.0), [0, 95, 201, 255]); // int(i*255/240 - 10*255/240)
    assert_eq!(at(randaug::Op::PosterizeIncreasing, 10.0), [0, 0, 0, 0]); // 0 bits kept
    assert_eq!(at(randaug::Op::PosterizeIncreasing, 5.0), [0, 64, 192, 192]); // 2 bits kept
    assert_eq!(at(randaug::Op::SolarizeIncreasing, 5.0), [10, 100, 55, 5]); // threshold 128
    assert_eq!(at(randaug::Op::SolarizeAdd, 10.0), [120, 210, 200, 250]); // +110 below 128
                                                                          // Rotating by a magnitude of 0 is the identity; a full shear moves pixels and fills with the mean.
    let g = gradient(16, 16, 3);
    assert_eq!(
        ra.apply_op(randaug::Op::Rotate, g.clone(), 0.0, &mut rng(0)),
        g
    );
    let sheared = ra.apply_op(randaug::Op::TranslateXRel, g.clone(), 10.0, &mut rng(0));
    assert!(sheared.data.chunks(3).any(|p| p == [124, 116, 104]));

    // Equalize of a two-level image spreads it to the extremes.
    let mut two = Image::new(510, 1, 1, [vec![50; 255], vec![60; 255]].concat());
    ops::equalize(&mut two);
    assert_eq!((two.data[0], two.data[509]), (0, 255)); // step (510 - 255) // 255 = 1
    let mut few = Image::new(4, 1, 1, vec![50, 50, 60, 60]);
    ops::equalize(&mut few);
    assert_eq!(few.data, [50, 50, 60, 60]); // step 0: PIL leaves it unchanged
}

#[test]
fn random_erasing_changes_a_box_only() {
    let (c, h, w) = (3, 20, 24);
    let mut x = vec![0.5f32; c * h * w];
    let mut erased = false;
    for s in 0..10 {
        x.fill(0.5);
        if transform::random_erase(&mut x, c, h, w, 1.0, &mut rng(s)) {
            erased = true;
            let changed = x.iter().filter(|&&v| v != 0.5).count();
            assert!(
                changed > 0 && changed < c * h * w / 3 + c * 4 * w,
                "{changed}"
            );
        }
    }
    assert!(erased);
    x.fill(0.5);
    assert!(!transform::random_erase(&mut x, c, h, w, 0.0, &mut rng(1)));
    assert!(x.iter().all(|&v| v == 0.5));
}

#[test]
fn mixup_and_cutmix_soft_targets() {
    let (b, c, h, w, k) = (4usize, 1usize, 10usize, 10usize, 5usize);
    let labels = [0i64, 1, 2, 3];
    let base: Vec<f32> = (0..b).flat_map(|i| vec![i as f32; c * h * w]).collect();
    let mut seen = (false, false);
    for seed in 0..40 {
        let m = MixupConfig::default().with_classes(k, 0.1);
        let mut x = base.clone();
        let out = m.apply(&mut x, [b, c, h, w], &labels, &mut rng(seed));
        for row in out.targets.chunks(k) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // The original label's weight: lam * (0.9 + 0.02) + (1 - lam) * 0.02.
        let want = out.lam * 0.92 + (1.0 - out.lam) * 0.02;
        assert!((out.targets[0] as f64 - want).abs() < 1e-5);
        match out.cutmix_box {
            Some((y0, y1, x0, x1)) => {
                seen.0 = true;
                let area = ((y1 - y0) * (x1 - x0)) as f64;
                assert!(
                    (out.lam - (1.0 - area / (h * w) as f64)).abs() < 1e-12,
                    "lam is corrected by the clipped box"
                );
                // Sample 0 holds sample 3's pixels inside the box, its own outside.
                let s0 = &x[..h * w];
                let inside = s0.iter().filter(|&&v| v == 3.0).count();
                assert_eq!(inside as f64, area);
                assert_eq!(
                    s0.iter().filter(|&&v| v == 0.0).count() as f64,
                    (h * w) as f64 - area
                );
            }
            None => {
                seen.1 = true;
                let want = out.lam as f32 * 1.0 + (1.0 - out.lam as f32) * 2.0; // sample 1 mixes with 2
                assert!(x[h * w..2 * h * w].iter().all(|&v| (v - want).abs() < 1e-5));
            }
        }
    }
    assert!(seen.0 && seen.1, "both CutMix and Mixup were drawn");
    let t = mixup::soft_targets(&[1, 0], 2, 1.0, 0.0);
    assert_eq!(t, [0.0, 1.0, 1.0, 0.0]);
}

// ---------------------------------------------------------------- loader

fn collect(loader: &Loader, epoch: usize, start: usize) -> Vec<data::Batch> {
    loader
        .epoch(epoch, start)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn assert_same_batches(a: &[data::Batch], b: &[data::Batch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.index, &x.samples, x.lam), (y.index, &y.samples, y.lam));
        assert!(same(&x.images, &y.images), "images of batch {}", x.index);
        assert!(same(&x.labels, &y.labels));
        match (&x.targets, &y.targets) {
            (Some(p), Some(q)) => assert!(same(p, q)),
            (None, None) => {}
            _ => panic!("targets differ"),
        }
    }
}

#[test]
fn loader_is_deterministic_across_worker_counts_and_resumable() {
    let mut spec = fashion();
    spec.limit = Some(700);
    let ds = Arc::new(data::open(&spec, Split::Train).unwrap());
    let pre = Preprocess::fashion_mnist();
    let mk = |workers| {
        let cfg = LoaderConfig {
            batch_size: 64,
            workers,
            prefetch: 2,
            seed: 7,
            ..LoaderConfig::default()
        };
        let aug = AugmentConfig {
            rand_augment: Some("rand-m9-mstd0.5-inc1".into()),
            random_erasing: 0.25,
            ..AugmentConfig::proxy()
        };
        Loader::train(
            ds.clone(),
            &pre,
            &aug,
            Some(&MixupConfig::default()),
            0.1,
            cfg,
        )
        .unwrap()
    };
    let (one, three) = (mk(1), mk(3));
    assert_eq!(one.batches_per_epoch(), 10, "drop_last");
    let a = collect(&one, 1, 0);
    let b = collect(&three, 1, 0);
    assert_same_batches(&a, &b);
    for batch in &a {
        assert_eq!(batch.images.size(), [64, 1, 28, 28]);
        assert_eq!(batch.images.kind(), Kind::Float);
        assert_eq!(batch.targets.as_ref().unwrap().size(), [64, 10]);
        let labels: Vec<i64> = Vec::try_from(&batch.labels).unwrap();
        let truth: Vec<i64> = batch
            .samples
            .iter()
            .map(|&i| ds.label(i).unwrap() as i64)
            .collect();
        assert_eq!(labels, truth, "augmentation never changes labels");
    }
    // Another epoch is a different permutation.
    let c = collect(&one, 2, 0);
    assert_ne!(a[0].samples, c[0].samples);

    // Mid-epoch resume gives exactly the tail of the uninterrupted epoch.
    let mut it = three.epoch(1, 0).unwrap();
    for _ in 0..4 {
        it.next().unwrap().unwrap();
    }
    let state = it.state();
    assert_eq!(
        state,
        data::LoaderState {
            epoch: 1,
            next_batch: 4
        }
    );
    drop(it);
    let tail: Vec<_> = three
        .resume(state)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_same_batches(&tail, &a[4..]);
    let mut it = one.epoch(1, 9).unwrap();
    assert!(it.next().is_some() && it.next().is_none());
    assert_eq!(
        it.state(),
        data::LoaderState {
            epoch: 2,
            next_batch: 0
        }
    );
    let st = it.stats();
    assert_eq!((st.batches, st.images), (1, 64));
    assert!(one.epoch(1, 11).is_err());
    let total = one.stats();
    assert_eq!(total.images, 64 * 21);
    assert!(total.images_per_sec() > 0.0 && total.wait_share() <= 1.0);
}

#[test]
fn eval_loader_keeps_order_and_every_sample() {
    let tmp = tempfile::tempdir().unwrap();
    data::synthetic::write_jpeg_folder(tmp.path(), 3, 2, 3, 48, 40, 1).unwrap();
    let ds = Arc::new(
        data::open(
            &DatasetSpec::new(DatasetKind::Folder, tmp.path()),
            Split::Val,
        )
        .unwrap(),
    );
    let pre = Preprocess::imagenet(32);
    let loader = Loader::eval(ds.clone(), &pre, 4, 2).unwrap();
    let batches = collect(&loader, 0, 0);
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        [4, 4, 1]
    );
    assert_eq!(
        batches
            .iter()
            .flat_map(|b| b.samples.clone())
            .collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    assert!(batches.iter().all(|b| b.targets.is_none()));
    // Same pixels as the transform applied by hand.
    let t = Transform::eval(&pre);
    let mut out = vec![0f32; 3 * 32 * 32];
    t.apply(ds.get(5).unwrap().image, &mut rng(0), &mut out)
        .unwrap();
    assert!(same(
        &batches[1].images.get(1).flatten(0, -1),
        &Tensor::from_slice(&out)
    ));
}

// ---------------------------------------------------------------- cluttered proxy

#[test]
fn cluttered_fashion_mnist_places_items_on_a_canvas() {
    let mut spec = fashion();
    spec.kind = DatasetKind::ClutteredFashionMnist;
    spec.val_limit = Some(50);
    spec.canvas = Some(72);
    let val = data::open(&spec, Split::Val).unwrap();
    let plain = data::open(
        &DatasetSpec {
            kind: DatasetKind::FashionMnist,
            canvas: None,
            ..spec.clone()
        },
        Split::Val,
    )
    .unwrap();
    assert_eq!(val.image_shape(), Some((72, 72, 1)));
    assert_eq!((val.len(), val.classes()), (50, plain.classes()));
    for i in 0..val.len() {
        let (c, p) = (val.get(i).unwrap(), plain.get(i).unwrap());
        assert_eq!(c.label, p.label);
        // The item's own pixels are all on the canvas (max-blended over clutter).
        let item_mass: u64 = p.image.data.iter().map(|&v| v as u64).sum();
        let canvas_mass: u64 = c.image.data.iter().map(|&v| v as u64).sum();
        assert!(canvas_mass >= item_mass, "sample {i}");
    }
    spec.kind = DatasetKind::FashionMnist;
    let e = data::open(&spec, Split::Val).err().unwrap().to_string();
    assert_eq!(
        e,
        "data config: `canvas` and `clutter` apply only to kind = \"cluttered-fashion-mnist\""
    );
}

#[test]
fn dataset_summary_gives_images_per_class_and_split() {
    let tmp = tempfile::tempdir().unwrap();
    data::synthetic::write_jpeg_folder(tmp.path(), 2, 3, 1, 16, 16, 1).unwrap();
    std::fs::remove_file(tmp.path().join("val/class_01/img_0000.jpg")).unwrap();
    let spec = DatasetSpec::new(DatasetKind::Folder, tmp.path());
    let train = data::open(&spec, Split::Train).unwrap();
    let val = data::open(&spec, Split::Val).unwrap();
    assert_eq!(train.class_counts(), [3, 3]);
    assert_eq!(
        data::summary(&train, &val),
        "dataset folder/train: 6 images, folder/val: 1 images, 2 classes\n  \
         class_00  train 3  val 1\n  class_01  train 3  val 0\n  \
         no validation image of 1 class(es): class_01"
    );
}

// ---------------------------------------------------------------- own folders

/// A folder of class folders without train/ and val/: `classes` classes of `per_class` JPEGs.
fn unsplit_folder(root: &Path, classes: usize, per_class: usize) {
    let made = root.join("made");
    data::synthetic::write_jpeg_folder(&made, classes, per_class, 0, 16, 16, 7).unwrap();
    for e in std::fs::read_dir(made.join("train")).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), root.join(e.file_name())).unwrap();
    }
    std::fs::remove_dir_all(made).unwrap();
}

fn paths(ds: &data::Dataset) -> Vec<std::path::PathBuf> {
    (0..ds.len())
        .map(|i| ds.path(i).unwrap().to_path_buf())
        .collect()
}

#[test]
fn val_fraction_splits_each_class_by_path_and_adding_files_moves_none() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    std::fs::create_dir_all(&root).unwrap();
    unsplit_folder(&root, 3, 40);
    let mut spec = DatasetSpec::new(DatasetKind::Folder, &root);
    spec.val_fraction = Some(0.25);
    let train = data::open(&spec, Split::Train).unwrap();
    let val = data::open(&spec, Split::Val).unwrap();
    assert_eq!(train.len() + val.len(), 120);
    assert_eq!(train.classes(), val.classes());
    let (t, v) = (paths(&train), paths(&val));
    assert!(t.iter().all(|p| !v.contains(p)), "a file in both splits");
    // Every class gets its share (10 expected of 40).
    for c in val.class_counts() {
        assert!((4..=18).contains(&c), "{:?}", val.class_counts());
    }
    // Stable: files added later take their own split and leave the others where they were.
    let class0 = root.join(&train.classes()[0]);
    let first = std::fs::read_dir(&class0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for k in 0..20 {
        std::fs::copy(&first, class0.join(format!("added_{k}.jpg"))).unwrap();
    }
    let val2 = paths(&data::open(&spec, Split::Val).unwrap());
    let train2 = paths(&data::open(&spec, Split::Train).unwrap());
    assert!(v.iter().all(|p| val2.contains(p)) && t.iter().all(|p| train2.contains(p)));
    assert_eq!(val2.len() + train2.len(), 140);

    // A folder already split, or a fraction out of range, is refused with the reason.
    let split = tmp.path().join("split");
    data::synthetic::write_jpeg_folder(&split, 2, 2, 1, 16, 16, 1).unwrap();
    let mut s = DatasetSpec::new(DatasetKind::Folder, &split);
    s.val_fraction = Some(0.2);
    let err = data::open(&s, Split::Train).err().unwrap().to_string();
    assert!(
        err.contains("has a `train/` folder, so it is split already"),
        "{err}"
    );
    spec.val_fraction = Some(1.0);
    let err = data::open(&spec, Split::Train).err().unwrap().to_string();
    assert!(
        err.contains("data.dataset.val_fraction must be in (0, 1), found 1"),
        "{err}"
    );
}

#[test]
fn balanced_sampling_draws_every_class_about_equally_and_imbalance_is_warned() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    data::synthetic::write_jpeg_folder(&root, 2, 60, 1, 16, 16, 3).unwrap();
    // Leave class 1 with 6 images: 10x fewer than class 0.
    let small = root.join("train/class_01");
    let mut files: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files[6..] {
        std::fs::remove_file(f).unwrap();
    }
    let ds =
        Arc::new(data::open(&DatasetSpec::new(DatasetKind::Folder, &root), Split::Train).unwrap());
    assert_eq!(ds.class_counts(), [60, 6]);
    let w = data::imbalance_warning(&ds, false).unwrap();
    assert_eq!(w, "warning: classes are imbalanced: `class_00` has 60 train images, `class_01` 6 (10.0x); data.balanced_sampling = true draws every class equally often");
    assert!(data::imbalance_warning(&ds, true).is_none());
    let pre = Preprocess::imagenet(16);
    let loader = |balanced| {
        Loader::new(
            ds.clone(),
            Transform::eval(&pre),
            None,
            LoaderConfig {
                balanced,
                ..LoaderConfig::train(8, 0)
            },
        )
        .unwrap()
    };
    let share = |l: &Loader| {
        let picks: Vec<usize> = (0..20).flat_map(|e| l.order(e)).collect();
        picks.iter().filter(|&&i| ds.label(i).unwrap() == 1).count() as f64 / picks.len() as f64
    };
    let (plain, balanced) = (share(&loader(false)), share(&loader(true)));
    assert!((plain - 6.0 / 66.0).abs() < 1e-9, "{plain}");
    assert!((balanced - 0.5).abs() < 0.06, "{balanced}");
    // Deterministic per (seed, epoch), as the plain shuffle.
    assert_eq!(loader(true).order(3), loader(true).order(3));
}

#[test]
fn a_class_subset_is_relabelled_and_a_per_class_limit_takes_the_same_samples_every_time() {
    let mut spec = fashion();
    spec.class_subset = Some(vec![5, 6, 7, 8, 9]);
    spec.per_class_limit = Some(10);
    let ds = data::open(&spec, Split::Train).unwrap();
    assert_eq!(ds.classes()[0], "Sandal");
    assert_eq!(ds.classes()[4], "Ankle boot");
    assert_eq!(ds.class_counts(), [10; 5]);
    let again = data::open(&spec, Split::Train).unwrap();
    assert_eq!(ds.fingerprint(), again.fingerprint());
    // The validation split stays whole (its own val_limit applies).
    assert_eq!(data::open(&spec, Split::Val).unwrap().len(), 5_000);
    // Pixels travel with their relabelled samples: the first kept one is the source's first of
    // classes 5..=9, its label less 5.
    let full = data::open(&fashion(), Split::Train).unwrap();
    let first = (0..full.len())
        .find(|&i| full.label(i).unwrap() >= 5)
        .unwrap();
    let mut all = fashion();
    all.class_subset = Some(vec![5, 6, 7, 8, 9]);
    let kept = data::open(&all, Split::Train).unwrap();
    assert_eq!(kept.get(0).unwrap().image, full.get(first).unwrap().image);
    assert_eq!(kept.get(0).unwrap().label, full.label(first).unwrap() - 5);
    assert_eq!(kept.len(), 30_000);

    spec.class_subset = Some(vec![5, 10]);
    let err = data::open(&spec, Split::Train).err().unwrap().to_string();
    assert!(
        err.contains("class_subset names class 10, but the dataset has 10 classes (0..9)"),
        "{err}"
    );
    spec.class_subset = Some(vec![1]);
    spec.limit = Some(5);
    let err = data::open(&spec, Split::Train).err().unwrap().to_string();
    assert!(
        err.contains("`per_class_limit` and `limit` exclude each other"),
        "{err}"
    );
}

// ---------------------------------------------------------------- DCT-scaled decoding

/// The loader decodes large JPEGs at the DCT scale its random-resized crops need: the batches
/// match those from the same pictures stored as PNG (decoded in full), crop for crop.
#[test]
fn large_jpegs_train_from_a_dct_scaled_decode_with_the_same_crops() {
    let tmp = tempfile::tempdir().unwrap();
    let (jpeg, png) = (tmp.path().join("jpeg"), tmp.path().join("png"));
    data::synthetic::write_jpeg_folder(&jpeg, 2, 4, 0, 960, 720, 5).unwrap();
    for entry in walkdir(&jpeg.join("train")) {
        let out = png
            .join(entry.strip_prefix(&jpeg).unwrap())
            .with_extension("png");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        // The full decode the PNG twin keeps (JPEG loss included).
        image::open(&entry).unwrap().save(&out).unwrap();
    }
    let pre = Preprocess::imagenet(64);
    let aug = AugmentConfig {
        random_resized_crop: Some(RrcConfig::default()),
        ..AugmentConfig::default()
    };
    let batches = |root: &Path| {
        let ds = Arc::new(
            data::open(&DatasetSpec::new(DatasetKind::Folder, root), Split::Train).unwrap(),
        );
        let cfg = LoaderConfig {
            batch_size: 8,
            workers: 1,
            ..LoaderConfig::default()
        };
        let loader = Loader::train(ds, &pre, &aug, None, 0.0, cfg).unwrap();
        collect(&loader, 0, 0).remove(0)
    };
    let (from_jpeg, from_png) = (batches(&jpeg), batches(&png));
    assert_eq!(from_jpeg.samples, from_png.samples);
    // Normalized units (std ≈ 0.23 of the 0–255 range): 0.15 is ≈ 9 grey levels. These
    // sinusoids reach 0.4 cycles/pixel at the reduced scale, so the DCT's box-like filter and
    // the full decode's resize differ more than on photos (measured 0.10).
    let gap = (&from_jpeg.images - &from_png.images)
        .abs()
        .mean(Kind::Float)
        .double_value(&[]);
    // Not zero: a full decode of the JPEG would equal its PNG twin bit for bit.
    assert!(gap > 0.0 && gap < 0.15, "mean |difference| {gap}");
    // Another crop of the same pictures is far off (measured 1.23): the crops agree.
    let shifted = (&from_jpeg.images - &from_png.images.roll([7], [3]))
        .abs()
        .mean(Kind::Float)
        .double_value(&[]);
    assert!(shifted > 8.0 * gap, "shifted {shifted} vs aligned {gap}");
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}
