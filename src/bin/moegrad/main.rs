//! The `moegrad` command line: one module a subcommand, each a clap `Args` struct with
//! its own `run`, over the `moegrad` library.

mod bench;
mod compare;
mod data;
mod demo;
mod devices;
mod eval;
mod export;
mod fit;
mod plot;
mod sample;
mod sweep;
mod train;

use clap::{Parser, Subcommand};

/// A flag's value that must be a whole number of at least 1 (clap names the flag).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a whole number ({e})")),
    }
}

#[derive(Parser)]
#[command(name = "moegrad", version, about = "Train Mixture-of-Experts transformers on any GPU wgpu reaches")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Devices(devices::DevicesArgs),
    Train(train::TrainArgs),
    Data(data::DataArgs),
    Eval(eval::EvalArgs),
    Export(export::ExportArgs),
    Sample(sample::SampleArgs),
    Compare(compare::CompareArgs),
    Plot(plot::PlotArgs),
    Sweep(sweep::SweepArgs),
    Bench(bench::BenchArgs),
    Fit(fit::FitArgs),
    Demo(demo::DemoArgs),
}

fn main() {
    // Mesa's device-select layer, loaded into every Vulkan program, connects to a Wayland
    // display to rank GPUs and, on a headless machine, prints two false "error:
    // XDG_RUNTIME_DIR is invalid" lines; moegrad ranks adapters itself. Set while the
    // process is still one thread, before anything reads the environment.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    let command = Cli::parse().command;
    // The ranks of an MPI job (one process alone otherwise), for the commands that train.
    let comm = match &command {
        Command::Train(_) | Command::Sweep(_) | Command::Bench(_) => match moegrad::dist::start::world() {
            Ok(comm) => comm,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        },
        _ => Box::new(moegrad::dist::Solo),
    };
    let ran = |result: anyhow::Result<()>| result.map(|()| 0);
    let result = match command {
        Command::Devices(a) => ran(a.run()),
        Command::Train(a) => a.run(comm.as_ref()),
        Command::Data(a) => ran(a.run()),
        Command::Eval(a) => ran(a.run()),
        Command::Export(a) => ran(a.run()),
        Command::Sample(a) => ran(a.run()),
        Command::Compare(a) => ran(a.run()),
        Command::Plot(a) => ran(a.run()),
        Command::Sweep(a) => ran(a.run(comm.as_ref())),
        Command::Bench(a) => ran(a.run(comm.as_ref())),
        Command::Fit(a) => ran(a.run()),
        Command::Demo(a) => ran(a.run()),
    };
    match result {
        Ok(0) => {}
        Ok(code) => {
            // MPI is finalised (the communicator dropped) before the process ends.
            drop(comm);
            std::process::exit(code);
        }
        Err(e) if e.downcast_ref::<moegrad::train::interrupt::Stopped>().is_some() => {
            eprintln!("{e}");
            drop(comm);
            std::process::exit(moegrad::train::interrupt::INTERRUPTED_EXIT_CODE);
        }
        Err(e) => {
            if comm.size() > 1 {
                // The other ranks may be waiting in a collective: end them all now.
                eprintln!("error (rank {} of {}): {e:#}", comm.rank(), comm.size());
                comm.abort(1);
            }
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
