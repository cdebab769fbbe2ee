//! `lkd-util` holds the few helpers every LKD crate needs, so no crate depends on another just
//! for one of them: the wording of a list of choices ([`one_of`]), parsing an enum by its
//! names ([`parse_named`]), the device grammar (`cpu`, `cuda`, `cuda:N`: [`Device`]), atomic
//! file writes ([`write_atomic`]), the quantile of sorted samples ([`quantile`]) and, for tests,
//! golden files made once by a peer script ([`golden::generated_once`]).
//!
//! It depends on no other LKD crate and links nothing heavy; it must stay that way.
//!
//! ```
//! use lkd_util::{one_of, parse_named, quantile, write_atomic, Device};
//!
//! assert_eq!(one_of(&["cpu", "cuda", "cuda:N"]), "cpu, cuda or cuda:N");
//! assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
//!
//! #[derive(Debug, PartialEq, strum::EnumString, strum::VariantNames)]
//! #[strum(serialize_all = "lowercase")]
//! enum Colour { Red, Green }
//! assert_eq!(parse_named::<Colour>("green").unwrap(), Colour::Green);
//! assert_eq!(parse_named::<Colour>("blue").unwrap_err().expected, "red or green");
//!
//! assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
//!
//! let dir = tempfile::tempdir().unwrap();
//! write_atomic(&dir.path().join("notes.txt"), b"all or nothing").unwrap();
//! ```

pub mod device;
pub mod fs;
pub mod golden;
pub mod machine;
pub mod named;
pub mod stats;
pub mod text;

pub use device::{Device, DeviceError};
pub use fs::{write_atomic, WriteError};
pub use machine::Machine;
pub use named::{parse_named, UnknownName};
pub use stats::quantile;
pub use text::{one_of, one_of_quoted};
