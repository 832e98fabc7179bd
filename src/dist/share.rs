//! Which of a step's windows a rank trains on. Batches are defined globally: the windows
//! of micro-batch (seed, step, micro) are drawn as one process with the whole
//! `train.batch_size` draws them, and rank r of N takes the r-th of N equal slices, so
//! any world size that divides the batch trains on the same tokens.

use std::ops::Range;

use anyhow::{bail, Result};

/// The windows `batch * rank / size .. batch * (rank + 1) / size` of a global batch.
pub fn rank_share(batch: usize, rank: usize, size: usize) -> Result<Range<usize>> {
    if size == 0 || rank >= size {
        bail!("rank {rank} of {size} ranks does not exist");
    }
    if !batch.is_multiple_of(size) {
        bail!(
            "train.batch_size = {batch} does not split evenly over {size} ranks: use a multiple of {size} (the ranks' shares must be equal for their mean gradient to be the batch's)"
        );
    }
    let each = batch / size;
    Ok(rank * each..(rank + 1) * each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_tile_the_batch_in_rank_order() {
        let shares: Vec<_> = (0..4).map(|r| rank_share(12, r, 4).unwrap()).collect();
        assert_eq!(shares, vec![0..3, 3..6, 6..9, 9..12]);
        assert_eq!(rank_share(5, 0, 1).unwrap(), 0..5);
    }

    #[test]
    fn uneven_batches_and_missing_ranks_are_refused() {
        let e = rank_share(10, 0, 4).unwrap_err().to_string();
        assert!(e.contains("batch_size = 10") && e.contains("4 ranks"), "{e}");
        assert!(rank_share(8, 4, 4).is_err());
    }
}
