//! Deploy rewrites: each is a (Graph, weights) → (Graph, weights) pass that keeps the logits
//! equal up to float rounding, so it can be A/B-tested on its own. They match generic op
//! patterns, never architecture names.

use crate::ExportError;
use lkd_models::checkpoint::StateDict;
use lkd_models::graph::{DType, Init, NormAxis, Op, ParamKind, ParamSpec};
use lkd_models::{Graph, HostTensor, ValueId};
use std::collections::HashSet;

/// What one pass changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassStat {
    pub name: &'static str,
    /// How many pattern instances were rewritten.
    pub rewrites: usize,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub params_before: usize,
    pub params_after: usize,
    pub millis: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Removed; its users read this (older) value instead.
    Alias(ValueId),
    /// Removed with nothing to stand in (dead code).
    Drop,
}

/// Users of every value; the graph output counts as a user (`usize::MAX`).
fn consumers(g: &Graph) -> Vec<Vec<usize>> {
    let mut c = vec![vec![]; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in &n.inputs {
            c[v].push(i);
        }
    }
    c[g.output].push(usize::MAX);
    c
}

fn single_user(c: &[Vec<usize>], v: ValueId) -> Option<usize> {
    match c[v].as_slice() {
        [u] if *u != usize::MAX => Some(*u),
        _ => None,
    }
}

/// How many nodes read each parameter (a pass only rewrites parameters it owns alone).
fn param_uses(g: &Graph, name: &str) -> usize {
    g.nodes
        .iter()
        .filter(|n| n.op.param_names().contains(&name))
        .count()
}

/// Renumbers after removals, remaps taps and output, and drops parameters no node reads.
fn compact(g: &mut Graph, weights: &mut StateDict, fate: &[Fate]) {
    let mut map: Vec<Option<ValueId>> = vec![None; g.nodes.len()];
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        match fate[i] {
            Fate::Keep => {
                let mut n = n.clone();
                n.inputs = n
                    .inputs
                    .iter()
                    .map(|&v| map[v].expect("input of a kept node was dropped"))
                    .collect();
                map[i] = Some(nodes.len());
                nodes.push(n);
            }
            Fate::Alias(v) => map[i] = map[v],
            Fate::Drop => {}
        }
    }
    g.nodes = nodes;
    g.output = map[g.output].expect("graph output was dropped");
    g.taps = std::mem::take(&mut g.taps)
        .into_iter()
        .filter_map(|(k, v)| map[v].map(|v| (k, v)))
        .collect();
    let used: HashSet<String> = g
        .nodes
        .iter()
        .flat_map(|n| n.op.param_names().into_iter().map(str::to_string))
        .collect();
    g.params.retain(|p| used.contains(&p.name));
    weights.retain(|k, _| used.contains(k));
}

fn stat(name: &'static str, g: &Graph) -> PassStat {
    PassStat {
        name,
        nodes_before: g.nodes.len(),
        params_before: g.params.len(),
        ..Default::default()
    }
}

fn finish(mut s: PassStat, g: &Graph, t: std::time::Instant) -> PassStat {
    s.nodes_after = g.nodes.len();
    s.params_after = g.params.len();
    s.millis = t.elapsed().as_secs_f64() * 1e3;
    s
}

fn f32_of<'a>(w: &'a StateDict, name: &str) -> Result<&'a [f32], ExportError> {
    w.get(name)
        .ok_or_else(|| ExportError::MissingWeight(name.to_string()))?
        .as_f32()
        .ok_or_else(|| ExportError::Lowering(format!("parameter {name} is not float")))
}

fn set_param(g: &mut Graph, w: &mut StateDict, name: &str, t: HostTensor) {
    match g.params.iter_mut().find(|p| p.name == name) {
        Some(p) => p.shape = t.shape.clone(),
        None => g.params.push(ParamSpec {
            name: name.to_string(),
            shape: t.shape.clone(),
            init: Init::Zeros,
            kind: ParamKind::Trainable { decay: false },
            dtype: DType::F32,
        }),
    }
    w.insert(name.to_string(), t);
}

