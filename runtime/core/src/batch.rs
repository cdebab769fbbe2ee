//! One contiguous NCHW float batch: what preprocessing produces, calibration consumes and
//! sessions run.

use lkd_models::preprocess::Preprocess;

#[derive(Clone, Debug)]
pub struct Batch {
    pub data: Vec<f32>,
    pub shape: [usize; 4],
}

impl Batch {
    /// `n` zero images of the preprocessing's channels and size.
    pub fn zeros(n: usize, p: &Preprocess) -> Self {
        let shape = [n, p.channels, p.input_size[0], p.input_size[1]];
        Self {
            data: vec![0.0; shape.iter().product()],
            shape,
        }
    }
}
