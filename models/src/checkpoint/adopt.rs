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
pub fn adopt_state_dict(graph: &Graph, mut sd: StateDict) -> Result<StateDict, ModelError> {
    let layouts = crate::families::foreign_layouts(&graph.arch);
    let ours_fit = graph
        .params
        .iter()
        .filter(|p| sd.contains_key(&p.name))
        .count();
    let best = layouts
        .iter()
        .filter_map(|l| plan(graph, l).map(|p| (l, p)))
        .map(|(l, p)| {
            let fit = p.iter().filter(|p| sd.contains_key(&p.key)).count();
            (l, p, fit)
        })
        .max_by_key(|(.., fit)| *fit)
        .filter(|(.., fit)| *fit > ours_fit);
    let Some((layout, plan, _)) = best else {
        return super::check_state_dict(graph, &sd)
            .map(|()| sd)
            .map_err(|e| match e {
                ModelError::Mismatch {
                    preset,
                    mut details,
                } if !layouts.is_empty() => {
                    let names: Vec<_> = layouts.iter().map(|l| l.name).collect();
                    details.push_str(&format!(
                        "\n  (read in the official layout; this family also loads {} checkpoints)",
                        names.join(", ")
                    ));
                    ModelError::Mismatch { preset, details }
                }
                other => other,
            });
    };
    let mut missing = vec![];
    let mut wrong = vec![];
    for p in &plan {
        match sd.get(&p.key) {
            None => missing.push(p.key.clone()),
            Some(t) => {
                let dtype_ok = p.param.dtype != DType::F32 || t.as_f32().is_some();
                if t.shape != p.shape || !dtype_ok {
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
        let header = format!(
            "  read as a {} checkpoint ({} of {} keys fit)\n",
            layout.name,
            plan.len() - missing.len(),
            plan.len()
        );
        return Err(ModelError::Mismatch {
            preset: graph.preset.clone(),
            details: header + &mismatch_details(&missing, &unexpected, &wrong),
        });
    }
    // Every planned key is present, distinct and of the right size: move each tensor over.
    let mut out = StateDict::new();
    for p in plan {
        if let Some(mut t) = sd.remove(&p.key) {
            t.shape = p.param.shape.clone();
            out.insert(p.param.name.clone(), t);
        }
    }
    Ok(out)
}
