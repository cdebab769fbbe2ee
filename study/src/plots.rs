//! Figures the CLI draws from measured numbers (plotters); the libraries return numbers only.

use anyhow::{anyhow, Context, Result};
use lkd_trainer::erf::ErfResult;
use plotters::prelude::*;
use std::path::Path;

/// A blue→yellow colour ramp (viridis-like) for v in [0, 1].
fn ramp(v: f32) -> RGBColor {
    const STOPS: [(f32, [f32; 3]); 5] = [
        (0.0, [68., 1., 84.]),
        (0.25, [59., 82., 139.]),
        (0.5, [33., 145., 140.]),
        (0.75, [94., 201., 98.]),
        (1.0, [253., 231., 37.]),
    ];
    let v = v.clamp(0.0, 1.0);
    let k = STOPS.iter().position(|(s, _)| *s >= v).unwrap_or(4).max(1);
    let (s0, c0) = STOPS[k - 1];
    let (s1, c1) = STOPS[k];
    let f = (v - s0) / (s1 - s0);
    let c = |i: usize| (c0[i] + f * (c1[i] - c0[i])) as u8;
    RGBColor(c(0), c(1), c(2))
}

/// Draws a PNG with `draw` (given a scratch file in the temp dir: plotters writes to a path)
/// and writes it to `path` atomically, so a kill never leaves half an image.
pub fn write_png_atomic(path: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("lkd-plot-")
        .suffix(".png")
        .tempfile()
        .context("creating a scratch file for a plot")?;
    draw(scratch.path())?;
    let bytes = std::fs::read(scratch.path())
        .with_context(|| format!("reading {}", scratch.path().display()))?;
    lkd_util::write_atomic(path, &bytes)?;
    Ok(())
}

/// Draws one or more ERF maps side by side with titles into a PNG.
pub fn write_heatmaps(path: &Path, maps: &[(&str, &ErfResult)]) -> Result<()> {
    write_png_atomic(path, |tmp| draw_heatmaps(tmp, path, maps))
}

fn draw_heatmaps(tmp: &Path, path: &Path, maps: &[(&str, &ErfResult)]) -> Result<()> {
    let cell = 280u32;
    let title_h = 30u32;
    let width = cell * maps.len().max(1) as u32;
    let err = |e: String| anyhow!("{}: cannot draw ERF heatmap: {e}", path.display());
    {
        let root = BitMapBackend::new(tmp, (width, cell + title_h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        for (k, (title, r)) in maps.iter().enumerate() {
            let x0 = k as i32 * cell as i32;
            let (ph, pw) = (cell as f32 / r.height as f32, cell as f32 / r.width as f32);
            for y in 0..r.height {
                for x in 0..r.width {
                    let v = r.map[y * r.width + x];
                    let rect = [
                        (
                            x0 + (x as f32 * pw) as i32,
                            title_h as i32 + (y as f32 * ph) as i32,
                        ),
                        (
                            x0 + ((x + 1) as f32 * pw) as i32,
                            title_h as i32 + ((y + 1) as f32 * ph) as i32,
                        ),
                    ];
                    root.draw(&Rectangle::new(rect, ramp(v).filled()))
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            let label = format!("{title} (r@0.2={:.3})", r.area_ratios[0].1);
            // Titles need a system font; a machine without one still gets the heatmap.
            let _ = root.draw(&Text::new(
                label,
                (x0 + 6, 6),
                ("sans-serif", 16).into_font().color(&BLACK),
            ));
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}
