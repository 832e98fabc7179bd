//! The bundled tiny sweep end to end on lavapipe: plan, two shards (one interrupted and
//! resumed), merged results in the Gemstones columns, a fit and the plots.

use std::path::PathBuf;

use moegrad::research::fit::{fit, read_rows, Law, StartGrid};
use moegrad::research::sweep::{finished, run_sweep, slurm_script, write_results, Sweep, SweepRunOptions};

use crate::common::{device, scratch};

fn config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sweeps/tiny.toml")
}

#[test]
fn a_tiny_sweep_runs_resumes_merges_fits_and_plots() {
    let sweep = Sweep::load(&config()).unwrap();
    let runs = sweep.plan().unwrap();
    assert_eq!(runs.len(), 12, "3 widths x 2 depths x 2 kinds");
    assert!(runs.iter().all(|r| r.config.model.heads * 16 == r.width && r.accounting.params > 0));
    let out = scratch("sweep");

    // Shard 0 is interrupted in its first run, then resumed; shard 1 runs after.
    let shard = |i, stop_after| SweepRunOptions { shard: (i, 2), quiet: true, stop_after, ..SweepRunOptions::default() };
    run_sweep(&device(), &runs, &out, &shard(0, Some(30))).unwrap();
    assert!(!finished(&out, &runs[0]));
    run_sweep(&device(), &runs, &out, &shard(0, None)).unwrap();
    assert!(runs.iter().step_by(2).all(|r| finished(&out, r)) && !finished(&out, &runs[1]));
    run_sweep(&device(), &runs, &out, &shard(1, None)).unwrap();
    assert!(runs.iter().all(|r| finished(&out, r)));
    // A finished sweep is skipped entirely.
    let ckpt = out.join("runs").join(&runs[0].name).join("checkpoint.safetensors");
    let before = std::fs::metadata(&ckpt).unwrap().modified().unwrap();
    run_sweep(&device(), &runs, &out, &SweepRunOptions { shard: (0, 1), quiet: true, ..SweepRunOptions::default() }).unwrap();
    assert_eq!(std::fs::metadata(&ckpt).unwrap().modified().unwrap(), before);

    let count = write_results(&runs, &out).unwrap();
    assert_eq!(count, 12 * 4, "evaluations at steps 20, 40, 60, 80 of every run");
    let first: serde_json::Value = serde_json::from_str(std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    for key in ["run_name", "width", "depth", "params_active_precise", "tokens", "step", "final_loss", "ffn", "lr", "flops", "wall_seconds"] {
        assert!(!first[key].is_null(), "results row lacks {key}: {first}");
    }
    let rows = read_rows(&out.join("results.jsonl")).unwrap();
    let law = fit(&rows, Law::ParamsTokens, 1e-3, &StartGrid::gemstones(), false).unwrap();
    assert!(law.objective.is_finite());
    moegrad::research::sweep_report::write_plots(&out.join("plots"), &rows, Some((&law, Law::ParamsTokens))).unwrap();
    for plot in ["loss_vs_tokens", "loss_vs_flops", "isoflop", "fit", "width_depth", "ffn_kinds"] {
        for ext in ["png", "svg"] {
            assert!(out.join("plots").join(format!("{plot}.{ext}")).exists(), "{plot}.{ext} missing");
        }
    }
    let svg = |plot: &str| std::fs::read_to_string(out.join("plots").join(format!("{plot}.svg"))).unwrap();
    for (plot, part) in [
        ("loss_vs_tokens", "width 16"),
        ("loss_vs_tokens", "depth 2"),
        ("loss_vs_tokens", "default"),
        ("loss_vs_flops", "compute-optimal frontier"),
        ("isoflop", "Iso-FLOP slices with fitted parabolas"),
        ("fit", "R² = "),
        ("fit", "observed - predicted loss (nats/token)"),
        ("width_depth", "final eval loss (nats/token)"),
        ("ffn_kinds", "active parameters"),
    ] {
        assert!(svg(plot).contains(part), "{plot} shows {part:?}");
    }
    assert!(slurm_script(&config(), &out, 3, false).contains("--array=0-2"));
    let mpi = slurm_script(&config(), &out, 3, true);
    assert!(mpi.contains("--ntasks=3") && mpi.contains("srun moegrad sweep run") && !mpi.contains("SLURM_ARRAY_TASK_ID"), "{mpi}");
}

#[test]
fn widths_that_do_not_divide_into_heads_are_refused_up_front() {
    let dir = scratch("badsweep");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[sweep]\nwidths = [16, 40]\ndepths = [1]\nhead_dim = 16\ntokens = 1000\n").unwrap();
    let err = Sweep::load(&path).unwrap().plan().err().unwrap().to_string();
    assert!(err.contains("width 40") && err.contains("sweep.head_dim"), "{err}");
    std::fs::write(&path, "[sweep]\nwidths = [16]\ndepths = [1]\nheads = 2\n").unwrap();
    let err = Sweep::load(&path).err().unwrap().to_string();
    assert!(err.contains("heads"), "{err}");
}
