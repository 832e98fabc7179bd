//! Data-parallel training. Without MPI: the pieces (buckets, the start and replica
//! checks, the Default-MoE sums) against fake collectives. With `--features mpi` (CI
//! installs Open MPI): `mpirun -np 2` trains exactly what one process does with the same
//! global batch, resumes exactly at either world size, and ends when a rank is killed.

use moegrad::dist::start::{agree_on_start, check_replicas};
use moegrad::dist::{Collective, GradientBuckets};
use moegrad::ops::expert_ema::{expert_output_ema, expert_output_ema_reference, expert_output_sums, expert_output_sums_reference};
use moegrad::ops::host::HostTensor;
use moegrad::Tensor;
use rand::Rng;

use crate::common::{assert_close, config_from_sets, device, host, rng, upload, TINY_DEFAULT_MOE};

/// Rank `rank` of two, whose partner holds exactly what it holds (so sums double) except
/// where `partner_differs` says its checksums are off by one.
struct Twin {
    rank: usize,
    partner_differs: bool,
}

impl Collective for Twin {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        2
    }
    fn local_rank(&self) -> usize {
        self.rank
    }
    fn sum_f32(&self, data: &mut [f32]) {
        data.iter_mut().for_each(|v| *v *= 2.0);
    }
    fn sum_f64(&self, data: &mut [f64]) {
        data.iter_mut().for_each(|v| *v *= 2.0);
    }
    fn gather_u64(&self, value: u64) -> Vec<u64> {
        let partner = value ^ self.partner_differs as u64;
        if self.rank == 0 {
            vec![value, partner]
        } else {
            vec![partner, value]
        }
    }
    fn broadcast_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        bytes.to_vec()
    }
    fn abort(&self, _code: i32) -> ! {
        panic!("a test collective does not abort")
    }
}

#[test]
fn buckets_cover_every_parameter_and_upload_the_reduced_sums() {
    let mut r = rng(400);
    // Odd sizes, one larger than a bucket, so buckets hold one, several, or an oversize one.
    let shapes = [vec![3, 5], vec![7], vec![40, 3], vec![2, 2], vec![11]];
    let params: Vec<Tensor> = shapes.iter().map(|s| upload(&host(&mut r, s, -1.0, 1.0)).requires_grad()).collect();
    let grads: Vec<HostTensor> = shapes.iter().map(|s| host(&mut r, s, -1.0, 1.0)).collect();
    for overlap in [true, false] {
        let mut buckets = GradientBuckets::new(&params, 64, overlap);
        assert!(buckets.len() >= 3, "64-byte buckets over these shapes make at least 3, got {}", buckets.len());
        buckets.begin();
        // Reported final in an arbitrary order; the third parameter gets no gradient.
        for i in [4, 0, 1, 3] {
            params[i].set_grad(upload(&grads[i]));
            buckets.on_final(&params[i]);
        }
        params[2].zero_grad();
        let stats = buckets.finish(&Twin { rank: 0, partner_differs: false }).unwrap();
        assert_eq!(stats.bytes, shapes.iter().map(|s| s.iter().product::<usize>() as u64 * 4).sum::<u64>());
        for (i, p) in params.iter().enumerate() {
            let want: Vec<f64> = if i == 2 { vec![0.0; p.numel()] } else { grads[i].data.iter().map(|g| 2.0 * g).collect() };
            assert_close(&format!("summed gradient of parameter {i} (overlap {overlap})"), &p.grad().unwrap().to_vec().unwrap(), &want, 1e-6);
        }
    }
}

