//! Pretrained weights for fine-tuning: a checkpoint adopted strictly (as
//! [`super::read_checkpoint_for`]), except for the three differences fine-tuning needs, each
//! applied and reported: a classifier for another class count (dropped, to be re-initialised),
//! a stem for another channel count (timm's `adapt_input_conv`), and ViT position embeddings for
//! another patch grid (resampled as timm's `resample_abs_pos_embed`, by the caller's resampler).

use super::adopt::adopt_tolerating;
use super::StateDict;
use crate::graph::{Graph, Op, ParamSpec};
use crate::tensor::HostTensor;
use crate::ModelError;
use std::fmt;
use std::path::Path;

/// One difference between the checkpoint and the model, and what was done about it.
#[derive(Clone, Debug, PartialEq)]
pub enum Adaptation {
    /// The classifier tensor `key` is for another class count: left out, re-initialised.
    HeadReinitialised {
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// The stem convolution `key` was trained on `from` input channels; the model has `to`.
    StemChannels { key: String, from: usize, to: usize },
    /// Position embeddings resampled from one patch grid to another (prefix tokens kept).
    PosEmbedResampled {
        key: String,
        from: [usize; 2],
        to: [usize; 2],
        prefix_tokens: usize,
    },
}

impl fmt::Display for Adaptation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Adaptation::HeadReinitialised {
                key,
                found,
                expected,
            } => write!(
                f,
                "{key}: dropped and re-initialised (classifier for another class count: checkpoint {found:?}, model {expected:?})"
            ),
            Adaptation::StemChannels { key, from, to } => write!(
                f,
                "{key}: stem adapted from {from} to {to} input channels ({})",
                if *to == 1 {
                    "summed over the checkpoint's channels"
                } else {
                    "channels repeated, scaled by from/to"
                }
            ),
            Adaptation::PosEmbedResampled {
                key,
                from,
                to,
                prefix_tokens,
            } => write!(
                f,
                "{key}: position embeddings resampled from a {}x{} to a {}x{} patch grid (bicubic, antialiased; {prefix_tokens} prefix token(s) kept)",
                from[0], from[1], to[0], to[1]
            ),
        }
    }
}

/// Resamples a `[1, prefix + h*w, D]` position embedding to another grid:
/// `(tensor, from, to, prefix_tokens)`. The trainer gives libtorch's antialiased bicubic.
pub type PosEmbedResampler<'a> =
    &'a dyn Fn(&HostTensor, [usize; 2], [usize; 2], usize) -> Result<HostTensor, String>;

/// What a checkpoint gives a model for fine-tuning.
#[derive(Clone, Debug)]
pub struct FinetuneState {
    /// Under the model's names at the model's shapes; the re-initialised classifier is absent.
    pub state: StateDict,
    pub adaptations: Vec<Adaptation>,
}

impl FinetuneState {
    /// Parameter names (ours) to take from initialisation instead of the checkpoint.
    pub fn reinitialised<'a>(&'a self, graph: &'a Graph) -> impl Iterator<Item = &'a str> + 'a {
        graph
            .params
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| !self.state.contains_key(*n))
    }
}

/// The parameters fine-tuning may find at another shape.
struct Roles {
    /// Weight and bias of the linear layer producing the logits.
    head: Vec<String>,
    /// Weight of the first convolution reading the image.
    stem: Option<String>,
    /// The learned position embedding, and how many tokens (class token) precede the patches.
    pos_embed: Option<(String, usize)>,
}

fn roles(graph: &Graph) -> Roles {
    let head = graph
        .nodes
        .get(graph.output)
        .filter(|n| matches!(n.op, Op::Linear { .. }))
        .map(|n| n.op.param_names().into_iter().map(String::from).collect())
        .unwrap_or_default();
    let input = graph.nodes.iter().position(|n| matches!(n.op, Op::Input));
    let stem = graph.nodes.iter().find_map(|n| match &n.op {
        Op::Conv2d { weight, .. } if input.is_some_and(|i| n.inputs.first() == Some(&i)) => {
            Some(weight.clone())
        }
        _ => None,
    });
    let prefix = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::PrependToken { .. }))
        .count();
    let pos_embed = graph.nodes.iter().find_map(|n| match &n.op {
        Op::AddParam { param } => Some((param.clone(), prefix)),
        _ => None,
    });
    Roles {
        head,
        stem,
        pos_embed,
    }
}

