//! Scaling-law fits, as in Chinchilla (approach 3) and Gemstones.
//!
//! A law predicts log loss as `logsumexp(c_1 - x_1 log v_1, ..., c_k - x_k log v_k, e)`,
//! i.e. `L = exp(e) + sum_j exp(c_j) / v_j^x_j`, over variables v: (params, tokens),
//! (width, depth, tokens) or (width, depth, params, tokens). It is fitted by minimising
//! the sum over rows of Huber(delta, log L_observed - log L_predicted) with L-BFGS from
//! every start of a grid, keeping the best. Approach 1 (the lower convex hull of loss
//! against FLOPs and power laws of the compute-optimal size and tokens) and bootstrap
//! intervals sit beside it.

use anyhow::{bail, Context, Result};
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::research::table::{read_table, TableOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Law {
    /// Chinchilla approach 3: parameters and tokens.
    ParamsTokens,
    /// Gemstones: width, depth and tokens.
    WidthDepthTokens,
    /// Gemstones: width, depth, parameters and tokens.
    WidthDepthParamsTokens,
}

impl Law {
    /// The name in the Gemstones release's files.
    pub fn gemstones_name(self) -> &'static str {
        match self {
            Law::ParamsTokens => "parameters",
            Law::WidthDepthTokens => "width_depth",
            Law::WidthDepthParamsTokens => "width_depth_parameters",
        }
    }

    /// The law of a Gemstones name (`Fit::law`).
    pub fn from_gemstones_name(name: &str) -> Option<Law> {
        [Law::ParamsTokens, Law::WidthDepthTokens, Law::WidthDepthParamsTokens].into_iter().find(|l| l.gemstones_name() == name)
    }

    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Law::ParamsTokens => &["params", "tokens"],
            Law::WidthDepthTokens => &["width", "depth", "tokens"],
            Law::WidthDepthParamsTokens => &["width", "depth", "params", "tokens"],
        }
    }

    /// A row's values of the law's variables, in its order.
    pub fn values(self, r: &Row, non_embedding: bool) -> Vec<f64> {
        let params = if non_embedding { r.non_embedding_params } else { r.params };
        match self {
            Law::ParamsTokens => vec![params, r.tokens],
            Law::WidthDepthTokens => vec![r.width, r.depth, r.tokens],
            Law::WidthDepthParamsTokens => vec![r.width, r.depth, params, r.tokens],
        }
    }
}

/// One evaluated checkpoint.
#[derive(Clone, Debug)]
pub struct Row {
    pub run_name: String,
    pub width: f64,
    pub depth: f64,
    pub params: f64,
    pub non_embedding_params: f64,
    pub tokens: f64,
    pub loss: f64,
    pub flops: f64,
}

/// Rows of a results file with every column a law may use: moegrad's `results.jsonl` or
/// the Gemstones release (whose `params_active_precise` counts every parameter). Other
/// tables: `read_table`.
pub fn read_rows(path: &std::path::Path) -> Result<Vec<Row>> {
    read_table(path, &["width", "depth", "params", "tokens"], &TableOptions::default())
}

/// A fitted law, in the Gemstones layout.
#[derive(Clone, Debug, Serialize)]
pub struct Fit {
    pub law: &'static str,
    pub exponents: Vec<f64>,
    pub coefficients: Vec<f64>,
    pub irreducible_error: f64,
    pub objective: f64,
}

impl Fit {
    fn from_theta(law: Law, theta: &[f64], objective: f64) -> Fit {
        let k = law.variables().len();
        Fit { law: law.gemstones_name(), coefficients: theta[..k].to_vec(), exponents: theta[k..2 * k].to_vec(), irreducible_error: theta[2 * k], objective }
    }

    fn theta(&self) -> Vec<f64> {
        self.coefficients.iter().chain(&self.exponents).copied().chain([self.irreducible_error]).collect()
    }

    /// Predicted loss for variable values (in the law's order).
    pub fn predict(&self, values: &[f64]) -> f64 {
        let logs: Vec<f64> = values.iter().map(|v| v.ln()).collect();
        log_predict(&self.theta(), &logs).0.exp()
    }
}