/// A parameter name not yet used, derived from `base`.
fn fresh_name(g: &Graph, base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 1;
    while g.param(&name).is_some() {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

fn module_of(weight: &str) -> &str {
    weight.strip_suffix(".weight").unwrap_or(weight)
}

/// Drops nodes that do not reach `graph.output` (e.g. taps-only `TokensToMap`) and their
/// parameters.
pub fn prune(g: &mut Graph, w: &mut StateDict) -> PassStat {
    let t = std::time::Instant::now();
    let s = stat("prune", g);
    let live = crate::lower::live_nodes(g);
    let fate: Vec<Fate> = live
        .iter()
        .map(|&l| if l { Fate::Keep } else { Fate::Drop })
        .collect();
    let rewrites = fate.iter().filter(|f| **f == Fate::Drop).count();
    compact(g, w, &fate);
    finish(PassStat { rewrites, ..s }, g, t)
}

/// Removes inference identities (DropPath).
pub fn drop_identities(g: &mut Graph, w: &mut StateDict) -> PassStat {
    let t = std::time::Instant::now();
    let s = stat("drop_identities", g);
    let fate: Vec<Fate> = g
        .nodes
        .iter()
        .map(|n| {
            if matches!(n.op, Op::DropPath { .. }) {
                Fate::Alias(n.inputs[0])
            } else {
                Fate::Keep
            }
        })
        .collect();
    let rewrites = fate.iter().filter(|f| **f != Fate::Keep).count();
    compact(g, w, &fate);
    finish(PassStat { rewrites, ..s }, g, t)
}

/// Folds every BatchNorm whose input is a convolution read only by it into that conv's weight
/// and bias: `W' = W·γ/√(σ²+ε)`, `b' = (b − μ)·γ/√(σ²+ε) + β`.
pub fn fold_batchnorm(g: &mut Graph, w: &mut StateDict) -> Result<PassStat, ExportError> {
    let t = std::time::Instant::now();
    let s = stat("fold_batchnorm", g);
    let users = consumers(g);
    let mut fate = vec![Fate::Keep; g.nodes.len()];
    let mut rewrites = 0;
    // Node ids index `g.nodes` and `fate` alike (the producer `src` too), so loop over ids.
    #[allow(clippy::needless_range_loop)]
    for i in 0..g.nodes.len() {
        let Op::BatchNorm2d {
            weight: gamma,
            bias: beta,
            running_mean,
            running_var,
            eps,
            ..
        } = g.nodes[i].op.clone()
        else {
            continue;
        };
        let src = g.nodes[i].inputs[0];
        let Op::Conv2d { weight, bias, .. } = g.nodes[src].op.clone() else {
            continue;
        };
        if single_user(&users, src) != Some(i)
            || param_uses(g, &weight) != 1
            || bias.as_deref().is_some_and(|b| param_uses(g, b) != 1)
        {
            continue;
        }
        let (gm, bt, mu, var) = (
            f32_of(w, &gamma)?,
            f32_of(w, &beta)?,
            f32_of(w, &running_mean)?,
            f32_of(w, &running_var)?,
        );
        let scale: Vec<f64> = gm
            .iter()
            .zip(var)
            .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
            .collect();
        let old_b: Vec<f32> = match &bias {
            Some(b) => f32_of(w, b)?.to_vec(),
            None => vec![0.0; scale.len()],
        };
        let new_b: Vec<f32> = (0..scale.len())
            .map(|o| ((old_b[o] as f64 - mu[o] as f64) * scale[o] + bt[o] as f64) as f32)
            .collect();
        let wt = w.get(&weight).unwrap().clone();
        let per = wt.numel() / wt.shape[0];
        let data: Vec<f32> = wt
            .as_f32()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(k, &x)| (x as f64 * scale[k / per]) as f32)
            .collect();
        set_param(g, w, &weight, HostTensor::f32(wt.shape.clone(), data));
        let bname = bias
            .clone()
            .unwrap_or_else(|| fresh_name(g, &format!("{}.bias", module_of(&weight))));
        set_param(g, w, &bname, HostTensor::f32(vec![scale.len()], new_b));
        if let Op::Conv2d { bias, .. } = &mut g.nodes[src].op {
            *bias = Some(bname);
        }
        fate[i] = Fate::Alias(src);
        rewrites += 1;
    }
    compact(g, w, &fate);
    Ok(finish(PassStat { rewrites, ..s }, g, t))
}

/// Folds a layer-scale `Scale` that follows a Linear (read only by it) into that Linear:
/// γ multiplies the output rows of W and b.
pub fn fold_layer_scale(g: &mut Graph, w: &mut StateDict) -> Result<PassStat, ExportError> {
    let t = std::time::Instant::now();
    let s = stat("fold_layer_scale", g);
    let users = consumers(g);
    let mut fate = vec![Fate::Keep; g.nodes.len()];
    let mut rewrites = 0;
    // Node ids index `g.nodes` and `fate` alike (the producer `src` too), so loop over ids.
    #[allow(clippy::needless_range_loop)]
    for i in 0..g.nodes.len() {
        let Op::Scale { param } = g.nodes[i].op.clone() else {
            continue;
        };
        let src = g.nodes[i].inputs[0];
        let Op::Linear { weight, bias } = g.nodes[src].op.clone() else {
            continue;
        };
        if single_user(&users, src) != Some(i)
            || param_uses(g, &weight) != 1
            || bias.as_deref().is_some_and(|b| param_uses(g, b) != 1)
        {
            continue;
        }
        let gamma = f32_of(w, &param)?.to_vec();
        let wt = w.get(&weight).unwrap().clone();
        let din = wt.shape[1];
        let data: Vec<f32> = wt
            .as_f32()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(k, &x)| x * gamma[k / din])
            .collect();
        set_param(g, w, &weight, HostTensor::f32(wt.shape.clone(), data));
        if let Some(b) = &bias {
            let nb: Vec<f32> = f32_of(w, b)?
                .iter()
                .zip(&gamma)
                .map(|(x, g)| x * g)
                .collect();
            set_param(g, w, b, HostTensor::f32(vec![nb.len()], nb));
        }
        fate[i] = Fate::Alias(src);
        rewrites += 1;
    }
    compact(g, w, &fate);
    Ok(finish(PassStat { rewrites, ..s }, g, t))
}

