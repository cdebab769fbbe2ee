//! PIL's `Image.resize` for 8-bit images, computed for one output window only.
//!
//! Convolution filters (bilinear, bicubic a = −0.5) follow PIL's `Resample.c` semantics: the
//! support widens by the downscale factor (antialiasing), weights are normalized per output
//! pixel and rounded to 22-bit fixed point, the horizontal pass runs first into an 8-bit
//! intermediate, and each pass rounds and clips. Nearest samples `floor((i + 0.5) · in / out)`.
//! Each output pixel depends only on its own coefficients, so resampling just the window a
//! centre crop keeps gives the same values as resizing everything and cropping afterwards.

use std::ops::Range;

use lkd_models::preprocess::Interpolation;

use crate::{Pixels, View};

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights for output indices `range` along one axis.
struct Coefficients {
    /// Per output index (relative to `range.start`): first source index and tap count.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output index.
    weights: Vec<i32>,
    ksize: usize,
}

impl Coefficients {
    fn new(
        in_size: usize,
        out_size: usize,
        range: Range<usize>,
        filter: fn(f64) -> f64,
        support: f64,
    ) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(range.len());
        let mut weights = vec![0i32; range.len() * ksize];
        let mut k = vec![0f64; ksize];
        for (i, out) in range.enumerate() {
            let center = (out as f64 + 0.5) * scale;
            // `as` truncates toward zero, like the C cast it mirrors.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let taps = xmax.saturating_sub(xmin).min(ksize);
            let mut total = 0.0;
            for (x, w) in k[..taps].iter_mut().enumerate() {
                *w = filter((x as f64 + xmin as f64 - center + 0.5) / filterscale);
                total += *w;
            }
            for (x, w) in k[..taps].iter().enumerate() {
                let w = if total != 0.0 { w / total } else { *w };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                weights[i * ksize + x] = if fixed < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, taps));
        }
        Self {
            bounds,
            weights,
            ksize,
        }
    }

    /// The source range every output index of this set reads.
    fn source_span(&self) -> Range<usize> {
        let start = self.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let end = self.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        start..end.max(start)
    }
}

/// PIL's nearest resize (`ImagingScaleAffine`): the source coordinate starts at half a step
/// and is advanced by repeated addition, so the f64 rounding of that sum decides ties
/// (30 → 27 maps output 13 to 14, not 15). Checked against Pillow for every size pair to 120.
fn nearest_sources(in_size: usize, out_size: usize, range: Range<usize>) -> Vec<usize> {
    let step = in_size as f64 / out_size as f64;
    let mut pos = step * 0.5;
    let mut out = Vec::with_capacity(range.len());
    for i in 0..range.end {
        if i >= range.start {
            out.push((pos as usize).min(in_size - 1));
        }
        pos += step;
    }
    out
}