/// (log L, d log L / d theta) for theta = [c, x, e] at log-variables `logs`.
fn log_predict(theta: &[f64], logs: &[f64]) -> (f64, Vec<f64>) {
    let k = logs.len();
    let terms: Vec<f64> = (0..k).map(|j| theta[j] - theta[k + j] * logs[j]).chain([theta[2 * k]]).collect();
    let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = terms.iter().map(|t| (t - m).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut grad = vec![0.0; 2 * k + 1];
    for j in 0..k {
        grad[j] = weights[j] / total;
        grad[k + j] = -weights[j] / total * logs[j];
    }
    grad[2 * k] = weights[k] / total;
    (m + total.ln(), grad)
}

fn huber(delta: f64, r: f64) -> (f64, f64) {
    if r.abs() <= delta {
        (0.5 * r * r, r)
    } else {
        (delta * (r.abs() - 0.5 * delta), delta * r.signum())
    }
}

/// The fitting objective over prepared rows (log-variables, log loss).
struct Objective<'a> {
    data: &'a [(Vec<f64>, f64)],
    delta: f64,
}

impl Objective<'_> {
    fn eval(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let mut value = 0.0;
        let mut grad = vec![0.0; theta.len()];
        for (logs, log_loss) in self.data {
            let (pred, dpred) = log_predict(theta, logs);
            let (h, dh) = huber(self.delta, log_loss - pred);
            value += h;
            grad.iter_mut().zip(&dpred).for_each(|(g, d)| *g -= dh * d);
        }
        (value, grad)
    }
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(p).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(p).1)
    }
}

/// L-BFGS from one start: (best theta, objective), or None if it failed.
fn minimise(objective: &Objective, start: Vec<f64>, max_iters: u64) -> Option<(Vec<f64>, f64)> {
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10).with_tolerance_cost(1e-14).ok()?.with_tolerance_grad(1e-12).ok()?;
    let result =
        Executor::new(Objective { data: objective.data, delta: objective.delta }, solver).configure(|s| s.param(start).max_iters(max_iters)).run().ok()?;
    let state = result.state();
    let best = state.get_best_param()?.clone();
    let cost = state.get_best_cost();
    cost.is_finite().then_some((best, cost))
}

/// Starting points: every combination of these values, or a fixed random sample of them
/// when there are more than `max_starts`.
#[derive(Clone, Debug)]
pub struct StartGrid {
    pub exponents: Vec<f64>,
    pub coefficients: Vec<f64>,
    pub irreducible: Vec<f64>,
    pub max_starts: usize,
}

impl StartGrid {
    /// The Gemstones grid: exponents {0, .5, 1, 1.5, 2}, coefficients {0, 5, ..., 25},
    /// e in {-1, -.5, 0, .5, 1}. Every combination for two variables.
    pub fn gemstones() -> Self {
        StartGrid {
            exponents: vec![0.0, 0.5, 1.0, 1.5, 2.0],
            coefficients: vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
            irreducible: vec![-1.0, -0.5, 0.0, 0.5, 1.0],
            max_starts: usize::MAX,
        }
    }

    /// The Gemstones grid, sampled down to `max_starts` points (three and four variables
    /// have 10^5 and 4 x 10^6 combinations).
    pub fn sampled(max_starts: usize) -> Self {
        StartGrid { max_starts, ..StartGrid::gemstones() }
    }

    /// The default for a law: the whole grid for two variables, 4000 of its points beyond.
    pub fn for_law(law: Law) -> Self {
        if law.variables().len() == 2 {
            StartGrid::gemstones()
        } else {
            StartGrid::sampled(4000)
        }
    }

    /// The grid point with index `i` (mixed radix over the 2k + 1 coordinates).
    fn point(&self, k: usize, mut i: usize) -> Vec<f64> {
        let mut p = Vec::with_capacity(2 * k + 1);
        for axis in (0..k).map(|_| &self.coefficients).chain((0..k).map(|_| &self.exponents)).chain([&self.irreducible]) {
            p.push(axis[i % axis.len()]);
            i /= axis.len();
        }
        p
    }

