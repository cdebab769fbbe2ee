//! Where a session runs and how hard ONNX Runtime optimizes its graph. The one parser of device
//! strings in the project (`cpu`, `cuda`, `gpu`, `cuda:N`).

use std::fmt;
use std::str::FromStr;

use ort::session::builder::GraphOptimizationLevel;

use crate::error::{OrtError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(i32),
}

impl FromStr for Device {
    type Err = OrtError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|&n| n >= 0)
                .map(Device::Cuda)
                .ok_or_else(|| OrtError::BadDevice(s.to_string())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// ONNX Runtime graph optimization level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OptLevel {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

impl FromStr for OptLevel {
    type Err = OrtError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "disable" | "0" => Ok(Self::Disable),
            "basic" | "1" => Ok(Self::Basic),
            "extended" | "2" => Ok(Self::Extended),
            "all" | "3" => Ok(Self::All),
            _ => Err(OrtError::BadOptLevel(s.to_string())),
        }
    }
}

impl From<OptLevel> for GraphOptimizationLevel {
    fn from(l: OptLevel) -> Self {
        match l {
            OptLevel::Disable => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_device_form_and_rejects_the_rest() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!(" CUDA ".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("gpu".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        for bad in ["cuda:-1", "cuda:x", "tpu", ""] {
            let e = bad.parse::<Device>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("unknown device `{bad}`: expected `cpu`, `cuda` or `cuda:N`")
            );
        }
        assert_eq!(
            Device::Cuda(2).to_string().parse::<Device>().unwrap(),
            Device::Cuda(2)
        );
    }

    #[test]
    fn opt_levels_parse_by_name_and_number() {
        assert_eq!("basic".parse::<OptLevel>().unwrap(), OptLevel::Basic);
        assert_eq!("3".parse::<OptLevel>().unwrap(), OptLevel::All);
        assert!("fast".parse::<OptLevel>().is_err());
    }
}