/// Several depthwise convs on one input with one stride and centred padding, summed by a tree
/// of Adds: the generic shape of a decomposed large kernel (plus its small-kernel branch).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelGroup {
    /// Name of the root Add node (the module that sums the branches).
    pub name: String,
    pub root: usize,
    pub adds: Vec<usize>,
    pub convs: Vec<usize>,
    pub channels: usize,
    pub stride: [usize; 2],
    /// Input map size at the graph's input size.
    pub input_hw: [usize; 2],
    /// Kernel (kh, kw) of each conv, in `convs` order.
    pub kernels: Vec<[usize; 2]>,
}

impl KernelGroup {
    /// Key of the layer shape auto-tuning times once.
    pub fn shape_key(&self) -> String {
        let k: Vec<String> = self
            .kernels
            .iter()
            .map(|k| format!("{}x{}", k[0], k[1]))
            .collect();
        format!(
            "c{} {}x{} s{} [{}]",
            self.channels,
            self.input_hw[0],
            self.input_hw[1],
            self.stride[0],
            k.join("+")
        )
    }

    /// The dense kernel covering every branch.
    pub fn dense_kernel(&self) -> [usize; 2] {
        [
            self.kernels.iter().map(|k| k[0]).max().unwrap(),
            self.kernels.iter().map(|k| k[1]).max().unwrap(),
        ]
    }

    /// Branches kept by the decomposed form: those whose kernel no other kernel contains.
    /// Returns, per conv, the index (into `convs`) of the branch it is merged into.
    pub fn decomposed_targets(&self) -> Vec<usize> {
        let n = self.kernels.len();
        let contains = |a: [usize; 2], b: [usize; 2]| a[0] >= b[0] && a[1] >= b[1];
        let mut keep: Vec<usize> = vec![];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.kernels[i][0] * self.kernels[i][1]));
        for &i in &order {
            if !keep
                .iter()
                .any(|&k| contains(self.kernels[k], self.kernels[i]))
            {
                keep.push(i);
            }
        }
        (0..n)
            .map(|i| {
                if keep.contains(&i) {
                    i
                } else {
                    *keep
                        .iter()
                        .find(|&&k| contains(self.kernels[k], self.kernels[i]))
                        .unwrap()
                }
            })
            .collect()
    }
}

