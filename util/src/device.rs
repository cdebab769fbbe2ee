//! The device grammar every command line and config uses: `cpu`, `cuda` (= `gpu` = `cuda:0`)
//! or `cuda:N`. Only the grammar: whether the device exists is for the engine that opens it.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device `{found}`: expected `cpu`, `cuda` or `cuda:N`")]
pub struct DeviceError {
    pub found: String,
}

impl FromStr for Device {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|&n| n >= 0)
                .map(Device::Cuda)
                .ok_or_else(|| DeviceError {
                    found: s.to_string(),
                }),
        }
    }
}

impl Device {
    /// The CUDA index (`None` for the CPU).
    pub fn cuda_index(self) -> Option<usize> {
        match self {
            Device::Cpu => None,
            Device::Cuda(i) => Some(i as usize),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_device_form_and_rejects_the_rest() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!(" CUDA ".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("gpu".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!(Device::Cuda(3).cuda_index(), Some(3));
        assert_eq!(Device::Cpu.cuda_index(), None);
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
}
