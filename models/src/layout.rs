//! Foreign checkpoint layouts: how another codebase names (and shapes) the parameters of a
//! model we build. A family lists each layout once, as rules from our (official) parameter
//! names to the other codebase's keys ([`Layout`]);
//! [`crate::checkpoint::adopt_state_dict`] picks the layout a file's keys fit, checks it
//! strictly in the file's own names and renames it to ours. This module knows neither the
//! families nor checkpoint files, so both can depend on it.

use std::collections::BTreeMap;

/// How a parameter's shape differs in the other layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeRule {
    Same,
    /// Theirs is ours with this many trailing 1s (torchvision's `[C, 1, 1]` layer scale).
    TrailingOnes(usize),
}

impl ShapeRule {
    pub fn theirs(self, ours: &[usize]) -> Vec<usize> {
        match self {
            ShapeRule::Same => ours.to_vec(),
            ShapeRule::TrailingOnes(n) => ours
                .iter()
                .copied()
                .chain(std::iter::repeat_n(1, n))
                .collect(),
        }
    }
}

/// One renaming rule. Patterns are dotted names whose segments are literals or placeholders:
/// `{s}`, `{b}` (whole numbers) and `{p}` (any one segment) in `ours`; the same, or a linear
/// form of a number such as `{2s+1}`, in `theirs`.
#[derive(Clone, Copy, Debug)]
pub struct KeyRule {
    pub ours: &'static str,
    pub theirs: &'static str,
    pub shape: ShapeRule,
}

pub const fn rule(ours: &'static str, theirs: &'static str) -> KeyRule {
    KeyRule {
        ours,
        theirs,
        shape: ShapeRule::Same,
    }
}

pub const fn reshaped(ours: &'static str, theirs: &'static str, shape: ShapeRule) -> KeyRule {
    KeyRule {
        ours,
        theirs,
        shape,
    }
}

/// A named checkpoint layout of one family: the first rule whose `ours` pattern matches a
/// parameter name gives its key in this layout.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Shown in messages, e.g. "timm ConvNeXt".
    pub name: &'static str,
    pub rules: &'static [KeyRule],
}

impl Layout {
    /// This layout's key and shape rule for our parameter `ours`; `None` when no rule covers it.
    pub fn key_for(&self, ours: &str) -> Option<(String, ShapeRule)> {
        self.rules.iter().find_map(|r| {
            let bindings = match_pattern(r.ours, ours)?;
            Some((fill_pattern(r.theirs, &bindings)?, r.shape))
        })
    }
}

#[derive(Default)]
struct Bindings<'a> {
    numbers: BTreeMap<&'a str, usize>,
    words: BTreeMap<&'a str, &'a str>,
}

fn placeholder(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

fn match_pattern<'a>(pattern: &'a str, name: &'a str) -> Option<Bindings<'a>> {
    let (pat, seg): (Vec<&str>, Vec<&str>) =
        (pattern.split('.').collect(), name.split('.').collect());
    if pat.len() != seg.len() {
        return None;
    }
    let mut b = Bindings::default();
    for (p, s) in pat.iter().zip(&seg) {
        match placeholder(p) {
            Some("p") => {
                b.words.insert("p", s);
            }
            Some(var) => {
                let n: usize = if s.bytes().all(|c| c.is_ascii_digit()) {
                    s.parse().ok()?
                } else {
                    return None;
                };
                b.numbers.insert(var, n);
            }
            None if p == s => {}
            None => return None,
        }
    }
    Some(b)
}

/// Evaluates `{s}`, `{p}` or a linear form `{2s+1}` / `{2s}`.
fn fill_segment(inner: &str, b: &Bindings) -> Option<String> {
    if let Some(w) = b.words.get(inner) {
        return Some(w.to_string());
    }
    let (term, offset) = match inner.split_once('+') {
        Some((t, c)) => (t, c.parse::<usize>().ok()?),
        None => (inner, 0),
    };
    let split = term.find(|c: char| !c.is_ascii_digit())?;
    let factor = if split == 0 {
        1
    } else {
        term[..split].parse::<usize>().ok()?
    };
    let value = b.numbers.get(&term[split..])?;
    Some((factor * value + offset).to_string())
}

fn fill_pattern(pattern: &str, b: &Bindings) -> Option<String> {
    let parts: Option<Vec<String>> = pattern
        .split('.')
        .map(|seg| {
            if let Some(inner) = placeholder(seg) {
                fill_segment(inner, b)
            } else {
                Some(seg.to_string())
            }
        })
        .collect();
    Some(parts?.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_bind_numbers_and_words_and_fill_linear_forms() {
        const LAYOUT: Layout = Layout {
            name: "test",
            rules: &[
                rule("downsample_layers.0.{b}.{p}", "stem.{b}.{p}"),
                reshaped(
                    "stages.{s}.{b}.gamma",
                    "features.{2s+1}.{b}.layer_scale",
                    ShapeRule::TrailingOnes(2),
                ),
                rule("downsample_layers.{s}.{b}.{p}", "features.{2s}.{b}.{p}"),
            ],
        };
        let layout = LAYOUT;
        assert_eq!(
            layout.key_for("downsample_layers.0.1.bias"),
            Some(("stem.1.bias".into(), ShapeRule::Same))
        );
        assert_eq!(
            layout.key_for("downsample_layers.3.0.weight"),
            Some(("features.6.0.weight".into(), ShapeRule::Same))
        );
        assert_eq!(
            layout.key_for("stages.2.7.gamma"),
            Some((
                "features.5.7.layer_scale".into(),
                ShapeRule::TrailingOnes(2)
            ))
        );
        assert_eq!(
            layout.key_for("stages.x.7.gamma"),
            None,
            "a number placeholder needs digits"
        );
        assert_eq!(
            layout.key_for("stages.2.7.gamma.extra"),
            None,
            "segment counts must agree"
        );
        assert_eq!(layout.key_for("head.weight"), None);
        assert_eq!(ShapeRule::TrailingOnes(2).theirs(&[96]), vec![96, 1, 1]);
    }
}
