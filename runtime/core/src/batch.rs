//! One contiguous NCHW float batch: what preprocessing produces, calibration consumes and
//! sessions run.

#[derive(Clone, Debug)]
pub struct Batch {
    pub data: Vec<f32>,
    pub shape: [usize; 4],
}

impl Batch {
    /// `n` zero images of `channels` × `height` × `width`.
    pub fn zeros(n: usize, channels: usize, [height, width]: [usize; 2]) -> Self {
        let shape = [n, channels, height, width];
        Self {
            data: vec![0.0; shape.iter().product()],
            shape,
        }
    }
}