#[test]
fn backward_reports_each_parameter_once_when_its_gradient_is_complete() {
    let dev = device();
    let a = Tensor::from_slice(&dev, &[1.0, 2.0], &[2]).unwrap().requires_grad();
    let b = Tensor::from_slice(&dev, &[3.0, -1.0], &[2]).unwrap().requires_grad();
    // `a` is used twice (first and last): complete only after the oldest use.
    let loss = a.mul(&b).add(&a).mul(&a).sum_all();
    let mut reported = Vec::new();
    loss.backward_reporting(&mut |p| reported.push((p.id(), p.grad().unwrap().to_vec().unwrap())));
    assert_eq!(reported.len(), 2, "each parameter once");
    // d/da of (a b + a) a = 2 a b + 2 a; d/db = a^2.
    let a_grad = reported.iter().find(|(id, _)| *id == a.id()).unwrap().1.clone();
    assert_eq!(a_grad, vec![2.0 * 1.0 * 3.0 + 2.0, -(2.0 * 2.0) + 4.0]);
    assert_eq!(reported.iter().find(|(id, _)| *id == b.id()).unwrap().1, vec![1.0, 4.0]);
}

#[test]
fn ranks_that_differ_are_refused_by_name() {
    let dev = device();
    let t = vec![("w".to_string(), Tensor::from_slice(&dev, &[1.0, 2.0], &[2]).unwrap())];
    check_replicas(&Twin { rank: 0, partner_differs: false }, &t, 7).unwrap();
    let e = check_replicas(&Twin { rank: 0, partner_differs: true }, &t, 7).unwrap_err().to_string();
    assert!(e.contains("step 7") && e.contains("rank 1 differ from rank 0"), "{e}");

    let config = config_from_sets(&TINY_DEFAULT_MOE, &[]);
    agree_on_start(&Twin { rank: 1, partner_differs: false }, &config).unwrap();
    let e = agree_on_start(&Twin { rank: 1, partner_differs: true }, &config).unwrap_err().to_string();
    assert!(e.contains("rank 1 runs a different moegrad binary"), "{e}");
}

#[test]
fn expert_output_sums_and_their_ema_match_the_reference() {
    let mut r = rng(401);
    for _ in 0..4 {
        let (experts, d) = (r.random_range(1..6), r.random_range(1..9));
        // Random experts' row counts, some empty.
        let mut offsets = vec![0u32];
        for _ in 0..experts {
            offsets.push(offsets.last().unwrap() + if r.random_bool(0.3) { 0 } else { r.random_range(1..6) });
        }
        let rows = host(&mut r, &[*offsets.last().unwrap() as usize, d], -2.0, 2.0);
        let defaults = host(&mut r, &[experts, d], -1.0, 1.0);
        let offsets_gpu = Tensor::from_u32(&device(), &offsets, &[experts + 1]).unwrap();
        let sums = expert_output_sums(&upload(&rows), &offsets_gpu);
        let want_sums = expert_output_sums_reference(&rows, &offsets);
        assert_close("expert output sums and counts", &sums.to_vec().unwrap(), &want_sums.data, 1e-5);
        let updated = expert_output_ema(&upload(&defaults), &sums, 0.9);
        assert_close("defaults after the EMA", &updated.to_vec().unwrap(), &expert_output_ema_reference(&defaults, &want_sums, 0.9).data, 1e-5);
    }
}

#[cfg(feature = "mpi")]
mod mpi {
    use std::path::Path;
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
    use moegrad::train::interrupt::INTERRUPTED_EXIT_CODE;

    use crate::common::{scratch, TINY_DEFAULT_MOE};

    const BIN: &str = env!("CARGO_BIN_EXE_moegrad");

    /// `mpirun --oversubscribe` (the machine has fewer cores than ranks) with the
    /// environment of the tests' children; CI runs as root, which Open MPI refuses unless
    /// told.
    fn mpirun() -> Command {
        let mut cmd = Command::new("mpirun");
        cmd.arg("--oversubscribe");
        cmd.env("NODEVICE_SELECT", "1").env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        cmd
    }

