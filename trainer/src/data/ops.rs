//! Pixel operations on u8 HWC images, following PIL's arithmetic where timm relies on it
//! (luma weights, enhance blends that truncate, autocontrast/equalize LUTs, affine sampling
//! at pixel centres). Resize, crop, channel conversion and normalization are the shared
//! `lkd_preprocess` functions the runtime serves with; this file only adapts `Image` to them.

use super::Image;
use lkd_models::preprocess::Interpolation;
use lkd_preprocess::{Pixels, View};

pub use lkd_preprocess::luma;

/// Moves the pixels into the shared preprocessing's type (no copy).
pub fn to_pixels(img: Image) -> Pixels {
    Pixels {
        width: img.width,
        height: img.height,
        channels: img.channels,
        data: img.data,
    }
}

pub fn from_pixels(p: Pixels) -> Image {
    Image::new(p.width, p.height, p.channels, p.data)
}

pub fn view(img: &Image) -> View<'_> {
    View {
        width: img.width,
        height: img.height,
        channels: img.channels,
        data: &img.data,
    }
}

/// L → RGB by replication, RGB → L with PIL's `convert("L")` (`lkd_preprocess::to_channels`).
/// Dataset images have 1 or 3 channels and `channels` comes from a validated `Preprocess`.
pub fn to_channels(img: Image, channels: usize) -> Image {
    let (from, to) = (img.channels, channels);
    from_pixels(
        lkd_preprocess::to_channels(to_pixels(img), channels)
            .unwrap_or_else(|e| panic!("channel conversion {from} -> {to}: {e}")),
    )
}

/// PIL's `Image.resize` (antialiased when shrinking), shared with eval and serving.
pub fn resize(img: &Image, w: usize, h: usize, interp: Interpolation) -> Image {
    if img.width == w && img.height == h {
        return img.clone();
    }
    from_pixels(lkd_preprocess::resize(view(img), w, h, interp))
}

/// torchvision `Resize(int)`: shorter side to `size`, longer side `int(size * long / short)`.
pub fn resize_shorter(img: &Image, size: usize, interp: Interpolation) -> Image {
    let (w, h) =
        lkd_preprocess::resized_size(img.width, img.height, size).expect("a non-empty image");
    resize(img, w, h, interp)
}

/// torchvision `CenterCrop` (Python's half-to-even `round` for the offset, zero padding).
pub fn center_crop(img: &Image, w: usize, h: usize) -> Image {
    let (x, y) = (
        lkd_preprocess::center_crop_offset(img.width, w),
        lkd_preprocess::center_crop_offset(img.height, h),
    );
    crop(img, x, y, w, h)
}

/// Crop with top-left (`x`, `y`); the area outside the image is zero (torchvision pads with 0).
pub fn crop(img: &Image, x: isize, y: isize, w: usize, h: usize) -> Image {
    from_pixels(lkd_preprocess::crop(view(img), x, y, w, h))
}

pub fn hflip(img: &mut Image) {
    let c = img.channels;
    let row = img.width * c;
    for r in img.data.chunks_exact_mut(row) {
        for x in 0..img.width / 2 {
            let (a, b) = (x * c, (img.width - 1 - x) * c);
            for k in 0..c {
                r.swap(a + k, b + k);
            }
        }
    }
}

pub fn apply_lut(img: &mut Image, luts: &[[u8; 256]]) {
    let c = img.channels;
    for (i, v) in img.data.iter_mut().enumerate() {
        *v = luts[i % c][*v as usize];
    }
}

fn histograms(img: &Image) -> Vec<[u64; 256]> {
    let c = img.channels;
    let mut h = vec![[0u64; 256]; c];
    for (i, &v) in img.data.iter().enumerate() {
        h[i % c][v as usize] += 1;
    }
    h
}

/// `ImageOps.autocontrast(img)` with cutoff 0, per channel.
pub fn autocontrast(img: &mut Image) {
    let luts: Vec<[u8; 256]> = histograms(img)
        .iter()
        .map(|h| {
            let mut lut = [0u8; 256];
            let lo = h.iter().position(|&n| n > 0).unwrap_or(0);
            let hi = h.iter().rposition(|&n| n > 0).unwrap_or(255);
            for (i, l) in lut.iter_mut().enumerate() {
                *l = if hi <= lo {
                    i as u8
                } else {
                    let scale = 255.0 / (hi - lo) as f64;
                    let v = (i as f64 * scale - lo as f64 * scale) as i64; // int() truncates
                    v.clamp(0, 255) as u8
                };
            }
            lut
        })
        .collect();
    apply_lut(img, &luts);
}

