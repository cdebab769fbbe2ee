//! Adopting a foreign state dict: the layout its keys fit (from the graph family's
//! [`crate::layout::Layout`]s), checked strictly in the file's own names, renamed to ours.

use super::{mismatch_details, StateDict};
use crate::graph::{DType, Graph, ParamSpec};
use crate::layout::Layout;
use crate::ModelError;
use std::collections::BTreeSet;

/// One of our parameters as a layout names and shapes it.
struct Planned<'g> {
    param: &'g ParamSpec,
    key: String,
    shape: Vec<usize>,
}

/// Our parameters under one layout, or `None` when the layout cannot name one of them or
/// gives two of them the same key (then it is not this graph's layout).
fn plan<'g>(graph: &'g Graph, layout: &Layout) -> Option<Vec<Planned<'g>>> {
    let planned: Vec<Planned> = graph
        .params
        .iter()
        .map(|param| {
            let (key, rule) = layout.key_for(&param.name)?;
            Some(Planned {
                param,
                key,
                shape: rule.theirs(&param.shape),
            })
        })
        .collect::<Option<_>>()?;
    let distinct: BTreeSet<&str> = planned.iter().map(|p| p.key.as_str()).collect();
    (distinct.len() == planned.len()).then_some(planned)
}

/// Takes a state dict in our layout or in one of the graph family's foreign layouts (see
/// [`crate::families::foreign_layouts`]) and returns it under the graph's parameter names.
/// The layout is the one most of the file's keys fit; the check is strict in both directions
/// (missing, unexpected and wrong-shape keys, named as the file names them).
pub fn adopt_state_dict(graph: &Graph, sd: StateDict) -> Result<StateDict, ModelError> {
    adopt_tolerating(graph, sd, &|_, _| false).map(|(sd, _)| sd)
}

/// A tensor whose shape differs from its parameter's and that the caller accepted: under our
/// name, with the file's key and the shape found (the tensor keeps that shape).
pub(crate) struct Tolerated {
    pub name: String,
    pub key: String,
    pub found: Vec<usize>,
}

/// [`adopt_state_dict`], except that a wrong-shape tensor `tolerate(param, found_shape)` accepts
/// is kept at the shape found and listed, for the caller to adapt.
pub(crate) fn adopt_tolerating(
    graph: &Graph,
    mut sd: StateDict,
    tolerate: &dyn Fn(&ParamSpec, &[usize]) -> bool,
) -> Result<(StateDict, Vec<Tolerated>), ModelError> {
    let layouts = crate::families::foreign_layouts(&graph.arch);
    let ours_fit = graph
        .params
        .iter()
        .filter(|p| sd.contains_key(&p.name))
        .count();
    // Reversed: of equal fits, `max_by_key` keeps the last, i.e. the first layout listed.
    let best = layouts
        .iter()
        .rev()
        .filter_map(|l| plan(graph, l).map(|p| (l, p)))
        .map(|(l, p)| {
            // Keys present, then those also of the planned shape: two layouts with the same
            // names (timm's linear and 1x1-conv MLPs) are told apart by shape.
            let present = p.iter().filter(|p| sd.contains_key(&p.key)).count();
            let shaped = p
                .iter()
                .filter(|p| sd.get(&p.key).is_some_and(|t| t.shape == p.shape))
                .count();
            (l, p, (present, shaped))
        })
        .max_by_key(|(.., fit)| *fit)
        .filter(|(.., (present, _))| *present > ours_fit);
    let (layout_name, plan) = match best {
        Some((layout, plan, _)) => (Some(layout.name), plan),
        // Our own layout: every key is the parameter's name, every shape its own.
        None => (
            None,
            graph
                .params
                .iter()
                .map(|param| Planned {
                    param,
                    key: param.name.clone(),
                    shape: param.shape.clone(),
                })
                .collect(),
        ),
    };
    let mut missing = vec![];
    let mut wrong = vec![];
    let mut tolerated = vec![];
    for p in &plan {
        match sd.get(&p.key) {
            None => missing.push(p.key.clone()),
            Some(t) => {
                let dtype_ok = p.param.dtype != DType::F32 || t.as_f32().is_some();
                if t.shape != p.shape && dtype_ok && tolerate(p.param, &t.shape) {
                    tolerated.push(Tolerated {
                        name: p.param.name.clone(),
                        key: p.key.clone(),
                        found: t.shape.clone(),
                    });
                } else if t.shape != p.shape || !dtype_ok {
                    wrong.push(format!(
                        "{}: expected {:?} {:?}, found {:?} {}",
                        p.key,
                        p.param.dtype,
                        p.shape,
                        t.shape,
                        t.dtype_name()
                    ));
                }
            }
        }
    }
    let expected: BTreeSet<&str> = plan.iter().map(|p| p.key.as_str()).collect();
    let unexpected: Vec<String> = sd
        .keys()
        .filter(|k| !expected.contains(k.as_str()))
        .cloned()
        .collect();
    if !(missing.is_empty() && wrong.is_empty() && unexpected.is_empty()) {
        let mut details = match layout_name {
            Some(name) => format!(
                "  read as a {name} checkpoint ({} of {} keys fit)\n",
                plan.len() - missing.len(),
                plan.len()
            ),
            None => String::new(),
        };
        details.push_str(&mismatch_details(&missing, &unexpected, &wrong));
        if layout_name.is_none() && !layouts.is_empty() {
            let names: Vec<_> = layouts.iter().map(|l| l.name).collect();
            details.push_str(&format!(
                "\n  (read in the official layout; this family also loads {} checkpoints)",
                names.join(", ")
            ));
        }
        return Err(ModelError::Mismatch {
            preset: graph.preset.clone(),
            details,
        });
    }
    // Every planned key is present, distinct and of the right (or an accepted) size: move each
    // tensor over.
    let mut out = StateDict::new();
    for p in plan {
        if let Some(mut t) = sd.remove(&p.key) {
            if t.shape == p.shape {
                t.shape = p.param.shape.clone();
            }
            out.insert(p.param.name.clone(), t);
        }
    }
    Ok((out, tolerated))
}
