//! An enum parsed by its names (strum's `EnumString` + `VariantNames`), the error listing the
//! accepted ones; each crate wraps [`UnknownName`] in its own error with what was being named.

use std::str::FromStr;

use strum::VariantNames;

/// A name that is none of an enum's: what was found and the accepted names (`a, b or c`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name `{found}`: expected {expected}")]
pub struct UnknownName {
    pub found: String,
    pub expected: String,
}

/// `s` as one of `T`'s named variants (exactly as strum spells them).
pub fn parse_named<T: FromStr + VariantNames>(s: &str) -> Result<T, UnknownName> {
    s.parse().map_err(|_| UnknownName {
        found: s.to_string(),
        expected: crate::one_of(T::VARIANTS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, strum::EnumString, strum::VariantNames)]
    #[strum(serialize_all = "lowercase")]
    enum Level {
        Low,
        High,
    }

    #[test]
    fn names_parse_and_the_error_lists_them() {
        assert_eq!(parse_named::<Level>("high").unwrap(), Level::High);
        let e = parse_named::<Level>("High").unwrap_err();
        assert_eq!(e.to_string(), "unknown name `High`: expected low or high");
    }
}