/// `ImageOps.equalize(img)`, per channel.
pub fn equalize(img: &mut Image) {
    let luts: Vec<[u8; 256]> = histograms(img)
        .iter()
        .map(|h| {
            let mut lut = [0u8; 256];
            for (i, l) in lut.iter_mut().enumerate() {
                *l = i as u8;
            }
            let nz: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
            if nz.len() > 1 {
                let step = (nz.iter().sum::<u64>() - nz[nz.len() - 1]) / 255;
                if step > 0 {
                    let mut n = step / 2;
                    for (i, l) in lut.iter_mut().enumerate() {
                        *l = (n / step).min(255) as u8;
                        n += h[i];
                    }
                }
            }
            lut
        })
        .collect();
    apply_lut(img, &luts);
}

pub fn invert(img: &mut Image) {
    img.data.iter_mut().for_each(|v| *v = 255 - *v);
}

pub fn posterize(img: &mut Image, bits: u32) {
    if bits >= 8 {
        return;
    }
    let mask = !((1u32 << (8 - bits)) - 1) as u8;
    img.data.iter_mut().for_each(|v| *v &= mask);
}

pub fn solarize(img: &mut Image, thresh: u32) {
    img.data.iter_mut().for_each(|v| {
        if *v as u32 >= thresh {
            *v = 255 - *v
        }
    });
}

pub fn solarize_add(img: &mut Image, add: i32, thresh: u8) {
    img.data.iter_mut().for_each(|v| {
        if *v < thresh {
            *v = (*v as i32 + add).clamp(0, 255) as u8
        }
    });
}

/// `Image.blend(degenerate, img, factor)`: PIL truncates toward zero after clipping.
fn blend_into(img: &mut Image, degenerate: &[u8], factor: f32) {
    for (v, &d) in img.data.iter_mut().zip(degenerate) {
        let t = d as f32 + factor * (*v as f32 - d as f32);
        *v = if t <= 0.0 {
            0
        } else if t >= 255.0 {
            255
        } else {
            t as u8
        };
    }
}

fn luma_plane(img: &Image) -> Vec<u8> {
    if img.channels == 1 {
        img.data.clone()
    } else {
        img.data
            .chunks_exact(3)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect()
    }
}

/// `ImageEnhance.Color`: blend with the greyscale version (identity on 1-channel images).
pub fn enhance_color(img: &mut Image, factor: f32) {
    if img.channels == 1 {
        return;
    }
    let deg: Vec<u8> = luma_plane(img).iter().flat_map(|&l| [l, l, l]).collect();
    blend_into(img, &deg, factor);
}

/// `ImageEnhance.Contrast`: blend with a flat image at the rounded mean luma.
pub fn enhance_contrast(img: &mut Image, factor: f32) {
    let l = luma_plane(img);
    let mean =
        (l.iter().map(|&v| v as u64).sum::<u64>() as f64 / l.len().max(1) as f64 + 0.5) as u8;
    let deg = vec![mean; img.data.len()];
    blend_into(img, &deg, factor);
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn enhance_brightness(img: &mut Image, factor: f32) {
    let deg = vec![0u8; img.data.len()];
    blend_into(img, &deg, factor);
}

/// `ImageEnhance.Sharpness`: blend with `ImageFilter.SMOOTH` (3×3, centre 5, sum 13; border
/// pixels unchanged).
pub fn enhance_sharpness(img: &mut Image, factor: f32) {
    let (w, h, c) = (img.width, img.height, img.channels);
    let mut deg = img.data.clone();
    if w >= 3 && h >= 3 {
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                for k in 0..c {
                    let mut s = 0u32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let v = img.data[((y + dy - 1) * w + x + dx - 1) * c + k] as u32;
                            s += if dy == 1 && dx == 1 { 5 * v } else { v };
                        }
                    }
                    deg[(y * w + x) * c + k] = ((s as f32 / 13.0) + 0.5).min(255.0) as u8;
                }
            }
        }
    }
    blend_into(img, &deg, factor);
}

