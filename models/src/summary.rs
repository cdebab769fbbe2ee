//! Human-readable views of a graph: the preset list and the per-layer table.

use crate::graph::{Graph, Op};
use crate::{ModelError, PRESETS};

/// One line per preset: name, family, input, parameters, GFLOPs (MACs).
pub fn preset_table() -> Result<String, ModelError> {
    let mut out = format!(
        "{:<21} {:<9} {:>11} {:>8} {:>13} {:>8}\n",
        "preset", "family", "input", "classes", "params", "GFLOPs"
    );
    for preset in PRESETS {
        let g = preset.spec().build()?;
        out.push_str(&format!(
            "{:<21} {:<9} {:>11} {:>8} {:>13} {:>8.3}\n",
            preset.name,
            preset.family_name(),
            format!("{}x{}x{}", g.in_chans, g.input_size[0], g.input_size[1]),
            g.num_classes,
            group_thousands(g.num_parameters()),
            g.macs()? as f64 / 1e9
        ));
    }
    Ok(out)
}

pub fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Layer table: every parameterised or shape-changing node with its output shape and params.
pub fn layer_table(g: &Graph) -> Result<String, ModelError> {
    let [h, w] = g.input_size;
    let shapes = g.infer_shapes(1, h, w)?;
    let mut out = format!(
        "{:<44} {:<14} {:<22} {:>11}\n",
        "module", "op", "output", "params"
    );
    for (i, node) in g.nodes.iter().enumerate() {
        let params: usize = node
            .op
            .param_names()
            .iter()
            .filter_map(|n| g.param(n))
            .filter(|p| p.is_trainable())
            .map(|p| p.numel())
            .sum();
        if matches!(
            node.op,
            Op::Permute { .. } | Op::Gelu | Op::Relu | Op::DropPath { .. }
        ) {
            continue;
        }
        let detail = match &node.op {
            Op::Conv2d {
                weight,
                stride,
                groups,
                ..
            } => {
                let s = &g.param(weight).unwrap().shape;
                format!(
                    "Conv{}x{}/{}{}",
                    s[2],
                    s[3],
                    stride[0],
                    if *groups > 1 { " dw" } else { "" }
                )
            }
            op => op.kind_name().to_string(),
        };
        out.push_str(&format!(
            "{:<44} {:<14} {:<22} {:>11}\n",
            node.name,
            detail,
            format!("{:?}", shapes[i]),
            group_thousands(params)
        ));
    }
    out.push_str(&format!(
        "total: {} parameters, {:.3} GFLOPs (MACs) at {}x{}x{}\n",
        group_thousands(g.num_parameters()),
        g.macs()? as f64 / 1e9,
        g.in_chans,
        h,
        w
    ));
    Ok(out)
}
