//! What the ranks of one job must agree on, checked where a disagreement would otherwise
//! train silently different models: the same binary and config at the start, the same
//! weights every `dist.check_every` steps. Each check gathers every rank's checksum, so
//! every rank sees the same list and stops with the same error, naming the ranks.

use anyhow::{bail, Result};
use moegrad_core::Tensor;

use crate::dist::{Collective, Solo};
use crate::train::config::RunConfig;

/// The world size an MPI launcher (Open MPI's mpirun, MPICH's Hydra, Slurm's srun) gave
/// this process, read from the variables it sets, or `None` when none started it. Slurm's
/// step variable, not `SLURM_NTASKS`: a batch script's own shell has that one too.
pub fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"].iter().find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// The ranks of this job: MPI's when a launcher started the process with more than one
/// rank (needs the `mpi` feature), else this process alone.
pub fn world() -> Result<Box<dyn Collective>> {
    let Some(size) = launcher_world_size().filter(|&n| n > 1) else { return Ok(Box::new(Solo)) };
    #[cfg(feature = "mpi")]
    {
        let _ = size;
        match crate::dist::mpi_world::MpiWorld::init() {
            Some(w) => Ok(Box::new(w)),
            None => bail!("MPI was already initialised in this process"),
        }
    }
    #[cfg(not(feature = "mpi"))]
    bail!(
        "an MPI launcher started {size} ranks, but this moegrad was built without MPI: build it with `cargo build --release --features mpi` (README, \"Several GPUs and nodes\"), or run one process"
    )
}

/// The first rank whose checksum differs from rank 0's.
fn first_different(sums: &[u64]) -> Option<usize> {
    sums.iter().position(|&s| s != sums[0])
}

/// A checksum of this process's executable, so that ranks running different builds are
/// refused (their kernels or rules could differ).
fn binary_checksum() -> u64 {
    std::env::current_exe().ok().and_then(|p| std::fs::read(p).ok()).map_or(0, |bytes| crc32fast::hash(&bytes) as u64)
}

/// Every rank's `text`, gathered eight bytes a round: for a message, not for data.
fn gather_text(comm: &dyn Collective, text: &str) -> Vec<String> {
    let lengths = comm.gather_u64(text.len() as u64);
    let rounds = lengths.iter().max().map_or(0, |&l| (l as usize).div_ceil(8));
    let mut bytes = vec![Vec::new(); lengths.len()];
    for round in 0..rounds {
        let mut word = [0u8; 8];
        let part = text.as_bytes().get(round * 8..).unwrap_or_default();
        word[..part.len().min(8)].copy_from_slice(&part[..part.len().min(8)]);
        for (all, w) in bytes.iter_mut().zip(comm.gather_u64(u64::from_le_bytes(word))) {
            all.extend(w.to_le_bytes());
        }
    }
    bytes.into_iter().zip(lengths).map(|(b, l)| String::from_utf8_lossy(&b[..l as usize]).into_owned()).collect()
}

/// Stops every rank unless all run the same binary with the same resolved config; a rank
/// whose config differs names the keys.
pub fn agree_on_start(comm: &dyn Collective, config: &RunConfig) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let binaries = comm.gather_u64(binary_checksum());
    if let Some(r) = first_different(&binaries) {
        bail!(
            "rank {r} runs a different moegrad binary from rank 0's (checksums {:08x} and {:08x}): start every rank with the same build",
            binaries[r],
            binaries[0]
        );
    }
    let text = toml::to_string(config)?;
    let leaders = comm.broadcast_bytes(text.as_bytes());
    let hashes = comm.gather_u64(crc32fast::hash(text.as_bytes()) as u64);
    if let Some(r) = first_different(&hashes) {
        // Only a differing rank has both configs at hand: it names the keys, and every rank
        // learns them before any stops (the first to abort ends the others).
        let mine = match toml::from_str::<RunConfig>(std::str::from_utf8(&leaders)?) {
            Ok(leader) if hashes[comm.rank()] != hashes[0] => match config.differences(&leader) {
                keys if keys.is_empty() => format!(" (dist: {:?} vs {:?})", config.dist, leader.dist),
                keys => format!(" ({})", keys.join(", ")),
            },
            _ => String::new(),
        };
        let keys = gather_text(comm, &mine).swap_remove(r);
        bail!("rank {r}'s resolved config differs from rank 0's{keys}; every rank must be started with the same config, overrides and data");
    }
    Ok(())
}

/// Stops every rank unless all hold the same `tensors` (weights, optimizer moments, model
/// state), compared by checksum at `step`.
pub fn check_replicas(comm: &dyn Collective, tensors: &[(String, Tensor)], step: u64) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut hasher = crc32fast::Hasher::new();
    for (_, t) in tensors {
        hasher.update(bytemuck::cast_slice(&t.to_vec()?));
    }
    let sums = comm.gather_u64(hasher.finalize() as u64);
    if let Some(r) = first_different(&sums) {
        bail!(
            "at step {step} the weights of rank {r} differ from rank 0's (checksums {:08x} and {:08x}): the ranks no longer train one model (different GPUs or drivers computing differently?)",
            sums[r],
            sums[0]
        );
    }
    Ok(())
}
