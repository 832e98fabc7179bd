//! The [`Collective`] over MPI (rsmpi), for processes started by `mpirun`, `mpiexec` or
//! `srun`. MPI is initialised only when a launcher started several ranks
//! (`start::world`), so the same binary still runs alone without one.

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use crate::dist::Collective;

/// `MPI_COMM_WORLD`, and this rank's place on its node. MPI is finalised when it drops.
pub struct MpiWorld {
    world: SimpleCommunicator,
    local_rank: usize,
    // Declared last: dropped (MPI_Finalize) after the communicators.
    _universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI; `None` when it already was (a second call in one process).
    pub fn init() -> Option<MpiWorld> {
        let universe = mpi::initialize()?;
        let world = universe.world();
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Some(MpiWorld { world, local_rank, _universe: universe })
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn sum_f32(&self, data: &mut [f32]) {
        let send = data.to_vec();
        self.world.all_reduce_into(&send[..], data, SystemOperation::sum());
    }

    fn sum_f64(&self, data: &mut [f64]) {
        let send = data.to_vec();
        self.world.all_reduce_into(&send[..], data, SystemOperation::sum());
    }

    fn gather_u64(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size()];
        self.world.all_gather_into(&value, &mut all[..]);
        all
    }

    fn broadcast_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let mut out = if self.is_leader() { bytes.to_vec() } else { vec![0u8; len as usize] };
        root.broadcast_into(&mut out[..]);
        out
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