#[inline]
fn cubic(x: f32) -> f32 {
    // PIL's bicubic kernel, a = -0.5
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// PIL `Image.transform(size, AFFINE, m)`: output pixel centre (x+0.5, y+0.5) samples the input
/// at `(m0 x + m1 y + m2, m3 x + m4 y + m5)`; points outside the input get `fill`.
pub fn affine(img: &Image, m: [f64; 6], interp: Interpolation, fill: &[u8]) -> Image {
    let (w, h, c) = (img.width, img.height, img.channels);
    let mut out = Image::filled(w, h, c, 0);
    let (wi, hi) = (w as isize, h as isize);
    let at = |x: isize, y: isize, k: usize| {
        img.data[((y.clamp(0, hi - 1) * wi + x.clamp(0, wi - 1)) as usize) * c + k] as f32
    };
    for y in 0..h {
        for x in 0..w {
            let (xc, yc) = (x as f64 + 0.5, y as f64 + 0.5);
            let xin = m[0] * xc + m[1] * yc + m[2];
            let yin = m[3] * xc + m[4] * yc + m[5];
            let o = (y * w + x) * c;
            if xin < 0.0 || yin < 0.0 || xin >= w as f64 || yin >= h as f64 {
                out.data[o..o + c].copy_from_slice(&fill[..c]);
                continue;
            }
            match interp {
                Interpolation::Nearest => {
                    let s = ((yin as usize) * w + xin as usize) * c;
                    out.data[o..o + c].copy_from_slice(&img.data[s..s + c]);
                }
                Interpolation::Bilinear => {
                    let (xs, ys) = (xin - 0.5, yin - 0.5);
                    let (x0, y0) = (xs.floor() as isize, ys.floor() as isize);
                    let (dx, dy) = ((xs - x0 as f64) as f32, (ys - y0 as f64) as f32);
                    for k in 0..c {
                        let top = at(x0, y0, k) * (1.0 - dx) + at(x0 + 1, y0, k) * dx;
                        let bot = at(x0, y0 + 1, k) * (1.0 - dx) + at(x0 + 1, y0 + 1, k) * dx;
                        out.data[o + k] =
                            (top * (1.0 - dy) + bot * dy + 0.5).clamp(0.0, 255.0) as u8;
                    }
                }
                Interpolation::Bicubic => {
                    let (xs, ys) = (xin - 0.5, yin - 0.5);
                    let (x0, y0) = (xs.floor() as isize, ys.floor() as isize);
                    let (dx, dy) = ((xs - x0 as f64) as f32, (ys - y0 as f64) as f32);
                    let wx = [cubic(dx + 1.0), cubic(dx), cubic(1.0 - dx), cubic(2.0 - dx)];
                    let wy = [cubic(dy + 1.0), cubic(dy), cubic(1.0 - dy), cubic(2.0 - dy)];
                    for k in 0..c {
                        let mut s = 0.0;
                        for (j, wyj) in wy.iter().enumerate() {
                            let mut r = 0.0;
                            for (i, wxi) in wx.iter().enumerate() {
                                r += wxi * at(x0 + i as isize - 1, y0 + j as isize - 1, k);
                            }
                            s += wyj * r;
                        }
                        out.data[o + k] = (s + 0.5).clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
    }
    out
}

/// PIL `img.rotate(degrees)` about the centre (counter-clockwise, same canvas).
pub fn rotate(img: &Image, degrees: f64, interp: Interpolation, fill: &[u8]) -> Image {
    let a = -degrees.to_radians();
    let (cx, cy) = (img.width as f64 / 2.0, img.height as f64 / 2.0);
    let (m0, m1, m3, m4) = (a.cos(), a.sin(), -a.sin(), a.cos());
    let m2 = m0 * -cx + m1 * -cy + cx;
    let m5 = m3 * -cx + m4 * -cy + cy;
    affine(img, [m0, m1, m2, m3, m4, m5], interp, fill)
}

/// `ToTensor` + `Normalize`: writes C×H×W floats `(v/255 - mean) / std` into `out`
/// (`lkd_preprocess::normalize_into`, shared with serving).
pub fn to_chw_normalized(img: &Image, mean: &[f32], std: &[f32], out: &mut [f32]) {
    lkd_preprocess::normalize_into(view(img), mean, std, out)
        .unwrap_or_else(|e| panic!("normalize: {e}"));
}