    fn starts(&self, k: usize) -> Vec<Vec<f64>> {
        let total = self.coefficients.len().pow(k as u32) * self.exponents.len().pow(k as u32) * self.irreducible.len();
        if total <= self.max_starts {
            return (0..total).map(|i| self.point(k, i)).collect();
        }
        let mut rng = StdRng::seed_from_u64(0x9e37);
        let mut picked: Vec<usize> = rand::seq::index::sample(&mut rng, total, self.max_starts).into_vec();
        picked.sort_unstable();
        picked.into_iter().map(|i| self.point(k, i)).collect()
    }
}

fn prepare(rows: &[Row], law: Law, non_embedding: bool) -> Result<Vec<(Vec<f64>, f64)>> {
    rows.iter()
        .map(|r| {
            let v = law.values(r, non_embedding);
            if v.iter().any(|x| !(x.is_finite() && *x > 0.0)) || !(r.loss > 0.0) {
                bail!("row {} ({}) has a missing or non-positive variable for {:?}", r.run_name, r.tokens, law);
            }
            Ok((v.iter().map(|x| x.ln()).collect(), r.loss.ln()))
        })
        .collect()
}

/// The law's free parameters: the irreducible loss, and a coefficient and an exponent
/// for each variable.
pub fn parameter_count(law: Law) -> usize {
    1 + 2 * law.variables().len()
}

/// Refuses a table that cannot determine the law: fewer distinct points (variables and
/// loss together) than the law has parameters, or no spread in some variable, fit
/// anything with zero error and give exponents that mean nothing.
fn check_determined(data: &[(Vec<f64>, f64)], law: Law) -> Result<()> {
    let mut distinct: Vec<Vec<u64>> = data.iter().map(|(v, l)| v.iter().chain([l]).map(|x| x.to_bits()).collect()).collect();
    distinct.sort();
    distinct.dedup();
    let needed = parameter_count(law);
    if distinct.len() < needed {
        bail!(
            "{} distinct rows (of {}) cannot determine the {needed} parameters of the {} law; a fit needs at least {needed} distinct points",
            distinct.len(),
            data.len(),
            law.gemstones_name()
        );
    }
    for (i, name) in law.variables().iter().enumerate() {
        if data.iter().all(|(v, _)| v[i] == data[0].0[i]) {
            bail!("every row has the same {name} ({:.4e}); its exponent cannot be fitted without rows that differ in it", data[0].0[i].exp());
        }
    }
    Ok(())
}

/// L-BFGS iterations from each start of the grid, and for polishing the best of them.
const SCOUT_ITERS: u64 = 60;
const POLISH_ITERS: u64 = 3000;
const POLISHED: usize = 8;

/// Fits `law` to `rows` from every start of `grid`, keeping the best. Each start gets a
/// short L-BFGS run; the best few are then run to convergence (with a Huber delta this
/// small the objective is nearly L1, and short runs stall short of the minimum).
pub fn fit(rows: &[Row], law: Law, delta: f64, grid: &StartGrid, non_embedding: bool) -> Result<Fit> {
    fit_with_progress(rows, law, delta, grid, non_embedding, &|_, _| {})
}

