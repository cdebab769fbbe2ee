//! The training and validation streams of a run.

use crate::config::TrainConfig;
use crate::data::{self, Loader, LoaderConfig, Transform};
use crate::TrainError;
use lkd_models::Graph;
use std::sync::Arc;

pub(super) fn loader_config(
    config: &TrainConfig,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        workers: config.data.workers,
        prefetch: config.data.prefetch,
        seed: config.run.seed,
        shuffle,
        drop_last,
        balanced: shuffle && config.data.balanced_sampling,
    }
}

/// The training stream of `config` for a model `graph`: what a run trains on, batch for batch,
/// and what the teacher-output cache is keyed by.
pub fn training_loader(
    config: &TrainConfig,
    graph: &Graph,
    train_set: Arc<data::Dataset>,
) -> Result<Loader, TrainError> {
    training_loader_sharded(config, graph, train_set, data::Shard::whole())
}

/// [`training_loader`] for one data-parallel worker: its rows of each global batch.
pub fn training_loader_sharded(
    config: &TrainConfig,
    graph: &Graph,
    train_set: Arc<data::Dataset>,
    shard: data::Shard,
) -> Result<Loader, TrainError> {
    Ok(Loader::sharded(
        train_set,
        Transform::train(&config.data.augment, &graph.preprocess),
        config
            .data
            .mixup
            .clone()
            .map(|m| m.with_classes(graph.num_classes, config.optim.label_smoothing)),
        loader_config(config, config.optim.batch_size, true, true),
        shard,
    )?)
}