#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The `w`×`h` window at (`left`, `top`) of `img` resized to `rw`×`rh`; window pixels outside
/// the resized image are zero (torchvision's centre-crop padding).
#[allow(clippy::too_many_arguments)]
pub fn resize_window(
    img: View<'_>,
    rw: usize,
    rh: usize,
    left: isize,
    top: isize,
    w: usize,
    h: usize,
    interp: Interpolation,
) -> Pixels {
    let c = img.channels;
    let mut out = Pixels {
        width: w,
        height: h,
        channels: c,
        data: vec![0; w * h * c],
    };
    let clamp = |start: isize, len: usize, size: usize| -> Range<usize> {
        let a = start.clamp(0, size as isize) as usize;
        let b = (start + len as isize).clamp(0, size as isize) as usize;
        a..b.max(a)
    };
    let cols = clamp(left, w, rw);
    let rows = clamp(top, h, rh);
    if cols.is_empty() || rows.is_empty() || img.width == 0 || img.height == 0 {
        return out;
    }
    // Where window pixel (x, y) of the resized image lands in `out`.
    let out_x0 = (cols.start as isize - left) as usize;
    let out_y0 = (rows.start as isize - top) as usize;
    let (in_w, in_h) = (img.width, img.height);

    let filter: (fn(f64) -> f64, f64) = match interp {
        Interpolation::Nearest => {
            let xs = nearest_sources(in_w, rw, cols.clone());
            let ys = nearest_sources(in_h, rh, rows.clone());
            for (j, &sy) in ys.iter().enumerate() {
                let dst_row = ((out_y0 + j) * w + out_x0) * c;
                for (i, &sx) in xs.iter().enumerate() {
                    let s = (sy * in_w + sx) * c;
                    out.data[dst_row + i * c..dst_row + (i + 1) * c]
                        .copy_from_slice(&img.data[s..s + c]);
                }
            }
            return out;
        }
        Interpolation::Bilinear => (bilinear, 1.0),
        Interpolation::Bicubic => (bicubic, 2.0),
    };

    let need_horizontal = rw != in_w;
    let need_vertical = rh != in_h;
    let vert = need_vertical.then(|| Coefficients::new(in_h, rh, rows.clone(), filter.0, filter.1));
    // Source rows the vertical pass reads (or the window rows themselves when it is skipped).
    let src_rows = vert
        .as_ref()
        .map_or(rows.clone(), Coefficients::source_span);

    // Horizontal pass into an 8-bit intermediate: `src_rows` × `cols`.
    let tw = cols.len();
    let temp: Vec<u8> = if need_horizontal {
        let horiz = Coefficients::new(in_w, rw, cols.clone(), filter.0, filter.1);
        let mut temp = vec![0u8; src_rows.len() * tw * c];
        for (r, y) in src_rows.clone().enumerate() {
            let row = &img.data[y * in_w * c..(y + 1) * in_w * c];
            for (i, &(xmin, taps)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.weights[i * horiz.ksize..i * horiz.ksize + taps];
                for ch in 0..c {
                    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                    for (t, &wk) in k.iter().enumerate() {
                        acc += row[(xmin + t) * c + ch] as i64 * wk as i64;
                    }
                    temp[(r * tw + i) * c + ch] = clip8(acc);
                }
            }
        }
        temp
    } else {
        let mut temp = Vec::with_capacity(src_rows.len() * tw * c);
        for y in src_rows.clone() {
            temp.extend_from_slice(
                &img.data[(y * in_w + cols.start) * c..(y * in_w + cols.end) * c],
            );
        }
        temp
    };

    // Vertical pass from the intermediate into the window.
    for (j, y) in rows.clone().enumerate() {
        let dst = ((out_y0 + j) * w + out_x0) * c;
        let dst = &mut out.data[dst..dst + tw * c];
        match &vert {
            None => {
                let r = y - src_rows.start;
                dst.copy_from_slice(&temp[r * tw * c..(r + 1) * tw * c]);
            }
            Some(v) => {
                let (ymin, taps) = v.bounds[j];
                let k = &v.weights[j * v.ksize..j * v.ksize + taps];
                for (x, o) in dst.iter_mut().enumerate() {
                    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                    for (t, &wk) in k.iter().enumerate() {
                        acc += temp[(ymin + t - src_rows.start) * tw * c + x] as i64 * wk as i64;
                    }
                    *o = clip8(acc);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize;

    fn ramp(w: usize, h: usize, c: usize) -> Pixels {
        let data = (0..w * h * c)
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect();
        Pixels {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }

    #[test]
    fn window_equals_full_resize_then_crop() {
        for interp in [
            Interpolation::Nearest,
            Interpolation::Bilinear,
            Interpolation::Bicubic,
        ] {
            for (w, h, c) in [(29, 31, 1), (64, 17, 3), (5, 90, 3)] {
                let img = ramp(w, h, c);
                let (rw, rh) = (40, 23);
                let full = resize(img.view(), rw, rh, interp);
                for (left, top, cw, ch) in [
                    (3, 2, 20, 11),
                    (-2, -1, 44, 25),
                    (0, 0, rw, rh),
                    (35, 20, 10, 10),
                ] {
                    let win = resize_window(img.view(), rw, rh, left, top, cw, ch, interp);
                    assert_eq!(
                        win,
                        crate::crop(full.view(), left, top, cw, ch),
                        "{interp:?} {w}x{h}x{c} at {left},{top}"
                    );
                }
            }
        }
    }

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let img = ramp(13, 9, 3);
        assert_eq!(resize(img.view(), 13, 9, Interpolation::Bicubic), img);
        let flat = Pixels {
            width: 50,
            height: 7,
            channels: 1,
            data: vec![200; 350],
        };
        let r = resize(flat.view(), 11, 30, Interpolation::Bicubic);
        assert!(r.data.iter().all(|&v| v == 200), "{:?}", r.data);
    }
}
