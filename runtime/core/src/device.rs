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

/// ONNX Runtime graph optimization level, by name or by ONNX Runtime's number (0–3).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum OptLevel {
    #[strum(to_string = "disable", serialize = "0")]
    Disable,
    #[strum(to_string = "basic", serialize = "1")]
    Basic,
    #[strum(to_string = "extended", serialize = "2")]
    Extended,
    #[default]
    #[strum(to_string = "all", serialize = "3")]
    All,
}

impl OptLevel {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// `s` as a level; the error lists the accepted names.
    pub fn parse(s: &str) -> Result<Self> {
        use strum::VariantNames;
        s.parse().map_err(|_| OrtError::BadOptLevel {
            found: s.to_string(),
            expected: lkd_models::text::one_of(Self::VARIANTS),
        })
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
        assert_eq!(OptLevel::parse("basic").unwrap(), OptLevel::Basic);
        assert_eq!(OptLevel::parse("3").unwrap(), OptLevel::All);
        for (i, name) in ["disable", "basic", "extended", "all"].iter().enumerate() {
            let level = OptLevel::parse(name).unwrap();
            assert_eq!(level.as_str(), *name);
            assert_eq!(OptLevel::parse(&i.to_string()).unwrap(), level);
        }
        for bad in ["fast", "4", "Basic", ""] {
            assert_eq!(
                OptLevel::parse(bad).unwrap_err().to_string(),
                format!(
                    "unknown optimization level `{bad}`: expected disable, basic, extended or all"
                )
            );
        }
    }
}