/// `fit`, calling `progress(done, total)` as the starts finish (from several threads).
pub fn fit_with_progress(rows: &[Row], law: Law, delta: f64, grid: &StartGrid, non_embedding: bool, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<Fit> {
    if !(delta > 0.0 && delta.is_finite()) {
        bail!("the Huber delta {delta} must be positive and finite");
    }
    let data = prepare(rows, law, non_embedding)?;
    check_determined(&data, law)?;
    let objective = Objective { data: &data, delta };
    let starts = grid.starts(law.variables().len());
    let (total, done) = (starts.len(), std::sync::atomic::AtomicUsize::new(0));
    // Said before the first start finishes, which on a large table takes seconds.
    progress(0, total);
    let mut scouts: Vec<(Vec<f64>, f64)> = starts
        .into_par_iter()
        .filter_map(|start| {
            let scouted = minimise(&objective, start, SCOUT_ITERS);
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total);
            scouted
        })
        .collect();
    scouts.sort_by(|a, b| a.1.total_cmp(&b.1));
    scouts.truncate(POLISHED);
    let best = scouts
        .into_par_iter()
        .filter_map(|(theta, cost)| {
            let polished = minimise(&objective, theta.clone(), POLISH_ITERS);
            Some(polished.filter(|p| p.1 <= cost).unwrap_or((theta, cost)))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .context("every L-BFGS start failed")?;
    Ok(Fit::from_theta(law, &best.0, best.1))
}

/// Warnings about a fit that reads as degenerate: an irreducible loss above the lowest
/// loss observed (the law cannot go below it) or far under it, and exponents near 0 (the
/// variable plays no part) or above 5 (no scaling law is that steep). Empty when none.
pub fn degeneracies(fit: &Fit, rows: &[Row]) -> Vec<String> {
    let lowest = rows.iter().map(|r| r.loss).fold(f64::INFINITY, f64::min);
    let irreducible = fit.irreducible_error.exp();
    let mut warnings = Vec::new();
    if irreducible > 1.01 * lowest {
        warnings.push(format!("the irreducible loss exp(e) = {irreducible:.4} is above the lowest loss observed, {lowest:.4}"));
    } else if irreducible < 0.1 * lowest {
        warnings.push(format!("the irreducible loss exp(e) = {irreducible:.3e} is far below the lowest loss observed, {lowest:.4}"));
    }
    let variables = Law::from_gemstones_name(fit.law).map_or(&[][..], Law::variables);
    for (j, &x) in fit.exponents.iter().enumerate() {
        let name = variables.get(j).copied().unwrap_or("a variable");
        if x.abs() < 0.01 {
            warnings.push(format!("the exponent of {name} is {x:.4}, near 0: the loss does not depend on it in this fit"));
        } else if x > 5.0 {
            warnings.push(format!("the exponent of {name} is {x:.3}, above 5: steeper than any scaling law"));
        }
    }
    warnings
}

/// The objective of a given law (e.g. a published one) on `rows`.
pub fn objective_of(rows: &[Row], law: Law, delta: f64, fit: &Fit, non_embedding: bool) -> Result<f64> {
    let data = prepare(rows, law, non_embedding)?;
    Ok(Objective { data: &data, delta }.eval(&fit.theta()).0)
}

/// 2.5 and 97.5 percentiles of every fitted quantity over bootstrap resamples of the rows,
/// each refitted from the full fit's solution.
#[derive(Clone, Debug, Serialize)]
pub struct Bootstrap {
    pub samples: usize,
    pub exponents: Vec<(f64, f64)>,
    pub coefficients: Vec<(f64, f64)>,
    pub irreducible_error: (f64, f64),
    /// Params-tokens law: the compute-optimal exponents a and b (`optimal_exponents`).
    pub optimal_exponents: Option<[(f64, f64); 2]>,
}

pub fn bootstrap(rows: &[Row], law: Law, delta: f64, best: &Fit, samples: usize, seed: u64, non_embedding: bool) -> Result<Bootstrap> {
    bootstrap_with_progress(rows, law, delta, best, (samples, seed), non_embedding, &|_, _| {})
}

/// `bootstrap` of `(samples, seed)`, calling `progress(done, total)` as the refits finish.
pub fn bootstrap_with_progress(
    rows: &[Row],
    law: Law,
    delta: f64,
    best: &Fit,
    (samples, seed): (usize, u64),
    non_embedding: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Bootstrap> {
    let data = prepare(rows, law, non_embedding)?;
    let done = std::sync::atomic::AtomicUsize::new(0);
    progress(0, samples);
    let thetas: Vec<Vec<f64>> = (0..samples)
        .into_par_iter()
        .filter_map(|b| {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(b as u64));
            let resampled: Vec<(Vec<f64>, f64)> = (0..data.len()).map(|_| data[rng.random_range(0..data.len())].clone()).collect();
            let refit = minimise(&Objective { data: &resampled, delta }, best.theta(), 200).map(|(t, _)| t);
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, samples);
            refit
        })
        .collect();
    if thetas.is_empty() {
        bail!("every bootstrap refit failed");
    }
    let interval = |i: usize| percentiles(thetas.iter().map(|t| t[i]).collect());
    let k = law.variables().len();
    let optimal = |which: usize| percentiles(thetas.iter().map(|t| optimal_exponents(t[k], t[k + 1])[which]).collect());
    Ok(Bootstrap {
        samples: thetas.len(),
        coefficients: (0..k).map(interval).collect(),
        exponents: (k..2 * k).map(interval).collect(),
        irreducible_error: interval(2 * k),
        optimal_exponents: (law == Law::ParamsTokens).then(|| [optimal(0), optimal(1)]),
    })
}

/// The 2.5 and 97.5 percentiles of `v`.
fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// The compute-optimal exponents `[a, b]` of `N_opt ~ C^a`, `D_opt ~ C^b` under
/// `L = E + A / N^alpha + B / D^beta`: `a = beta / (alpha + beta)`, `b = alpha / (alpha +
/// beta)` (Chinchilla, approach 3).
pub fn optimal_exponents(alpha: f64, beta: f64) -> [f64; 2] {
    [beta / (alpha + beta), alpha / (alpha + beta)]
}

/// The compute-optimal split of a FLOP budget C = 6 N D under a params-tokens law.
#[derive(Clone, Debug, Serialize)]
pub struct ComputeOptimal {
    pub flops: f64,
    pub params: f64,
    pub tokens: f64,
    pub loss: f64,
}

pub fn compute_optimal(fit: &Fit, flops: f64) -> ComputeOptimal {
    let loss = |log_n: f64| fit.predict(&[log_n.exp(), flops / (6.0 * log_n.exp())]);
    // The loss is unimodal in log N: golden-section search between 1 and C/6 parameters.
    let (mut lo, mut hi) = (0.0f64, (flops / 6.0).ln());
    let phi = 0.5 * (5f64.sqrt() - 1.0);
    for _ in 0..200 {
        let (a, b) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
        if loss(a) < loss(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    let n = (0.5 * (lo + hi)).exp();
    ComputeOptimal { flops, params: n, tokens: flops / (6.0 * n), loss: loss(n.ln()) }
}

/// A compute-optimal scaling from one of Chinchilla's approaches: `N_opt = G C^a`,
/// `D_opt = H C^b`, and what they give at a budget.
#[derive(Clone, Debug, Serialize)]
pub struct OptimalScaling {
    /// 1 (the loss envelope), 2 (iso-FLOP parabolas) or 3 (the parametric law).
    pub approach: u8,
    pub params_exponent: f64,
    pub params_coefficient: f64,
    pub tokens_exponent: f64,
    pub tokens_coefficient: f64,
    /// The budget the two below are for (FLOPs).
    pub budget: f64,
    /// N_opt and D_opt / N_opt at the budget.
    pub params_at_budget: f64,
    pub tokens_per_param: f64,
    /// Bootstrap 95% intervals of a and b.
    pub params_exponent_interval: Option<(f64, f64)>,
    pub tokens_exponent_interval: Option<(f64, f64)>,
}

impl OptimalScaling {
    fn new(approach: u8, (params_exponent, params_coefficient): (f64, f64), (tokens_exponent, tokens_coefficient): (f64, f64), budget: f64) -> Self {
        let n = params_coefficient * budget.powf(params_exponent);
        let d = tokens_coefficient * budget.powf(tokens_exponent);
        OptimalScaling {
            approach,
            params_exponent,
            params_coefficient,
            tokens_exponent,
            tokens_coefficient,
            budget,
            params_at_budget: n,
            tokens_per_param: d / n,
            params_exponent_interval: None,
            tokens_exponent_interval: None,
        }
    }

    /// N_opt at a budget of `flops`.
    pub fn params_at(&self, flops: f64) -> f64 {
        self.params_coefficient * flops.powf(self.params_exponent)
    }
}

/// Approach 3's scaling from a params-tokens fit: with `C = 6 N D`, `N_opt = G (C / 6)^a`
/// and `D_opt = (C / 6)^b / G`, `G = (alpha A / (beta B))^(1 / (alpha + beta))`.
pub fn approach3(fit: &Fit, budget: f64) -> OptimalScaling {
    let (a_coef, b_coef) = (fit.coefficients[0].exp(), fit.coefficients[1].exp());
    let (alpha, beta) = (fit.exponents[0], fit.exponents[1]);
    let [a, b] = optimal_exponents(alpha, beta);
    let g = (alpha * a_coef / (beta * b_coef)).powf(1.0 / (alpha + beta));
    OptimalScaling::new(3, (a, g * 6f64.powf(-a)), (b, 6f64.powf(-b) / g), budget)
}

/// Approach 1's scaling: power laws through the envelope's compute-optimal rows.
/// The share of the variance of `observed` that `predicted` explains: 1 - SS_res / SS_tot.
pub fn r_squared(pairs: &[(f64, f64)]) -> f64 {
    let mean = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.len() as f64;
    let total: f64 = pairs.iter().map(|p| (p.0 - mean).powi(2)).sum();
    let residual: f64 = pairs.iter().map(|p| (p.0 - p.1).powi(2)).sum();
    1.0 - residual / total
}

pub fn approach1(rows: &[Row], budget: f64) -> OptimalScaling {
    let f = frontier(rows);
    OptimalScaling::new(1, (f.params_exponent, f.params_coefficient), (f.tokens_exponent, f.tokens_coefficient), budget)
}

/// One iso-FLOP slice of approach 2: rows of (nearly) one budget, and the minimum of the
/// parabola in log N fitted to their losses.
#[derive(Clone, Debug, Serialize)]
pub struct IsoFlopSlice {
    /// The rows' geometric mean FLOPs.
    pub flops: f64,
    pub rows: usize,
    pub params_opt: f64,
    pub loss_opt: f64,
}

/// Rows whose FLOPs are within this factor of a slice's smallest join it.
const SLICE_WIDTH: f64 = 1.1;

/// Rows of (nearly) one budget, by budget: indices of rows with positive FLOPs and
/// parameters, each group's FLOPs within `SLICE_WIDTH` of its smallest.
pub fn iso_flop_groups(rows: &[Row]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].flops > 0.0 && rows[i].params > 0.0).collect();
    order.sort_by(|&a, &b| rows[a].flops.total_cmp(&rows[b].flops));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if rows[i].flops <= SLICE_WIDTH * rows[g[0]].flops => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// Approach 2's slices: rows grouped by budget (`iso_flop_groups`), a parabola `loss = p (ln N)^2 + q ln N + r`
/// fitted to each slice of 3 or more model sizes, its minimum kept where the parabola opens
/// upwards and the minimum lies among the slice's sizes.
pub fn iso_flop_slices(rows: &[Row]) -> Vec<IsoFlopSlice> {
    iso_flop_groups(rows)
        .into_iter()
        .filter_map(|g| {
            let points: Vec<(f64, f64)> = g.iter().map(|&i| (rows[i].params.ln(), rows[i].loss)).collect();
            let (at, loss_opt, _) = parabola_minimum(&points)?;
            Some(IsoFlopSlice {
                flops: (g.iter().map(|&i| rows[i].flops.ln()).sum::<f64>() / g.len() as f64).exp(),
                rows: g.len(),
                params_opt: at.exp(),
                loss_opt,
            })
        })
        .collect()
}

/// The minimum `(x, y)` of the least-squares parabola through `points`, and its
/// coefficients `[p, q, r]` of `y = p x^2 + q x + r`: None unless the points hold 3 or
/// more distinct x, the parabola opens upwards and its minimum lies among the points' x.
pub fn parabola_minimum(points: &[(f64, f64)]) -> Option<(f64, f64, [f64; 3])> {
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let [p, q, r] = parabola(points).filter(|_| xs.len() >= 3)?;
    let at = -q / (2.0 * p);
    (p > 0.0 && (xs[0]..=xs[xs.len() - 1]).contains(&at)).then_some((at, p * at * at + q * at + r, [p, q, r]))
}

/// Least-squares `y = p x^2 + q x + r` (None when the points do not determine one).
fn parabola(points: &[(f64, f64)]) -> Option<[f64; 3]> {
    // Normal equations, centred on the mean x for conditioning.
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mut m = [[0.0f64; 4]; 3];
    for &(x, y) in points {
        let u = x - mx;
        let basis = [u * u, u, 1.0];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += basis[i] * basis[j];
            }
            m[i][3] += basis[i] * y;
        }
    }
    for c in 0..3 {
        let pivot = (c..3).max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))?;
        m.swap(c, pivot);
        if m[c][c].abs() < 1e-12 {
            return None;
        }
        let pivot_row = m[c];
        for (r, row) in m.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot_row[c];
                row.iter_mut().zip(pivot_row).skip(c).for_each(|(x, p)| *x -= f * p);
            }
        }
    }
    let (a, b, c) = (m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]);
    // Back from u = x - mx: a u^2 + b u + c.
    Some([a, b - 2.0 * a * mx, a * mx * mx - b * mx + c])
}

