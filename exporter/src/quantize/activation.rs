//! How an activation is quantized, shared by calibration (which observes ranges for an element
//! type) and the QDQ rewrite (which turns ranges into scales and zero points): the element type,
//! the observed ranges and their (scale, zero point).

use std::collections::BTreeMap;

use onnx_protobuf::tensor_proto::DataType;

/// Observed (low, high) per tensor name.
pub type Ranges = BTreeMap<String, (f32, f32)>;

/// Activation element type, named as ONNX names the element type (`lkd.quant.activation_type`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, strum::IntoStaticStr, strum::VariantNames)]
pub enum ActType {
    /// Asymmetric, zero point in [0, 255].
    #[default]
    #[strum(serialize = "uint8")]
    #[cfg_attr(feature = "clap", value(name = "uint8"))]
    U8,
    /// Symmetric, zero point 0.
    #[strum(serialize = "int8")]
    #[cfg_attr(feature = "clap", value(name = "int8"))]
    I8,
}

impl ActType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub(super) fn data_type(self) -> i32 {
        match self {
            ActType::U8 => DataType::UINT8 as i32,
            ActType::I8 => DataType::INT8 as i32,
        }
    }
}

/// Range of the per-channel int8 weights (`lkd.quant.weight_type`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, strum::IntoStaticStr, strum::VariantNames)]
pub enum WeightRange {
    /// [-63, 63]: every u8×s8 pair sum fits in int16, so x86 CPUs without VNNI (whose AVX2
    /// `VPMADDUBSW` saturates at int16) compute what VNNI and ARM dot products compute.
    #[default]
    #[strum(serialize = "7bit")]
    #[cfg_attr(feature = "clap", value(name = "7bit"))]
    Bits7,
    /// [-127, 127]: one more bit of weight precision, for targets known to have VNNI or ARM dot
    /// products; on AVX2 without VNNI, uint8-activation layers may saturate.
    #[strum(serialize = "8bit")]
    #[cfg_attr(feature = "clap", value(name = "8bit"))]
    Bits8,
}

impl WeightRange {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Largest weight magnitude.
    pub fn qmax(self) -> f32 {
        match self {
            WeightRange::Bits7 => 63.0,
            WeightRange::Bits8 => 127.0,
        }
    }
}

/// (scale, zero point) of an activation range.
pub fn act_qparams(lo: f32, hi: f32, act: ActType) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    match act {
        ActType::U8 => {
            let scale = ((hi - lo) / 255.0).max(1e-8);
            (scale, (-lo / scale).round().clamp(0.0, 255.0) as i32)
        }
        ActType::I8 => (lo.abs().max(hi).max(1e-8 * 127.0) / 127.0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_types_have_onnx_names() {
        use strum::VariantNames;
        assert_eq!(ActType::VARIANTS, ["uint8", "int8"]);
        assert_eq!(
            (ActType::U8.as_str(), ActType::I8.as_str()),
            ("uint8", "int8")
        );
    }

    #[test]
    fn activation_qparams_include_zero() {
        assert_eq!(act_qparams(0.5, 2.55, ActType::U8), (0.01, 0));
        let (s, z) = act_qparams(-1.0, 1.55, ActType::U8);
        assert!((s - 0.01).abs() < 1e-7 && z == 100);
        assert_eq!(act_qparams(-2.54, 1.0, ActType::I8), (0.02, 0));
    }
}
