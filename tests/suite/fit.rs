//! The scaling-law fitter: it recovers a known law from noisy data and reproduces the
//! published Gemstones fits on the published rows (tests/data/gemstones/, MIT licence).

use std::path::PathBuf;

use moegrad::research::fit::{bootstrap, compute_optimal, fit, frontier, objective_of, read_rows, Fit, Law, Row, StartGrid};
use rand::Rng;

use crate::common::rng;

fn gemstones(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/gemstones").join(file)
}

/// A published fit file (`{"exponents": {"0": [...]}, ...}`) as a `Fit`.
fn published(law: Law, file: &str) -> Fit {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(gemstones(file)).unwrap()).unwrap();
    let list = |k: &str| v[k]["0"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    Fit {
        law: law.gemstones_name(),
        exponents: list("exponents"),
        coefficients: list("coefficients"),
        irreducible_error: v["irreducible_error"]["0"].as_f64().unwrap(),
        objective: v["loss"]["0"].as_f64().unwrap(),
    }
}

fn values(law: Law, r: &Row) -> Vec<f64> {
    match law {
        Law::ParamsTokens => vec![r.params, r.tokens],
        Law::WidthDepthTokens => vec![r.width, r.depth, r.tokens],
        Law::WidthDepthParamsTokens => vec![r.width, r.depth, r.params, r.tokens],
    }
}

/// `within` is the share of rows whose prediction must be within 0.5% of the published
/// law's (all of them must be within 1%).
fn check_reproduces(law: Law, rows_file: &str, fit_file: &str, grid: &StartGrid, within: f64) {
    let rows = read_rows(&gemstones(rows_file)).unwrap();
    let theirs = published(law, fit_file);
    let ours = fit(&rows, law, 1e-4, grid, false).unwrap();
    // The published objective, recomputed on the same rows, must match the file's.
    let recomputed = objective_of(&rows, law, 1e-4, &theirs, false).unwrap();
    assert!((recomputed - theirs.objective).abs() <= 1e-3 * theirs.objective, "{fit_file}: recomputed {recomputed} vs published {}", theirs.objective);
    assert!(ours.objective <= theirs.objective * 1.001, "{fit_file}: our objective {} is worse than the published {}", ours.objective, theirs.objective);
    let deviations: Vec<f64> = rows.iter().map(|r| (ours.predict(&values(law, r)) / theirs.predict(&values(law, r)) - 1.0).abs()).collect();
    let worst = deviations.iter().cloned().fold(0.0, f64::max);
    let close = deviations.iter().filter(|&&d| d <= 0.005).count() as f64 / rows.len() as f64;
    assert!(
        close >= within && worst <= 0.01,
        "{fit_file}: {:.1}% of predictions within 0.5% of the published law's (worst {worst:.4}); ours {ours:?}",
        100.0 * close
    );
}

#[test]
fn reproduces_the_published_params_tokens_fits() {
    for (rows, fit) in [
        ("losses_hot.jsonl", "fit_delta1e-4_parameters_hot.json"),
        ("losses_cool_end.jsonl", "fit_delta1e-4_parameters_cool_end.json"),
        ("losses_hot_100b+.jsonl", "fit_delta1e-4_parameters_hot_100b+.json"),
        ("losses_lr_ablation_hot.jsonl", "fit_delta1e-4_parameters_lr_ablation_hot.json"),
    ] {
        check_reproduces(Law::ParamsTokens, rows, fit, &StartGrid::gemstones(), 1.0);
    }
}

#[test]
fn reproduces_the_published_width_depth_tokens_fit() {
    check_reproduces(
        Law::WidthDepthTokens,
        "losses_hot_100b+.jsonl",
        "fit_delta1e-4_width_depth_hot_100b+.json",
        &StartGrid::for_law(Law::WidthDepthTokens),
        1.0,
    );
}

/// Width, depth and parameters are nearly collinear here, so the objective is almost flat
/// along a ridge: our optimum scores slightly better than the published one (2.9481e-4
/// vs 2.9497e-4) yet predicts up to 0.8% differently on about 3% of the rows (the
/// longest runs). The objective must not be worse; 95% of predictions must agree to 0.5%.
#[test]
fn reproduces_the_published_width_depth_params_fit() {
    check_reproduces(
        Law::WidthDepthParamsTokens,
        "losses_hot_100b+.jsonl",
        "fit_delta1e-4_width_depth_parameters_hot_100b+.json",
        &StartGrid::for_law(Law::WidthDepthParamsTokens),
        0.95,
    );
}

#[test]
fn recovers_a_known_law_from_noisy_rows() {
    let truth = Fit { law: "parameters", exponents: vec![0.34, 0.28], coefficients: vec![6.0, 7.5], irreducible_error: 0.5, objective: 0.0 };
    let mut r = rng(100);
    let mut rows = Vec::new();
    for n in [1e6, 3e6, 1e7, 3e7, 1e8, 3e8, 1e9] {
        for d in [1e8, 3e8, 1e9, 3e9, 1e10, 3e10, 1e11] {
            let loss = truth.predict(&[n, d]) * (1.0 + r.random_range(-0.003..0.003));
            rows.push(Row { run_name: String::new(), width: 1.0, depth: 1.0, params: n, non_embedding_params: n, tokens: d, loss, flops: 6.0 * n * d });
        }
    }
    let got = fit(&rows, Law::ParamsTokens, 1e-3, &StartGrid::gemstones(), false).unwrap();
    for (a, b) in got.exponents.iter().zip(&truth.exponents) {
        assert!((a - b).abs() < 0.03, "exponents {:?} vs {:?}", got.exponents, truth.exponents);
    }
    assert!((got.irreducible_error - truth.irreducible_error).abs() < 0.05, "e {} vs {}", got.irreducible_error, truth.irreducible_error);

    let ci = bootstrap(&rows, Law::ParamsTokens, 1e-3, &got, 20, 1, false).unwrap();
    for ((lo, hi), x) in ci.exponents.iter().zip(&got.exponents) {
        assert!(lo <= x && x <= hi && hi - lo < 0.2, "interval {lo}..{hi} around {x}");
    }
    // The compute-optimal split beats its neighbours at the same budget.
    let best = compute_optimal(&got, 1e20);
    for scale in [0.5, 2.0] {
        let n = best.params * scale;
        assert!(got.predict(&[n, 1e20 / (6.0 * n)]) > best.loss);
    }
}

#[test]
fn approach_one_frontier_is_the_lower_convex_hull() {
    let rows = read_rows(&gemstones("losses_hot.jsonl")).unwrap();
    let f = frontier(&rows);
    assert!(f.optimal.len() >= 3);
    // Every row lies on or above the hull's piecewise-linear lower boundary.
    for r in &rows {
        let x = r.flops.ln();
        for w in f.hull.windows(2) {
            let (a, b) = (&rows[w[0]], &rows[w[1]]);
            let (xa, xb) = (a.flops.ln(), b.flops.ln());
            if xa <= x && x <= xb && xb > xa {
                let y = a.loss + (b.loss - a.loss) * (x - xa) / (xb - xa);
                assert!(r.loss >= y - 1e-9, "{} lies below the hull", r.run_name);
            }
        }
    }
    // Bigger budgets want more parameters and more tokens.
    assert!(f.params_exponent > 0.0 && f.tokens_exponent > 0.0, "{f:?}");
}
