//! Cluttered Fashion-MNIST: each item placed at a random position on a larger black canvas,
//! among fragments cut from other items of the same split (the Cluttered MNIST of the Spatial
//! Transformer paper, on Fashion-MNIST). The class is decided by the one whole item, which can be
//! anywhere, so a network must see across the canvas: a proxy where receptive field matters, still
//! CPU-sized. Every sample is a pure function of (split, index), so splits are identical on every
//! run and machine.

use super::{rng, DataError, Result, Split, Store};
use rand::Rng;

/// Side of the square fragments of other items scattered as clutter.
pub const FRAGMENT: usize = 9;
/// Canvas sides accepted (the item is 28 px).
pub const CANVAS_RANGE: std::ops::RangeInclusive<usize> = 28..=256;
/// Fragments per canvas accepted.
pub const MAX_CLUTTER: usize = 64;

pub(crate) const DEFAULT_CANVAS: usize = 64;
pub(crate) const DEFAULT_CLUTTER: usize = 6;

/// Builds the cluttered split from a decoded 28×28 single-channel store.
pub(crate) fn compose(items: Store, canvas: usize, clutter: usize, split: Split) -> Result<Store> {
    let Store::Memory {
        width,
        height,
        channels: 1,
        pixels,
        labels,
    } = items
    else {
        return Err(DataError::Config(
            "cluttered data needs single-channel images decoded in memory".into(),
        ));
    };
    if !CANVAS_RANGE.contains(&canvas) || canvas < width.max(height) {
        return Err(DataError::Config(format!(
            "`canvas` must be within {}..={} and at least the item size {width}, got {canvas}",
            CANVAS_RANGE.start(),
            CANVAS_RANGE.end()
        )));
    }
    if clutter > MAX_CLUTTER {
        return Err(DataError::Config(format!(
            "`clutter` must be at most {MAX_CLUTTER} fragments, got {clutter}"
        )));
    }
    let n = labels.len();
    let item = |i: usize| &pixels[i * width * height..(i + 1) * width * height];
    let mut out = vec![0u8; n * canvas * canvas];
    let split_tag = match split {
        Split::Train => 0xC1u64,
        Split::Val => 0xC2,
    };
    for (i, sample) in out.chunks_exact_mut(canvas * canvas).enumerate() {
        let mut r = rng::rng_for(&[0x000C_1077_E8ED, split_tag, i as u64]);
        // Clutter first, the item over it: a fragment never hides the item's own pixels.
        for _ in 0..clutter.min(n.saturating_sub(1)) {
            let mut other = r.gen_range(0..n - 1);
            if other >= i {
                other += 1;
            }
            let (fx, fy) = (
                r.gen_range(0..=width - FRAGMENT),
                r.gen_range(0..=height - FRAGMENT),
            );
            let (x0, y0) = (
                r.gen_range(0..=canvas - FRAGMENT),
                r.gen_range(0..=canvas - FRAGMENT),
            );
            let src = item(other);
            for y in 0..FRAGMENT {
                for x in 0..FRAGMENT {
                    let v = src[(fy + y) * width + fx + x];
                    let d = &mut sample[(y0 + y) * canvas + x0 + x];
                    *d = (*d).max(v);
                }
            }
        }
        let (x0, y0) = (
            r.gen_range(0..=canvas - width),
            r.gen_range(0..=canvas - height),
        );
        let src = item(i);
        for y in 0..height {
            for x in 0..width {
                let v = src[y * width + x];
                let d = &mut sample[(y0 + y) * canvas + x0 + x];
                *d = (*d).max(v);
            }
        }
    }
    Ok(Store::Memory {
        width: canvas,
        height: canvas,
        channels: 1,
        pixels: out,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items that are solid squares of value 10 × (index + 1) fill the whole 28×28.
    fn items(n: usize) -> Store {
        Store::Memory {
            width: 28,
            height: 28,
            channels: 1,
            pixels: (0..n)
                .flat_map(|i| vec![10 * (i as u8 + 1); 28 * 28])
                .collect(),
            labels: (0..n as u32).collect(),
        }
    }

    fn pixels(s: &Store) -> &[u8] {
        match s {
            Store::Memory { pixels, .. } => pixels,
            Store::Files { .. } => unreachable!(),
        }
    }

    #[test]
    fn item_is_whole_and_clutter_is_fragments_of_others() {
        let s = compose(items(5), 64, 3, Split::Train).unwrap();
        for i in 0..5 {
            let canvas = &pixels(&s)[i * 64 * 64..(i + 1) * 64 * 64];
            let own = 10 * (i as u8 + 1);
            // The item's 28×28 square is all there (others' values below it are hidden by max).
            let at_least_own = canvas.iter().filter(|&&v| v >= own).count();
            assert!(at_least_own >= 28 * 28, "sample {i}: {at_least_own}");
            // Some clutter lies outside the item (other values present).
            assert!(
                canvas.iter().any(|&v| v != 0 && v != own),
                "sample {i}: no clutter"
            );
        }
        // A pure function of (split, index): composed again, the same bytes; val differs.
        let again = compose(items(5), 64, 3, Split::Train).unwrap();
        assert_eq!(pixels(&s), pixels(&again));
        let val = compose(items(5), 64, 3, Split::Val).unwrap();
        assert_ne!(pixels(&s), pixels(&val));
    }

    #[test]
    fn ranges_are_checked() {
        let e = compose(items(2), 20, 3, Split::Train)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "data config: `canvas` must be within 28..=256 and at least the item size 28, got 20"
        );
        let e = compose(items(2), 64, 65, Split::Train)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "data config: `clutter` must be at most 64 fragments, got 65"
        );
    }
}