/// Finds every [`KernelGroup`] (maximal Add trees whose leaves qualify).
pub fn find_kernel_groups(g: &Graph) -> Vec<KernelGroup> {
    let users = consumers(g);
    let [h, w] = g.input_size;
    let shapes = match g.infer_shapes(1, h, w) {
        Ok(s) => s,
        Err(_) => return vec![],
    };
    let mut out: Vec<KernelGroup> = vec![];
    let mut claimed: HashSet<usize> = HashSet::new();
    for root in (0..g.nodes.len()).rev() {
        if !matches!(g.nodes[root].op, Op::Add) || claimed.contains(&root) {
            continue;
        }
        // Expand Adds read only by their parent; everything else is a leaf.
        let (mut adds, mut leaves, mut stack) = (vec![root], vec![], g.nodes[root].inputs.clone());
        while let Some(v) = stack.pop() {
            if matches!(g.nodes[v].op, Op::Add) && single_user(&users, v).is_some() {
                adds.push(v);
                stack.extend(g.nodes[v].inputs.iter().copied());
            } else {
                leaves.push(v);
            }
        }
        if leaves.len() < 2 {
            continue;
        }
        let mut ok = true;
        let mut kernels = vec![];
        let (mut input, mut stride, mut channels) = (None, None, 0);
        for &v in &leaves {
            let n = &g.nodes[v];
            let Op::Conv2d {
                weight,
                stride: s,
                padding,
                groups,
                ..
            } = &n.op
            else {
                ok = false;
                break;
            };
            let ws = match g.param(weight) {
                Some(p) => &p.shape,
                None => {
                    ok = false;
                    break;
                }
            };
            let depthwise = ws[1] == 1 && *groups == ws[0] && shapes[n.inputs[0]][1] == ws[0];
            let centred = ws[2] % 2 == 1
                && ws[3] % 2 == 1
                && padding[0] == ws[2] / 2
                && padding[1] == ws[3] / 2;
            let same_in = *input.get_or_insert(n.inputs[0]) == n.inputs[0];
            let same_stride = *stride.get_or_insert(*s) == *s;
            if !(depthwise && centred && same_in && same_stride && single_user(&users, v).is_some())
                || leaves.iter().filter(|&&u| u == v).count() > 1
            {
                ok = false;
                break;
            }
            channels = ws[0];
            kernels.push([ws[2], ws[3]]);
        }
        if !ok {
            continue;
        }
        claimed.extend(adds.iter().copied());
        let input = input.unwrap();
        out.push(KernelGroup {
            name: g.nodes[root].name.clone(),
            root,
            adds,
            convs: leaves,
            channels,
            stride: stride.unwrap(),
            input_hw: [shapes[input][2], shapes[input][3]],
            kernels,
        });
    }
    out.reverse();
    out
}

/// How a kernel group is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelForm {
    /// Branches left as they are.
    Unchanged,
    /// Branches a kernel contains are added into it, centre-aligned (k×s + s×k for SLaK).
    Decomposed,
    /// One conv with the covering kernel.
    Dense,
}

impl KernelForm {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelForm::Unchanged => "none",
            KernelForm::Decomposed => "decomposed",
            KernelForm::Dense => "dense",
        }
    }
}

/// Adds `src` (`[C,1,sh,sw]`) into `dst` (`[C,1,dh,dw]`), centre-aligned.
fn add_centred(dst: &mut [f32], dk: [usize; 2], src: &[f32], sk: [usize; 2], channels: usize) {
    let (oy, ox) = ((dk[0] - sk[0]) / 2, (dk[1] - sk[1]) / 2);
    for c in 0..channels {
        for y in 0..sk[0] {
            for x in 0..sk[1] {
                dst[c * dk[0] * dk[1] + (y + oy) * dk[1] + x + ox] +=
                    src[c * sk[0] * sk[1] + y * sk[1] + x];
            }
        }
    }
}

