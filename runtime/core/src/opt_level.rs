//! How hard ONNX Runtime optimizes a graph. (Where a session runs is `lkd_util::Device`.)

use ort::session::builder::GraphOptimizationLevel;

use crate::error::{OrtError, Result};

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
        lkd_util::parse_named(s).map_err(|e| OrtError::BadOptLevel {
            found: e.found,
            expected: e.expected,
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