/// Approach 2's scaling: power laws through the slices' minima (None with fewer than two).
pub fn approach2(rows: &[Row], budget: f64) -> Option<OptimalScaling> {
    let slices = iso_flop_slices(rows);
    if slices.len() < 2 {
        return None;
    }
    let (pe, pc) = line_fit(&slices.iter().map(|s| (s.flops.ln(), s.params_opt.ln())).collect::<Vec<_>>());
    let (te, tc) = line_fit(&slices.iter().map(|s| (s.flops.ln(), (s.flops / (6.0 * s.params_opt)).ln())).collect::<Vec<_>>());
    Some(OptimalScaling::new(2, (pe, pc.exp()), (te, tc.exp()), budget))
}

/// Bootstrap 95% intervals of approaches 1 and 2's exponents, from `samples` resamples of
/// the rows (with replacement); a resample that gives no scaling is left out.
pub fn bootstrap_envelopes(rows: &[Row], scaling: &mut [OptimalScaling], samples: usize, seed: u64) {
    for s in scaling.iter_mut().filter(|s| s.approach != 3) {
        let exponents: Vec<(f64, f64)> = (0..samples)
            .into_par_iter()
            .filter_map(|b| {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(b as u64));
                let resampled: Vec<Row> = (0..rows.len()).map(|_| rows[rng.random_range(0..rows.len())].clone()).collect();
                let again = if s.approach == 1 { Some(approach1(&resampled, s.budget)) } else { approach2(&resampled, s.budget) };
                again.map(|a| (a.params_exponent, a.tokens_exponent)).filter(|(a, b)| a.is_finite() && b.is_finite())
            })
            .collect();
        if exponents.len() >= 2 {
            s.params_exponent_interval = Some(percentiles(exponents.iter().map(|e| e.0).collect()));
            s.tokens_exponent_interval = Some(percentiles(exponents.iter().map(|e| e.1).collect()));
        }
    }
}