/// Rewrites each group into the form `plan` picks. Returns the forms applied, per group.
pub fn merge_kernels(
    g: &mut Graph,
    w: &mut StateDict,
    plan: &mut dyn FnMut(&KernelGroup) -> Result<KernelForm, ExportError>,
) -> Result<(PassStat, Vec<(KernelGroup, KernelForm)>), ExportError> {
    let t = std::time::Instant::now();
    let s = stat("merge_kernels", g);
    let groups = find_kernel_groups(g);
    let mut fate = vec![Fate::Keep; g.nodes.len()];
    let mut applied = vec![];
    let mut rewrites = 0;
    for grp in groups {
        let form = plan(&grp)?;
        if form == KernelForm::Unchanged {
            applied.push((grp, form));
            continue;
        }
        let c = grp.channels;
        let targets: Vec<usize> = match form {
            KernelForm::Dense => vec![0; grp.convs.len()],
            KernelForm::Decomposed | KernelForm::Unchanged => grp.decomposed_targets(),
        };
        let mut kept: Vec<usize> = targets.clone();
        kept.sort();
        kept.dedup();
        let mut new_convs = vec![];
        for &k in &kept {
            let kk = if form == KernelForm::Dense {
                grp.dense_kernel()
            } else {
                grp.kernels[k]
            };
            let mut wsum = vec![0f32; c * kk[0] * kk[1]];
            let mut bsum: Option<Vec<f32>> = None;
            for (j, &conv) in grp.convs.iter().enumerate() {
                if targets[j] != k {
                    continue;
                }
                let Op::Conv2d { weight, bias, .. } = &g.nodes[conv].op else {
                    unreachable!()
                };
                add_centred(&mut wsum, kk, f32_of(w, weight)?, grp.kernels[j], c);
                if let Some(b) = bias {
                    let bv = f32_of(w, b)?;
                    let acc = bsum.get_or_insert_with(|| vec![0.0; c]);
                    acc.iter_mut().zip(bv).for_each(|(a, x)| *a += x);
                }
            }
            let conv = grp.convs[k];
            let Op::Conv2d {
                weight,
                bias,
                stride,
                groups,
                ..
            } = g.nodes[conv].op.clone()
            else {
                unreachable!()
            };
            let (wname, bname) = if form == KernelForm::Dense {
                (
                    fresh_name(g, &format!("{}.reparam.weight", grp.name)),
                    fresh_name(g, &format!("{}.reparam.bias", grp.name)),
                )
            } else {
                (
                    weight.clone(),
                    bias.clone()
                        .unwrap_or_else(|| fresh_name(g, &format!("{}.bias", module_of(&weight)))),
                )
            };
            set_param(
                g,
                w,
                &wname,
                HostTensor::f32(vec![c, 1, kk[0], kk[1]], wsum),
            );
            let bias = match bsum {
                Some(b) => {
                    set_param(g, w, &bname, HostTensor::f32(vec![c], b));
                    Some(bname)
                }
                None => None,
            };
            g.nodes[conv].op = Op::Conv2d {
                weight: wname,
                bias,
                stride,
                padding: [kk[0] / 2, kk[1] / 2],
                groups,
            };
            if form == KernelForm::Dense {
                g.nodes[conv].name = format!("{}.reparam", grp.name);
            }
            new_convs.push(conv);
        }
        // Drop the merged-away convs and the Add tree, then rebuild a chain of Adds over what is left.
        for (j, &conv) in grp.convs.iter().enumerate() {
            if !kept.contains(&j) {
                fate[conv] = Fate::Drop;
            }
        }
        for &a in &grp.adds {
            fate[a] = Fate::Drop;
        }
        // Reuse the Add nodes (all placed after every conv) for the remaining sums.
        let mut adds = grp.adds.clone();
        adds.sort();
        let mut acc = new_convs[0];
        for (&conv, &a) in new_convs[1..].iter().zip(&adds) {
            g.nodes[a].inputs = vec![acc, conv];
            fate[a] = Fate::Keep;
            acc = a;
        }
        // Whatever read the old root reads the new sum.
        if acc != grp.root {
            let root = grp.root;
            fate[root] = Fate::Alias(acc);
            // An Alias must point backwards; a kept Add at a later index than the root cannot
            // happen since the root is the last Add of its tree.
        }
        rewrites += 1;
        applied.push((grp, form));
    }
    // Kept Adds must come after their inputs: they sit where the old tree's Adds were (after
    // every conv), and reuse ascending order, so the order stays topological.
    compact(g, w, &fate);
    Ok((finish(PassStat { rewrites, ..s }, g, t), applied))
}