    /// `moegrad train` in `ranks` processes (`mpirun`), or in this one's child alone.
    fn train_command(ranks: usize, out: &Path, extra: &[&str]) -> Command {
        let mut cmd = if ranks > 1 {
            let mut c = mpirun();
            c.args(["-np", &ranks.to_string(), BIN]);
            c
        } else {
            let mut c = Command::new(BIN);
            c.env("NODEVICE_SELECT", "1");
            c
        };
        cmd.args(["train", "--quiet", "--out", out.to_str().unwrap()]).args(extra);
        cmd
    }

    fn sets(config: &[&str]) -> Vec<String> {
        config.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect()
    }

    fn train(ranks: usize, out: &Path, extra: &[String]) -> Output {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let done = train_command(ranks, out, &extra).output().unwrap();
        assert!(done.status.success(), "{ranks} ranks failed:\n{}", String::from_utf8_lossy(&done.stderr));
        done
    }

    /// Every tensor of two checkpoints (weights, moments, Default-MoE vectors) within `tol`.
    fn assert_same_training(a: &Path, b: &Path, tol: f32) {
        let (a, b) = (Checkpoint::load(&a.join(CHECKPOINT_FILE)).unwrap(), Checkpoint::load(&b.join(CHECKPOINT_FILE)).unwrap());
        assert_eq!(a.meta.step, b.meta.step);
        assert_eq!(a.names(), b.names());
        for name in a.names() {
            let worst = a.values(name).unwrap().iter().zip(b.values(name).unwrap()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst <= tol, "{name} differs by {worst} between the runs");
        }
    }

    /// The tiny Default MoE with two MoE layers, the load-balancing and z-losses, and two
    /// micro-batches a step, so that every global quantity matters.
    fn default_moe(steps: &str) -> Vec<String> {
        let extra =
            ["model.layers=2", "model.moe.experts=4", "model.moe.top_k=2", "model.moe.aux_loss_coef=0.01", "model.moe.z_loss_coef=0.001", "train.grad_accum=2"];
        let more = ["train.eval_batches=1", "train.log_every=2", steps, "dist.check_every=3"];
        sets(&[&TINY_DEFAULT_MOE[..], &extra, &more].concat())
    }