/// The side of a square grid of `n` patches, if it is one.
fn square_side(n: usize) -> Option<usize> {
    let s = (n as f64).sqrt().round() as usize;
    (s * s == n && s > 0).then_some(s)
}

/// timm's `adapt_input_conv` with the checkpoint's own channel count as the base: to one
/// channel, the sum over the checkpoint's channels; to `to` channels, the checkpoint's repeated
/// and cut to `to`, scaled by `from / to` (so a constant image gives the same response).
pub fn adapt_input_conv(weight: &HostTensor, to: usize) -> Result<HostTensor, String> {
    let [o, from, kh, kw] = weight.shape[..] else {
        return Err(format!(
            "a stem convolution weight is [out, in, kh, kw], found {:?}",
            weight.shape
        ));
    };
    let w = weight
        .as_f32()
        .ok_or("the stem convolution weight is not floating point")?;
    if to == 0 || from == 0 {
        return Err("channel counts must be positive".into());
    }
    let k = kh * kw;
    let at = |oc: usize, ic: usize, j: usize| w[(oc * from + ic) * k + j];
    let mut out = Vec::with_capacity(o * to * k);
    for oc in 0..o {
        for ic in 0..to {
            for j in 0..k {
                out.push(if to == 1 {
                    (0..from).map(|c| at(oc, c, j)).sum()
                } else {
                    at(oc, ic % from, j) * (from as f32 / to as f32)
                });
            }
        }
    }
    Ok(HostTensor::f32(vec![o, to, kh, kw], out))
}

/// Adopts `sd` for fine-tuning `graph`: strict as [`super::adopt_state_dict`] (every other
/// missing, unexpected or mis-shaped tensor is an error naming the key and both shapes), with
/// the classifier, stem channels and position-embedding grid adapted and reported.
pub fn adopt_for_finetune(
    graph: &Graph,
    sd: StateDict,
    resample: PosEmbedResampler<'_>,
) -> Result<FinetuneState, ModelError> {
    let roles = roles(graph);
    let is = |p: &ParamSpec, name: &Option<String>| name.as_deref() == Some(p.name.as_str());
    let tolerate = |p: &ParamSpec, found: &[usize]| {
        let ours = &p.shape;
        if roles.head.contains(&p.name) {
            return found.len() == ours.len() && found.get(1..) == ours.get(1..);
        }
        if is(p, &roles.stem) {
            return found.len() == 4
                && found[0] == ours[0]
                && found[2..] == ours[2..]
                && (ours[1] == 1 || found[1] == 1 || found[1] == 3);
        }
        if let Some((name, prefix)) = &roles.pos_embed {
            if *name == p.name {
                return found.len() == 3
                    && found[0] == 1
                    && found[2] == ours[2]
                    && found[1] > *prefix
                    && square_side(found[1] - prefix).is_some();
            }
        }
        false
    };
    let (mut state, tolerated) = adopt_tolerating(graph, sd, &tolerate)?;
    let mut adaptations = vec![];
    for t in tolerated {
        let spec = graph
            .param(&t.name)
            .expect("tolerated tensors are graph parameters");
        let fail = |msg: String| ModelError::Mismatch {
            preset: graph.preset.clone(),
            details: format!("  {}: {msg}", t.key),
        };
        if roles.head.contains(&t.name) {
            state.remove(&t.name);
            adaptations.push(Adaptation::HeadReinitialised {
                key: t.key,
                found: t.found,
                expected: spec.shape.clone(),
            });
        } else if is(spec, &roles.stem) {
            let w = &state[&t.name];
            let adapted = adapt_input_conv(w, spec.shape[1]).map_err(fail)?;
            state.insert(t.name.clone(), adapted);
            adaptations.push(Adaptation::StemChannels {
                key: t.key,
                from: t.found[1],
                to: spec.shape[1],
            });
        } else if let Some((_, prefix)) = &roles.pos_embed {
            let side = square_side(t.found[1] - prefix).expect("checked by tolerate");
            let to_tokens = spec.shape[1] - prefix;
            let to = match graph.nodes.iter().find_map(|n| match n.op {
                Op::TokensToMap { height, width, .. } => Some([height, width]),
                _ => None,
            }) {
                Some(hw) if hw[0] * hw[1] == to_tokens => hw,
                _ => {
                    let s = square_side(to_tokens).ok_or_else(|| {
                        fail(format!(
                            "the model's {to_tokens} patches are not a known grid"
                        ))
                    })?;
                    [s, s]
                }
            };
            let from = [side, side];
            let resampled = resample(&state[&t.name], from, to, *prefix).map_err(fail)?;
            if resampled.shape != spec.shape {
                return Err(fail(format!(
                    "resampled to {:?}, the model needs {:?}",
                    resampled.shape, spec.shape
                )));
            }
            state.insert(t.name.clone(), resampled);
            adaptations.push(Adaptation::PosEmbedResampled {
                key: t.key,
                from,
                to,
                prefix_tokens: *prefix,
            });
        }
    }
    Ok(FinetuneState { state, adaptations })
}