/// Approach 1: the compute-optimal frontier and power laws `N_opt = a C^alpha`,
/// `D_opt = b C^beta` fitted to it (least squares in log space).
#[derive(Clone, Debug, Serialize)]
pub struct Frontier {
    /// Indices of the rows on the lower convex hull of (log FLOPs, loss), by FLOPs.
    pub hull: Vec<usize>,
    /// The hull points where loss still falls: the compute-optimal checkpoints.
    pub optimal: Vec<usize>,
    pub params_exponent: f64,
    pub params_coefficient: f64,
    pub tokens_exponent: f64,
    pub tokens_coefficient: f64,
}

fn line_fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (slope, my - slope * mx)
}

pub fn frontier(rows: &[Row]) -> Frontier {
    let mut order: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].flops > 0.0).collect();
    order.sort_by(|&a, &b| rows[a].flops.total_cmp(&rows[b].flops).then(rows[a].loss.total_cmp(&rows[b].loss)));
    let point = |i: usize| (rows[i].flops.ln(), rows[i].loss);
    let mut hull: Vec<usize> = Vec::new();
    for i in order {
        while hull.len() >= 2 {
            let (o, a, b) = (point(hull[hull.len() - 2]), point(hull[hull.len() - 1]), point(i));
            let cross = (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
            if cross <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    let mut optimal = Vec::new();
    for &i in &hull {
        if optimal.last().is_none_or(|&j: &usize| rows[i].loss < rows[j].loss) {
            optimal.push(i);
        }
    }
    let fit_of = |f: &dyn Fn(&Row) -> f64| line_fit(&optimal.iter().map(|&i| (rows[i].flops.ln(), f(&rows[i]).ln())).collect::<Vec<_>>());
    let (pe, pc) = fit_of(&|r| r.params);
    let (te, tc) = fit_of(&|r| r.tokens);
    Frontier { hull, optimal, params_exponent: pe, params_coefficient: pc.exp(), tokens_exponent: te, tokens_coefficient: tc.exp() }
}
