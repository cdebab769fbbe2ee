//! Train vs eval semantics of the executor, as PyTorch defines them.

use lkd_models::ModelConfig;
use lkd_trainer::executor::{Executor, Params};
use tch::{Device, Kind, Tensor};

#[test]
fn batch_norm_train_uses_batch_stats_and_updates_running_stats() {
    tch::manual_seed(0);
    let graph = ModelConfig::preset("resnet_proxy").build().unwrap();
    let params = Params::init(&graph, Device::Cpu, 0).unwrap();
    let exec = Executor::new(graph);
    let x = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
    let eval1 = tch::no_grad(|| exec.forward(&params, &x, false, &[]).unwrap().logits);
    let rm_before = params.get("bn1.running_mean").copy();
    let train = tch::no_grad(|| exec.forward(&params, &x, true, &[]).unwrap().logits);
    assert!(
        (&train - &eval1).abs().max().double_value(&[]) > 1e-3,
        "train mode must use batch statistics"
    );
    // running_mean ← 0.9 · old + 0.1 · batch mean of bn1's input (conv1 output).
    let conv = x.conv2d(
        params.get("conv1.weight"),
        None::<Tensor>,
        [2, 2],
        [1, 1],
        [1, 1],
        1,
    );
    let batch_mean = conv.mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float);
    let want = rm_before * 0.9 + batch_mean * 0.1;
    assert!(
        (params.get("bn1.running_mean") - want)
            .abs()
            .max()
            .double_value(&[])
            < 1e-5
    );
    assert_eq!(params.get("bn1.num_batches_tracked").int64_value(&[]), 1);
    let eval2 = tch::no_grad(|| exec.forward(&params, &x, false, &[]).unwrap().logits);
    assert!(
        (&eval2 - &eval1).abs().max().double_value(&[]) > 0.0,
        "eval uses the updated running stats"
    );
}

#[test]
fn drop_path_is_identity_in_eval_and_random_in_train() {
    tch::manual_seed(1);
    let mut cfg = ModelConfig::preset("convnext_proxy");
    cfg.drop_path = Some(0.5);
    let graph = cfg.build().unwrap();
    let mut params = Params::init(&graph, Device::Cpu, 0).unwrap();
    // Make the residual branches matter (layer scale starts at 1e-6).
    for (name, t) in params.tensors.iter_mut() {
        if name.ends_with("gamma") {
            tch::no_grad(|| {
                let _ = t.fill_(1.0);
            });
        }
    }
    let exec = Executor::new(graph);
    let x = Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu));
    let a = tch::no_grad(|| exec.forward(&params, &x, false, &[]).unwrap().logits);
    let b = tch::no_grad(|| exec.forward(&params, &x, false, &[]).unwrap().logits);
    assert_eq!((&a - &b).abs().max().double_value(&[]), 0.0);
    exec.set_step_seed(1);
    let c = tch::no_grad(|| exec.forward(&params, &x, true, &[]).unwrap().logits);
    exec.set_step_seed(2);
    let d = tch::no_grad(|| exec.forward(&params, &x, true, &[]).unwrap().logits);
    assert!(
        (&c - &d).abs().max().double_value(&[]) > 1e-4,
        "drop path samples new masks per step in train mode"
    );
    exec.set_step_seed(1);
    let e = tch::no_grad(|| exec.forward(&params, &x, true, &[]).unwrap().logits);
    assert_eq!(
        (&c - &e).abs().max().double_value(&[]),
        0.0,
        "the same step seed draws the same masks"
    );
}

#[test]
fn wrong_input_shape_is_an_error() {
    let graph = ModelConfig::preset("vit_proxy").build().unwrap();
    let params = Params::init(&graph, Device::Cpu, 0).unwrap();
    let exec = Executor::new(graph);
    let x = Tensor::zeros([2, 3, 28, 28], (Kind::Float, Device::Cpu));
    let err = exec
        .forward(&params, &x, false, &[])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("expects input [N, 1, 28, 28]") && err.contains("[2, 3, 28, 28]"),
        "{err}"
    );
    let x = Tensor::zeros([2, 1, 32, 32], (Kind::Float, Device::Cpu));
    assert!(exec.forward(&params, &x, false, &[]).is_err());
    let x = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let err = exec
        .forward(&params, &x, false, &["stage9"])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("stage9"), "{err}");
}

/// A checkpoint file with one tensor of the wrong shape is refused with its name and both
/// shapes before any tensor reaches libtorch (no panic in a later conv).
#[test]
fn wrong_shaped_checkpoint_tensor_is_an_error() {
    let graph = ModelConfig::preset("resnet_proxy").build().unwrap();
    let mut sd = Params::init(&graph, Device::Cpu, 0)
        .unwrap()
        .to_state_dict()
        .unwrap();
    sd.insert(
        "conv1.weight".into(),
        lkd_models::HostTensor {
            shape: vec![3, 3],
            data: lkd_models::HostData::F32(vec![0.0; 9]),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    lkd_models::checkpoint::write_safetensors(&path, &sd, None).unwrap();
    let loaded = lkd_models::checkpoint::read_checkpoint_for(&graph, &path);
    let err = match loaded {
        Ok(sd) => Params::from_state_dict(&graph, &sd, Device::Cpu)
            .err()
            .expect("a wrong-shaped tensor must be refused")
            .to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("conv1.weight") && err.contains("[3, 3]") && err.contains("wrong shapes"),
        "{err}"
    );
}