/// Reads `path` and adopts it for fine-tuning `graph` ([`adopt_for_finetune`]); errors name the
/// file.
pub fn read_for_finetune(
    graph: &Graph,
    path: &Path,
    resample: PosEmbedResampler<'_>,
) -> Result<FinetuneState, ModelError> {
    let sd = super::read_checkpoint(path)?;
    adopt_for_finetune(graph, sd, resample).map_err(|e| match e {
        ModelError::Mismatch { preset, details } => ModelError::Mismatch {
            preset,
            details: format!("  {}\n{details}", path.display()),
        },
        other => other,
    })
}

/// The classifier's parameters (weight, bias of the linear layer producing the logits): what a
/// head learning-rate multiplier scales and a linear probe trains.
pub fn head_params(graph: &Graph) -> Vec<String> {
    roles(graph).head
}

/// Each parameter's depth for layer-wise learning-rate decay, as the BEiT / ConvNeXt
/// fine-tuning recipes count it: 0 for the stem (and ViT's class token and position
/// embedding), `i` for the `i`-th residual block (1-based, in network order), a downsampling
/// layer with the block after it, `blocks + 1` for the final norm and head. Returned with
/// `blocks + 1`, the depth whose scale is 1.
pub fn layer_depths(graph: &Graph) -> (Vec<(String, usize)>, usize) {
    let block_of = |name: &str| -> Option<String> {
        let parts: Vec<&str> = name.split('.').collect();
        fn is_index(s: &str) -> bool {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
        }
        let idx = |j: usize| parts.get(j).is_some_and(|s| is_index(s));
        for (i, p) in parts.iter().enumerate() {
            // ConvNeXt / SLaK `stages.S.B.`, ViT `blocks.B.`, ResNet `layerS.B.`.
            let key = match *p {
                "stages" if idx(i + 1) && idx(i + 2) => Some(parts[..i + 3].join(".")),
                "blocks" if idx(i + 1) => Some(parts[..i + 2].join(".")),
                p if p.starts_with("layer") && is_index(&p[5..]) && idx(i + 1) => {
                    Some(parts[..i + 2].join("."))
                }
                _ => None,
            };
            if key.is_some() {
                return key;
            }
        }
        None
    };
    let blocks: Vec<Option<String>> = graph.params.iter().map(|p| block_of(&p.name)).collect();
    let mut order: Vec<&str> = vec![];
    for b in blocks.iter().flatten() {
        if !order.contains(&b.as_str()) {
            order.push(b);
        }
    }
    let n = order.len();
    let depth_of_block = |b: &str| order.iter().position(|o| *o == b).unwrap_or(0) + 1;
    let depths = graph
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let d = match &blocks[i] {
                Some(b) => depth_of_block(b),
                None => {
                    let seen_before = blocks[..i].iter().any(Option::is_some);
                    match blocks[i + 1..].iter().flatten().next() {
                        // Before any block: the stem; between blocks: the next block's.
                        Some(next) if seen_before => depth_of_block(next),
                        Some(_) => 0,
                        None if seen_before => n + 1,
                        None => 0,
                    }
                }
            };
            (p.name.clone(), d)
        })
        .collect();
    (depths, n + 1)
}
