//! `moegrad plot`'s training curves: for one or several runs, four panels against tokens
//! seen on a real logarithmic axis: train and eval loss, learning rate, gradient norm (on a
//! logarithmic axis too) and tokens/s. Each run has its colour; train lines are solid,
//! eval lines dashed with a marker at each evaluation, so the curves stay apart in grey.
//! The y-limits leave out the first tenth of each curve and the top 2% of its values, so
//! the first steps' loss and a single spike do not flatten the rest.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::research::plot::{figure, Axis, Chart, Dash, Limits, Marker, Series, Style};

/// One run's logged values: `(tokens, value)` pairs by quantity.
struct Curves {
    name: String,
    train_loss: Vec<(f64, f64)>,
    eval_loss: Vec<(f64, f64)>,
    lr: Vec<(f64, f64)>,
    grad_norm: Vec<(f64, f64)>,
    tokens_per_s: Vec<(f64, f64)>,
}

fn read_curves(run: &Path) -> Result<Curves> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {} (is {} a run folder?)", path.display(), run.display()))?;
    let name = run.file_name().map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut c = Curves { name, train_loss: vec![], eval_loss: vec![], lr: vec![], grad_norm: vec![], tokens_per_s: vec![] };
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow!("{} line {}: {e}", path.display(), i + 1))?;
        // A logarithmic axis has no place for the 0 tokens of the untrained evaluation.
        let Some(tokens) = v["tokens"].as_f64().filter(|&t| t > 0.0) else { continue };
        for (key, into) in [
            ("train_loss", &mut c.train_loss),
            ("eval_loss", &mut c.eval_loss),
            ("lr", &mut c.lr),
            ("grad_norm", &mut c.grad_norm),
            ("tokens_per_s", &mut c.tokens_per_s),
        ] {
            if let Some(x) = v[key].as_f64().filter(|x| x.is_finite()) {
                into.push((tokens, x));
            }
        }
    }
    if c.train_loss.is_empty() && c.eval_loss.is_empty() {
        bail!("{} has no logged steps yet", path.display());
    }
    Ok(c)
}

/// The four panels of `runs`: each run in its colour, train solid, eval dashed with a
/// triangle at each evaluation.
fn charts(runs: &[Curves]) -> Vec<Chart> {
    let tokens = || Axis::log("tokens seen");
    let panel = |title: &str, y: Axis, curve: &dyn Fn(&Curves) -> &[(f64, f64)]| {
        runs.iter().enumerate().fold(Chart::new(title, tokens(), y).limits(Limits::Robust), |chart, (i, run)| {
            chart.series(Series::new(&run.name, Style::line(i), curve(run).to_vec()))
        })
    };
    let mut loss = Chart::new("Loss", tokens(), Axis::linear("loss (nats/token)")).limits(Limits::Robust);
    for (i, run) in runs.iter().enumerate() {
        let train = Series::new(format!("{} (train)", run.name), Style::line(i), run.train_loss.clone());
        let eval = Series::new(format!("{} (eval)", run.name), Style::line(i).dash(Some(Dash::Dashed)).marker(Some(Marker::Triangle)), run.eval_loss.clone());
        loss = loss.series(train).series(eval);
    }
    vec![
        loss,
        panel("Learning rate", Axis::linear("learning rate"), &|r| &r.lr),
        panel("Gradient norm (before clipping)", Axis::log("gradient L2 norm"), &|r| &r.grad_norm),
        panel("Throughput", Axis::linear("tokens/s"), &|r| &r.tokens_per_s),
    ]
}

/// Draws the training curves of `runs` (run folders) to `<stem>.png` and `<stem>.svg`.
pub fn run_curves(runs: &[PathBuf], stem: &Path) -> Result<()> {
    let curves = runs.iter().map(|r| read_curves(r)).collect::<Result<Vec<_>>>()?;
    figure(stem, &charts(&curves), 2)
}
