//! The few collective operations data-parallel training needs, over MPI or over one
//! process. Every call is made by every rank in the same order (MPI's rule); a rank that
//! fails ends the whole job (`abort`) rather than leave the others waiting in a call.

/// A group of ranks training one model. Sums are element-wise over ranks, and every rank
/// gets the same result.
pub trait Collective {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// This process's rank among the ranks on its node (for choosing a GPU).
    fn local_rank(&self) -> usize;
    /// Replaces `data` by its sum over ranks.
    fn sum_f32(&self, data: &mut [f32]);
    /// Replaces `data` by its sum over ranks.
    fn sum_f64(&self, data: &mut [f64]);
    /// Every rank's `value`, in rank order.
    fn gather_u64(&self, value: u64) -> Vec<u64>;
    /// Rank 0's `bytes`, on every rank.
    fn broadcast_bytes(&self, bytes: &[u8]) -> Vec<u8>;
    /// Ends every rank of the job at once, with `code` as its exit status.
    fn abort(&self, code: i32) -> !;

    /// Whether this rank writes the run's files and log (rank 0).
    fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// The mean over ranks of one value.
    fn mean(&self, value: f64) -> f64 {
        let mut v = [value];
        self.sum_f64(&mut v);
        v[0] / self.size() as f64
    }
}

/// One process alone: every collective is the identity.
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn sum_f32(&self, _data: &mut [f32]) {}
    fn sum_f64(&self, _data: &mut [f64]) {}
    fn gather_u64(&self, value: u64) -> Vec<u64> {
        vec![value]
    }
    fn broadcast_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        bytes.to_vec()
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
