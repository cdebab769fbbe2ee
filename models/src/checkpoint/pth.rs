use super::StateDict;
use crate::ModelError;
use std::path::Path;

/// Reads a `torch.save` zip archive (state dict, or dict with `model`/`model_ema`/`state_dict`).
pub fn read_pth(path: &Path) -> Result<StateDict, ModelError> {
    Err(ModelError::Checkpoint { path: path.display().to_string(), msg: "PyTorch archive reader not built yet".into() })
}