/// Rewrites channels-last pointwise runs `Permute(0,2,3,1) → {LayerNorm(last), Linear, GELU,
/// ReLU}* → Permute(0,3,1,2)` into channels-first LayerNorm and 1×1 convs (no transposes).
pub fn pointwise_to_conv(g: &mut Graph, w: &mut StateDict) -> PassStat {
    let t = std::time::Instant::now();
    let s = stat("pointwise_to_conv", g);
    let users = consumers(g);
    let mut fate = vec![Fate::Keep; g.nodes.len()];
    let mut rewrites = 0;
    for i in 0..g.nodes.len() {
        if !matches!(&g.nodes[i].op, Op::Permute { perm } if perm == &[0, 2, 3, 1]) {
            continue;
        }
        let mut chain = vec![];
        let mut cur = i;
        let end = loop {
            let Some(u) = single_user(&users, cur) else {
                break None;
            };
            // Every op listed (no `_` arm), so a new op is placed knowingly: pointwise over
            // channels (may join the run), the closing transpose, or a run breaker.
            match &g.nodes[u].op {
                Op::LayerNorm {
                    axis: NormAxis::Last,
                    ..
                }
                | Op::Linear { .. }
                | Op::Gelu
                | Op::Relu
                | Op::DropPath { .. } => chain.push(u),
                Op::Permute { perm } if perm == &[0, 3, 1, 2] => break Some(u),
                Op::Permute { .. }
                | Op::LayerNorm {
                    axis: NormAxis::ChannelsFirst,
                    ..
                }
                | Op::Input
                | Op::Conv2d { .. }
                | Op::BatchNorm2d { .. }
                | Op::Add
                | Op::Scale { .. }
                | Op::GlobalAvgPool
                | Op::MaxPool2d { .. }
                | Op::PatchTokens
                | Op::PrependToken { .. }
                | Op::AddParam { .. }
                | Op::SelfAttention { .. }
                | Op::SelectToken { .. }
                | Op::TokensToMap { .. } => break None,
            }
            cur = u;
        };
        let Some(end) = end else { continue };
        for &c in &chain {
            match g.nodes[c].op.clone() {
                Op::LayerNorm {
                    weight, bias, eps, ..
                } => {
                    g.nodes[c].op = Op::LayerNorm {
                        weight,
                        bias,
                        eps,
                        axis: NormAxis::ChannelsFirst,
                    }
                }
                Op::Linear { weight, bias } => {
                    let t = w.get_mut(&weight).unwrap();
                    t.shape = vec![t.shape[0], t.shape[1], 1, 1];
                    let shape = t.shape.clone();
                    if let Some(p) = g.params.iter_mut().find(|p| p.name == weight) {
                        p.shape = shape;
                    }
                    g.nodes[c].op = Op::Conv2d {
                        weight,
                        bias,
                        stride: [1, 1],
                        padding: [0, 0],
                        groups: 1,
                    };
                }
                // Elementwise: the same op works on either layout.
                Op::Gelu | Op::Relu | Op::DropPath { .. } => {}
                Op::Input
                | Op::Conv2d { .. }
                | Op::BatchNorm2d { .. }
                | Op::Add
                | Op::Scale { .. }
                | Op::Permute { .. }
                | Op::GlobalAvgPool
                | Op::MaxPool2d { .. }
                | Op::PatchTokens
                | Op::PrependToken { .. }
                | Op::AddParam { .. }
                | Op::SelfAttention { .. }
                | Op::SelectToken { .. }
                | Op::TokensToMap { .. } => unreachable!("the chain holds only ops accepted above"),
            }
        }
        fate[i] = Fate::Alias(g.nodes[i].inputs[0]);
        fate[end] = Fate::Alias(g.nodes[end].inputs[0]);
        rewrites += 1;
    }
    compact(g, w, &fate);
    finish(PassStat { rewrites, ..s }, g, t)
}
