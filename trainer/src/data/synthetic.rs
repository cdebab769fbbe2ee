//! Synthetic ImageNet-style folders of JPEGs, for benches, tests and smoke runs without data.

use super::{io_err, Result};
use rand::Rng;
use std::path::Path;

/// Writes `root/{train,val}/class_XX/img_YYYY.jpg` of `width`×`height` smooth colour patterns
/// (JPEG quality 90). Returns the number of files written.
pub fn write_jpeg_folder(
    root: &Path,
    classes: usize,
    train_per_class: usize,
    val_per_class: usize,
    width: u32,
    height: u32,
    seed: u64,
) -> Result<usize> {
    let mut rng = super::rng::rng_for(&[seed, 0x5157]);
    let mut n = 0;
    for (split, per) in [("train", train_per_class), ("val", val_per_class)] {
        for c in 0..classes {
            let dir = root.join(split).join(format!("class_{c:02}"));
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            for i in 0..per {
                let (fx, fy, ph): (f32, f32, f32) = (
                    rng.gen_range(0.01..0.1),
                    rng.gen_range(0.01..0.1),
                    rng.gen(),
                );
                let tint = [
                    rng.gen::<f32>(),
                    rng.gen::<f32>(),
                    (c as f32 + 0.5) / classes as f32,
                ];
                let img = image::RgbImage::from_fn(width, height, |x, y| {
                    let v = ((x as f32 * fx + y as f32 * fy + ph * std::f32::consts::TAU).sin()
                        * 0.5
                        + 0.5)
                        * 255.0;
                    image::Rgb(tint.map(|t| (v * (0.3 + 0.7 * t)) as u8))
                });
                let path = dir.join(format!("img_{i:04}.jpg"));
                let file = std::fs::File::create(&path).map_err(io_err(&path))?;
                let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(
                    std::io::BufWriter::new(file),
                    90,
                );
                enc.encode_image(&img)
                    .map_err(|source| super::DataError::Encode {
                        path: path.clone(),
                        source,
                    })?;
                n += 1;
            }
        }
    }
    Ok(n)
}