    #[test]
    fn two_ranks_train_the_default_moe_of_one_process() {
        let (one, two) = (scratch("dist-default-1"), scratch("dist-default-2"));
        let config = default_moe("train.steps=8");
        train(1, &one, &config);
        train(2, &two, &config);
        // Every 3 steps and at the end the ranks compared their weights and moments: a
        // difference would have failed the run.
        assert_same_training(&one, &two, 1e-5);
        assert_eq!(Checkpoint::load(&two.join(CHECKPOINT_FILE)).unwrap().meta.world_size, 2);
        let last = |p: &Path| std::fs::read_to_string(p.join("metrics.jsonl")).unwrap().lines().last().unwrap().to_string();
        let (a, b): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&last(&one)).unwrap(), serde_json::from_str(&last(&two)).unwrap());
        for key in ["train_loss", "eval_loss"] {
            assert!((a[key].as_f64().unwrap() - b[key].as_f64().unwrap()).abs() < 1e-5, "logged {key}: {} vs {}", a[key], b[key]);
        }
        for (x, y) in a["moe"].as_array().unwrap().iter().zip(b["moe"].as_array().unwrap()) {
            for key in ["aux_loss", "z_loss", "router_entropy"] {
                assert!((x[key].as_f64().unwrap() - y[key].as_f64().unwrap()).abs() < 1e-6, "logged {key}: {} vs {}", x[key], y[key]);
            }
            assert_eq!(x["load"], y["load"], "expert loads over all tokens");
        }
        assert!(b["dist"]["bytes"].as_u64().unwrap() > 0, "the log shows the exchange: {}", b["dist"]);
    }

    #[test]
    fn two_ranks_train_a_topk_f16_run_of_one_process() {
        let (one, two) = (scratch("dist-f16-1"), scratch("dist-f16-2"));
        let config = sets(&[&TINY_DEFAULT_MOE[..], &["model.ffn=\"topk\"", "train.precision=\"f16\"", "train.steps=6", "train.eval_batches=1"]].concat());
        train(1, &one, &config);
        train(2, &two, &config);
        assert_same_training(&one, &two, 1e-5);
    }

    #[test]
    fn a_two_rank_checkpoint_resumes_exactly_on_one_rank_and_on_two() {
        let (straight, on_one, on_two) = (scratch("dist-resume-straight"), scratch("dist-resume-1"), scratch("dist-resume-2"));
        let config = default_moe("train.steps=6");
        train(1, &straight, &config);
        for (ranks, out) in [(1, &on_one), (2, &on_two)] {
            train(2, out, &[config.clone(), vec!["--stop-after".into(), "3".into()]].concat());
            assert_eq!(Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap().meta.step, 3);
            train(ranks, out, &["--resume".to_string()]);
            assert_same_training(&straight, out, 1e-5);
        }
    }

    #[test]
    fn a_killed_rank_ends_the_job_and_the_checkpoint_survives() {
        let out = scratch("dist-kill");
        let config = sets(&[&TINY_DEFAULT_MOE[..], &["train.steps=100000", "train.checkpoint_every=2", "train.eval_every=0", "train.eval_batches=1"]].concat());
        let config: Vec<&str> = config.iter().map(String::as_str).collect();
        let mut job = train_command(2, &out, &config).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while !out.join(CHECKPOINT_FILE).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(job.try_wait().unwrap().is_none(), "the job stopped by itself");
        let rank1 = rank_pid(job.id(), 1).expect("rank 1 among mpirun's children");
        let rank0 = rank_pid(job.id(), 0).expect("rank 0 among mpirun's children");
        Command::new("kill").args(["-9", &rank1.to_string()]).status().unwrap();
        let killed = Instant::now();
        let status = loop {
            if let Some(status) = job.try_wait().unwrap() {
                break status;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                job.kill().unwrap();
                panic!("the job still ran 60 s after rank 1 was killed: a rank hangs in a collective");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "a job that lost a rank must fail");
        // mpirun ends before the rank it tears down (SIGTERM, which now asks for a stop
        // that the dead rank never agrees to, then SIGKILL); that rank holds the folder's
        // lock until it is gone, as it would keep a new job's rank 0 out.
        while std::path::Path::new(&format!("/proc/{rank0}")).exists() && killed.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ckpt = Checkpoint::load(&out.join(CHECKPOINT_FILE)).expect("the last checkpoint verifies after the kill");
        let resume_to = format!("train.steps={}", ckpt.meta.step + 2);
        train(2, &out, &["--resume".into(), "--set".into(), resume_to]);
        assert_eq!(Checkpoint::load(&out.join(CHECKPOINT_FILE)).unwrap().meta.step, ckpt.meta.step + 2);
    }

    /// A signal to one rank (Slurm may reach one before another) stops every rank after
    /// the same step; rank 0 writes the checkpoint, the job exits with the documented
    /// code, and resuming ends exactly where an uninterrupted two-rank run does.
    #[test]
    fn a_signal_to_one_rank_stops_every_rank_with_a_checkpoint() {
        let (straight, stopped) = (scratch("dist-signal-straight"), scratch("dist-signal-stopped"));
        let config = sets(
            &[&TINY_DEFAULT_MOE[..], &["train.steps=40", "train.checkpoint_every=0", "train.log_every=1", "train.eval_every=0", "train.eval_batches=1"]]
                .concat(),
        );
        train(2, &straight, &config);
        let logged = |out: &Path| {
            let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
            text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64()).max().unwrap_or(0)
        };
        for (signalled, signal) in [(1, "TERM"), (0, "INT")] {
            let resume = stopped.join(CHECKPOINT_FILE).exists();
            let at = if resume { Checkpoint::load(&stopped.join(CHECKPOINT_FILE)).unwrap().meta.step } else { 0 };
            let args: Vec<&str> = if resume { vec!["--resume"] } else { config.iter().map(String::as_str).collect() };
            let mut job = train_command(2, &stopped, &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            let deadline = Instant::now() + Duration::from_secs(300);
            while logged(&stopped) <= at && job.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let rank = rank_pid(job.id(), signalled).expect("the rank among mpirun's children");
            Command::new("kill").args([&format!("-{signal}"), &rank.to_string()]).status().unwrap();
            let done = job.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&done.stderr);
            assert_eq!(done.status.code(), Some(INTERRUPTED_EXIT_CODE), "SIG{signal} to rank {signalled}:\n{stderr}");
            let ckpt = Checkpoint::load(&stopped.join(CHECKPOINT_FILE)).expect("the signal's checkpoint verifies");
            assert!(ckpt.meta.step > at && ckpt.meta.step < 40, "stopped at step {} after starting at {at}", ckpt.meta.step);
        }
        train(2, &stopped, &["--resume".to_string()]);
        assert_same_training(&straight, &stopped, 0.0);
    }

    #[test]
    fn ranks_started_with_different_configs_are_refused_by_key() {
        let out = scratch("dist-mismatch");
        let base = sets(&[&TINY_DEFAULT_MOE[..], &["train.steps=2", "train.eval_batches=1"]].concat());
        // Two programs in one job (MPMD): the second with another learning rate.
        let mut cmd = mpirun();
        cmd.args(["-np", "1", BIN, "train", "--out", out.to_str().unwrap()]).args(&base);
        cmd.args([":", "-np", "1", BIN, "train", "--out", out.to_str().unwrap()]).args(&base).args(["--set", "train.lr=0.01"]);
        let done = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success());
        assert!(stderr.contains("rank 1's resolved config differs from rank 0's") && stderr.contains("train.lr"), "{stderr}");
    }

    #[test]
    fn activation_checkpointing_over_several_ranks_is_refused_before_the_folder_is_made() {
        let out = scratch("dist-checkpointing");
        let args = sets(&[&TINY_DEFAULT_MOE[..], &["train.steps=2", "train.activation_checkpointing=true"]].concat());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let done = train_command(2, &out, &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success(), "two ranks trained with activation checkpointing");
        assert!(stderr.contains("train.activation_checkpointing") && stderr.contains("(this job has 2)"), "{stderr}");
        assert!(!out.exists(), "the refused run left {}", out.display());
    }

    #[test]
    fn a_sweep_under_mpirun_hands_its_runs_to_the_ranks_and_reports_once() {
        let dir = scratch("dist-sweep");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sweep.toml");
        let grid = "[sweep]\nwidths = [16]\ndepths = [1, 2]\nhead_dim = 16\nffn = [\"dense\", \"default\"]\ntokens = 1280\n\n[model]\ncontext = 16\n\n[model.moe]\nexperts = 2\ntop_k = 1\n\n[train]\nbatch_size = 8\nwarmup = 0\neval_every = 5\neval_batches = 1\n";
        std::fs::write(&config, grid).unwrap();
        let out = dir.join("runs");
        let mut cmd = mpirun();
        cmd.args(["-np", "2", BIN, "sweep", "run", "--quiet", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let done = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&done.stdout);
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
        // Four runs over two ranks, every one finished, one report (rank 0's).
        let runs: Vec<_> = std::fs::read_dir(out.join("runs")).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().join(CHECKPOINT_FILE).exists()).collect();
        assert_eq!(runs.len(), 4, "{stdout}");
        assert_eq!(stdout.matches("evaluated checkpoints in").count(), 1, "{stdout}");
        let rows = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
        for run in &runs {
            assert!(rows.contains(&*run.file_name().to_string_lossy()), "results.jsonl lacks {:?}", run.file_name());
        }
    }

    /// The PID of the child of `launcher` whose MPI rank is `rank`.
    fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent PID is the second field after the parenthesised name.
            let parent = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            parent == Some(launcher) && env.split(|&b| b == 0).any(|v| v == wanted.as_bytes())
        })
    }
}
