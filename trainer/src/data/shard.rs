//! Deterministic sharding of an epoch's order across data-parallel workers, so that N workers
//! with batch B see exactly what one worker with batch N·B sees: global batch k is
//! `order[k·N·B .. (k+1)·N·B]` and rank r takes its rows `[r·B, (r+1)·B)`.
//!
//! The per-rank order is a plain list of dataset indices, so the loader consumes it as it does
//! the unsharded permutation (batch k of the rank order is rank r's share of global batch k).
//! Per-sample augmentation is seeded by (seed, epoch, sample index) and is therefore the same
//! whichever rank draws the sample; batch-level Mixup/CutMix mixes within each rank's B rows (as
//! timm under DDP), so it is the one part that differs from a single N·B batch.

use super::DataError;

/// This worker's place in a data-parallel group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world_size: usize,
}

impl Shard {
    pub fn new(rank: usize, world_size: usize) -> Result<Self, DataError> {
        if world_size == 0 || rank >= world_size {
            return Err(DataError::Config(format!(
                "shard rank {rank} of world size {world_size}: need rank < world size"
            )));
        }
        Ok(Self { rank, world_size })
    }

    /// The single-process case (rank 0 of 1): the order is unchanged.
    pub fn whole() -> Self {
        Self {
            rank: 0,
            world_size: 1,
        }
    }

    /// Full global batches of `world_size · batch` in an epoch of `len` samples (the incomplete
    /// tail is dropped, as `drop_last` does for one worker with the global batch).
    pub fn global_batches(&self, len: usize, batch: usize) -> usize {
        len / (batch * self.world_size).max(1)
    }

    /// This rank's part of `order` (the epoch's permutation of `len` indices) with per-rank
    /// batch `batch`: `global_batches` consecutive runs of `batch` indices.
    pub fn rank_order(&self, order: &[usize], batch: usize) -> Result<Vec<usize>, DataError> {
        if batch == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        let global = batch * self.world_size;
        let batches = self.global_batches(order.len(), batch);
        if batches == 0 {
            return Err(DataError::Config(format!(
                "{} samples give no full global batch of {} workers x batch {batch} = {global}",
                order.len(),
                self.world_size
            )));
        }
        let mut mine = Vec::with_capacity(batches * batch);
        for k in 0..batches {
            let lo = k * global + self.rank * batch;
            mine.extend_from_slice(&order[lo..lo + batch]);
        }
        Ok(mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{open, synthetic, DatasetSpec, Loader, LoaderConfig, Split, Transform};
    use std::sync::Arc;

    #[test]
    fn ranks_partition_each_global_batch_in_order() {
        let order: Vec<usize> = (100..123).collect(); // 23 samples
        let shards: Vec<Vec<usize>> = (0..3)
            .map(|r| Shard::new(r, 3).unwrap().rank_order(&order, 2).unwrap())
            .collect();
        // 23 / (3·2) = 3 global batches; the last 5 samples are dropped.
        assert_eq!(shards[0], vec![100, 101, 106, 107, 112, 113]);
        assert_eq!(shards[1], vec![102, 103, 108, 109, 114, 115]);
        assert_eq!(shards[2], vec![104, 105, 110, 111, 116, 117]);
        assert_eq!(
            Shard::whole().rank_order(&order, 6).unwrap(),
            order[..18].to_vec()
        );
    }

    #[test]
    fn bad_shards_are_errors() {
        assert_eq!(
            Shard::new(2, 2).unwrap_err().to_string(),
            "data config: shard rank 2 of world size 2: need rank < world size"
        );
        let err = Shard::new(0, 4)
            .unwrap()
            .rank_order(&[1, 2, 3], 1)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "data config: 3 samples give no full global batch of 4 workers x batch 1 = 4"
        );
    }

    /// With the loader's own (seed, epoch) permutation, rank r's batches are rows
    /// [r·B, (r+1)·B) of the one-worker loader's batches of N·B.
    #[test]
    fn sharded_loader_batches_are_rows_of_the_global_batches() {
        let dir = tempfile::tempdir().unwrap();
        synthetic::write_jpeg_folder(dir.path(), 3, 6, 1, 16, 16, 7).unwrap();
        let ds = Arc::new(
            open(
                &DatasetSpec::new(crate::data::DatasetKind::Folder, dir.path()),
                Split::Train,
            )
            .unwrap(),
        );
        let pre = lkd_models::preprocess::Preprocess::imagenet(16);
        let (world, batch) = (2usize, 3usize);
        let global = Loader::new(
            ds.clone(),
            Transform::eval(&pre),
            None,
            LoaderConfig {
                workers: 1,
                ..LoaderConfig::train(world * batch, 5)
            },
        )
        .unwrap();
        let epoch = 1;
        let order = global.order(epoch);
        let global_batches: Vec<_> = global
            .epoch(epoch, 0)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(
            global_batches.len(),
            Shard::new(0, world)
                .unwrap()
                .global_batches(order.len(), batch)
        );
        for rank in 0..world {
            let mine = Shard::new(rank, world)
                .unwrap()
                .rank_order(&order, batch)
                .unwrap();
            for (k, g) in global_batches.iter().enumerate() {
                let rows = &g.samples[rank * batch..(rank + 1) * batch];
                assert_eq!(
                    &mine[k * batch..(k + 1) * batch],
                    rows,
                    "rank {rank} batch {k}"
                );
            }
        }
    }
}
