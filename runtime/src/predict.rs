//! Classification end to end: encoded images → batch → logits → top-k with labels.

use std::path::Path;

use lkd_models::preprocess::Preprocess;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::preprocess::{
    image_len, preprocess_batch, resolve_preprocess, Batch, PreprocessOverrides,
};
use crate::session::{Engine, Logits, Model, ModelInfo, SessionConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub label: String,
    pub index: usize,
    pub prob: f32,
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes, best first; ties keep the lower index first.
pub fn top_k(probs: &[f32], k: usize, info: &ModelInfo) -> Vec<Prediction> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| Prediction {
            label: info.label(i),
            index: i,
            prob: probs[i],
        })
        .collect()
}

/// Runs `n` images held in `data` (NCHW), padding to the graph's batch when it is fixed.
pub fn run_images(model: &mut Model, p: &Preprocess, data: &[f32], n: usize) -> Result<Logits> {
    let shape = |b| [b, p.channels, p.input_size[0], p.input_size[1]];
    let Some(fixed) = model.info().fixed_batch() else {
        return model.run(data, shape(n));
    };
    let len = image_len(p);
    let mut out = Logits {
        data: Vec::new(),
        batch: 0,
        classes: 0,
    };
    let mut padded = vec![0f32; fixed * len];
    for chunk in data.chunks(fixed * len) {
        let m = chunk.len() / len;
        let logits = if m == fixed {
            model.run(chunk, shape(fixed))?
        } else {
            padded[..chunk.len()].copy_from_slice(chunk);
            padded[chunk.len()..].fill(0.0);
            model.run(&padded, shape(fixed))?
        };
        out.classes = logits.classes;
        out.data
            .extend_from_slice(&logits.data[..m * logits.classes]);
        out.batch += m;
    }
    Ok(out)
}

/// A model together with the preprocessing it was resolved to.
#[derive(Debug)]
pub struct Classifier {
    pub model: Model,
    pub preprocess: Preprocess,
}

impl Classifier {
    pub fn load(
        path: impl AsRef<Path>,
        cfg: &SessionConfig,
        overrides: &PreprocessOverrides,
    ) -> Result<Self> {
        Self::load_with(path, cfg, Engine::Ort, overrides)
    }

    /// [`Classifier::load`] on a chosen engine.
    pub fn load_with(
        path: impl AsRef<Path>,
        cfg: &SessionConfig,
        engine: Engine,
        overrides: &PreprocessOverrides,
    ) -> Result<Self> {
        let model = Model::load_with(path, cfg, engine)?;
        let preprocess = resolve_preprocess(model.info(), overrides)?;
        Ok(Self { model, preprocess })
    }

    pub fn info(&self) -> &ModelInfo {
        self.model.info()
    }

    /// Top-k per image, in input order. Images are `(name, encoded bytes)`.
    pub fn classify<B: AsRef<[u8]> + Sync>(
        &mut self,
        images: &[(String, B)],
        k: usize,
    ) -> Result<Vec<Vec<Prediction>>> {
        let batch = preprocess_batch(images, &self.preprocess)?;
        self.classify_batch(&batch, k)
    }

    pub fn classify_batch(&mut self, batch: &Batch, k: usize) -> Result<Vec<Vec<Prediction>>> {
        if batch.shape[0] == 0 {
            return Ok(Vec::new());
        }
        let logits = run_images(
            &mut self.model,
            &self.preprocess,
            &batch.data,
            batch.shape[0],
        )?;
        let info = self.model.info();
        info.check_labels(logits.classes)?;
        logits.check_finite(&info.name)?;
        Ok((0..logits.batch)
            .map(|i| top_k(&softmax(logits.row(i)), k, self.model.info()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_normalized() {
        let p = softmax(&[1000.0, 1000.0, 999.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] - p[1]).abs() < 1e-7 && p[2] < p[0]);
    }
}
