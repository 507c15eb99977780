//! Strategy optimisation: one engine behind `trellis optimise` and the API's optimisation jobs.
//!
//! A parameter space is a list of discrete values per parameter (MT5's start/step/stop), searched by
//! **grid** (every combination), **random** (distinct combinations drawn with a seed) or **genetic**
//! (MT5 Strategy Tester's idea: a population, tournament selection, uniform crossover, mutation, elitism,
//! stopping after some generations without improvement). Every candidate is scored by an objective — net
//! profit, Sharpe, profit factor or recovery factor — and is infeasible (no score) when it breaks a
//! constraint (too few trades, too deep a drawdown).
//!
//! Runs are parallel over all cores (rayon) on history decoded once ([`super::tape`]); every random draw is
//! made on the calling thread in a fixed order, so a seed gives the same candidates, scores and winner
//! whatever the number of threads. A cancel flag is checked between runs; progress is reported per run.
//!
//! **Walk-forward** splits the history into windows: optimise in-sample, run the winner on the following
//! out-of-sample window, move on (rolling: the in-sample window slides; anchored: it grows from the start).
//! Out-of-sample windows are disjoint and adjacent; their equity curves are stitched end to end, and the
//! walk-forward efficiency is the out-of-sample profit rate over the in-sample one (per unit of time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use super::tape::{History, Tape};
use super::{Backtest, BacktestConfig, Report};
use crate::strategies::{Params, StrategyRegistry};

/// Most combinations a grid may have.
pub const MAX_GRID: u64 = 1_000_000;

/// A parameter and its candidate values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dimension {
    pub name: String,
    pub values: Vec<f64>,
}

impl Dimension {
    /// `name=5:50:5` (start:stop:step, stop included), `name=5,10,20`, or `name=10`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| format!("`{spec}` is not name=start:stop:step or name=a,b,c"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{spec}`: the parameter has no name"));
        }
        let num = |s: &str| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{name}: `{}` is not a number", s.trim()))
        };
        let values = match values.split(':').collect::<Vec<_>>()[..] {
            [start, stop, step] => Self::range(name, num(start)?, num(stop)?, num(step)?)?,
            [_] => values.split(',').map(num).collect::<Result<Vec<_>, _>>()?,
            _ => return Err(format!("{name}: `{values}` is not start:stop:step")),
        };
        Ok(Self {
            name: name.to_owned(),
            values,
        })
    }

    /// start, start+step, … up to stop (included, within rounding).
    pub fn range(name: &str, start: f64, stop: f64, step: f64) -> Result<Vec<f64>, String> {
        if step <= 0.0 || stop < start {
            return Err(format!(
                "{name}: start:stop:step needs step > 0 and stop >= start"
            ));
        }
        let n = ((stop - start) / step + 1e-9).floor() as u64 + 1;
        if n > MAX_GRID {
            return Err(format!("{name}: {n} values; at most {MAX_GRID}"));
        }
        // Computed from the index, not accumulated, so 0.1 steps do not drift.
        Ok((0..n)
            .map(|i| {
                let v = start + step * i as f64;
                (v * 1e9).round() / 1e9
            })
            .collect())
    }
}

/// The space searched: every dimension has at least one value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Space {
    pub dimensions: Vec<Dimension>,
}

impl Space {
    pub fn new(dimensions: Vec<Dimension>) -> Result<Self, String> {
        if dimensions.is_empty() {
            return Err("no parameter to optimise".into());
        }
        for d in &dimensions {
            if d.values.is_empty() {
                return Err(format!("{}: no value", d.name));
            }
        }
        let mut names: Vec<&str> = dimensions.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("{}: given twice", w[0]));
        }
        Ok(Self { dimensions })
    }

    /// Combinations in the grid (saturating).
    pub fn size(&self) -> u64 {
        self.dimensions
            .iter()
            .fold(1u64, |n, d| n.saturating_mul(d.values.len() as u64))
    }

    pub fn names(&self) -> Vec<String> {
        self.dimensions.iter().map(|d| d.name.clone()).collect()
    }

    /// The values of a genome (one index per dimension).
    pub fn values(&self, genome: &[usize]) -> Vec<f64> {
        genome
            .iter()
            .zip(&self.dimensions)
            .map(|(&i, d)| d.values[i])
            .collect()
    }

    pub fn params(&self, values: &[f64]) -> Params {
        self.dimensions
            .iter()
            .zip(values)
            .map(|(d, v)| (d.name.clone(), *v))
            .collect()
    }

    /// The `k`-th combination of the grid (the last dimension varies fastest).
    fn genome_at(&self, mut k: u64) -> Vec<usize> {
        let mut genome = vec![0; self.dimensions.len()];
        for (slot, d) in genome.iter_mut().zip(&self.dimensions).rev() {
            let n = d.values.len() as u64;
            *slot = (k % n) as usize;
            k /= n;
        }
        genome
    }

    fn random_genome(&self, rng: &mut SmallRng) -> Vec<usize> {
        self.dimensions
            .iter()
            .map(|d| rng.gen_range(0..d.values.len()))
            .collect()
    }
}

/// How the space is searched.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    Grid,
    Random {
        samples: u64,
    },
    Genetic {
        population: usize,
        /// Probability that two parents cross over (else the child copies the fitter).
        crossover: f64,
        /// Probability that a gene mutates.
        mutation: f64,
        /// Best candidates copied unchanged into the next generation.
        elitism: usize,
        /// Stop after this many generations without a better best.
        patience: u32,
        max_generations: u32,
    },
}

impl Method {
    pub fn genetic() -> Self {
        Self::Genetic {
            population: 50,
            crossover: 0.9,
            mutation: 0.1,
            elitism: 2,
            patience: 10,
            max_generations: 100,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Grid => "grid",
            Self::Random { .. } => "random",
            Self::Genetic { .. } => "genetic",
        }
    }

    /// Refuses settings that cannot run.
    pub fn validate(&self, space: &Space) -> Result<(), String> {
        match self {
            Self::Grid if space.size() > MAX_GRID => Err(format!(
                "the grid has {} combinations; at most {MAX_GRID} (use random or genetic)",
                space.size()
            )),
            Self::Random { samples } if *samples == 0 || *samples > MAX_GRID => {
                Err(format!("samples: between 1 and {MAX_GRID}"))
            }
            Self::Genetic {
                population,
                crossover,
                mutation,
                elitism,
                max_generations,
                ..
            } => {
                if !(2..=10_000).contains(population) {
                    return Err("population: between 2 and 10000".into());
                }
                if !(0.0..=1.0).contains(crossover) || !(0.0..=1.0).contains(mutation) {
                    return Err("crossover and mutation are probabilities in [0, 1]".into());
                }
                if *elitism >= *population {
                    return Err("elitism: fewer than the population".into());
                }
                if *max_generations == 0 || *max_generations > 10_000 {
                    return Err("max_generations: between 1 and 10000".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// What a candidate is scored by (all maximised).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    NetProfit,
    Sharpe,
    ProfitFactor,
    /// Net profit / maximum drawdown.
    RecoveryFactor,
}

impl Objective {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "net_profit" | "total_pnl" => Self::NetProfit,
            "sharpe" => Self::Sharpe,
            "profit_factor" => Self::ProfitFactor,
            "recovery_factor" => Self::RecoveryFactor,
            _ => {
                return Err(format!(
                    "`{s}` is not net_profit, sharpe, profit_factor or recovery_factor"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NetProfit => "net_profit",
            Self::Sharpe => "sharpe",
            Self::ProfitFactor => "profit_factor",
            Self::RecoveryFactor => "recovery_factor",
        }
    }

    /// The score of a report; `None` when the figure does not exist (a profit factor without a losing
    /// trade, a Sharpe ratio of less than two days, a recovery factor without drawdown).
    pub fn score(self, r: &Report) -> Option<f64> {
        let v = match self {
            Self::NetProfit => r.total_pnl.to_f64(),
            Self::Sharpe => r.sharpe,
            Self::ProfitFactor => r.profit_factor,
            Self::RecoveryFactor => {
                if r.max_drawdown.is_zero() {
                    None
                } else {
                    (r.total_pnl / r.max_drawdown).to_f64()
                }
            }
        };
        v.filter(|x| x.is_finite())
    }
}

/// Limits a candidate must keep to be ranked.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Constraints {
    pub min_trades: Option<u64>,
    /// In account currency.
    pub max_drawdown: Option<f64>,
}

impl Constraints {
    pub fn allow(&self, r: &Report) -> bool {
        self.min_trades.is_none_or(|m| r.trades as u64 >= m)
            && self
                .max_drawdown
                .is_none_or(|m| r.max_drawdown.to_f64().is_some_and(|d| d <= m))
    }
}

/// A scored candidate. `score` is `None` when the candidate is infeasible or has no figure.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate<T> {
    pub values: Vec<f64>,
    pub score: Option<f64>,
    pub outcome: T,
}

/// Cancellation and progress, shared with whoever watches the search.
#[derive(Debug, Default)]
pub struct Control {
    pub cancel: AtomicBool,
    /// Runs done.
    pub done: AtomicU64,
    /// Runs expected (grows for a genetic search as generations go).
    pub total: AtomicU64,
}

impl Control {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// The search was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Orders candidates best first: scored before unscored, higher scores first, then by values so ties are
/// broken the same way every time.
fn rank<T>(candidates: &mut [Candidate<T>]) {
    candidates.sort_by(|a, b| {
        let s = |c: &Candidate<T>| c.score.unwrap_or(f64::NEG_INFINITY);
        s(b).total_cmp(&s(a)).then_with(|| {
            a.values
                .iter()
                .zip(&b.values)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
}

/// Searches `space` with `method`, scoring each combination with `evaluate` (run in parallel).
/// Returns every candidate evaluated, best first.
pub fn search<T, F>(
    space: &Space,
    method: &Method,
    seed: u64,
    control: &Control,
    evaluate: F,
) -> Result<Vec<Candidate<T>>, Cancelled>
where
    T: Send + Clone,
    F: Fn(&[f64]) -> (Option<f64>, T) + Sync,
{
    let run = |genomes: &[Vec<usize>]| -> Result<Vec<Candidate<T>>, Cancelled> {
        let out: Vec<Option<Candidate<T>>> = genomes
            .par_iter()
            .map(|g| {
                if control.cancelled() {
                    return None;
                }
                let values = space.values(g);
                let (score, outcome) = evaluate(&values);
                control.done.fetch_add(1, Ordering::Relaxed);
                Some(Candidate {
                    values,
                    score: score.filter(|s| s.is_finite()),
                    outcome,
                })
            })
            .collect();
        if control.cancelled() {
            return Err(Cancelled);
        }
        Ok(out.into_iter().flatten().collect())
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut all = match method {
        Method::Grid => {
            control.total.store(space.size(), Ordering::Relaxed);
            let genomes: Vec<Vec<usize>> = (0..space.size()).map(|k| space.genome_at(k)).collect();
            run(&genomes)?
        }
        Method::Random { samples } => {
            let n = (*samples).min(space.size());
            control.total.store(n, Ordering::Relaxed);
            let genomes: Vec<Vec<usize>> = if n == space.size() {
                (0..n).map(|k| space.genome_at(k)).collect()
            } else if space.size() <= 4 * n {
                // Dense: shuffle the grid's indices and take the first n.
                let mut ks: Vec<u64> = (0..space.size()).collect();
                ks.shuffle(&mut rng);
                ks.truncate(n as usize);
                ks.into_iter().map(|k| space.genome_at(k)).collect()
            } else {
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                while (out.len() as u64) < n {
                    let g = space.random_genome(&mut rng);
                    if seen.insert(g.clone()) {
                        out.push(g);
                    }
                }
                out
            };
            run(&genomes)?
        }
        Method::Genetic {
            population,
            crossover,
            mutation,
            elitism,
            patience,
            max_generations,
        } => genetic(
            space,
            GeneticSettings {
                population: *population,
                crossover: *crossover,
                mutation: *mutation,
                elitism: *elitism,
                patience: *patience,
                max_generations: *max_generations,
            },
            &mut rng,
            control,
            run,
        )?,
    };
    rank(&mut all);
    Ok(all)
}

struct GeneticSettings {
    population: usize,
    crossover: f64,
    mutation: f64,
    elitism: usize,
    patience: u32,
    max_generations: u32,
}

fn genetic<T: Clone>(
    space: &Space,
    s: GeneticSettings,
    rng: &mut SmallRng,
    control: &Control,
    run: impl Fn(&[Vec<usize>]) -> Result<Vec<Candidate<T>>, Cancelled>,
) -> Result<Vec<Candidate<T>>, Cancelled> {
    // Every genome is evaluated once: a genome seen again takes its remembered score.
    let mut scores: HashMap<Vec<usize>, Option<f64>> = HashMap::new();
    let mut evaluated: Vec<Candidate<T>> = Vec::new();
    let fitness = |scores: &HashMap<Vec<usize>, Option<f64>>, g: &Vec<usize>| {
        scores
            .get(g)
            .copied()
            .flatten()
            .unwrap_or(f64::NEG_INFINITY)
    };
    let mut population: Vec<Vec<usize>> = (0..s.population)
        .map(|_| space.random_genome(rng))
        .collect();
    let mut best = f64::NEG_INFINITY;
    let mut stale = 0;
    for generation in 0..s.max_generations {
        let mut fresh: Vec<Vec<usize>> = Vec::new();
        for g in &population {
            if !scores.contains_key(g) && !fresh.contains(g) {
                fresh.push(g.clone());
            }
        }
        control
            .total
            .fetch_add(fresh.len() as u64, Ordering::Relaxed);
        let genomes = fresh.clone();
        for (g, c) in genomes.into_iter().zip(run(&fresh)?) {
            scores.insert(g, c.score);
            evaluated.push(c);
        }
        // Fittest first; ties by genome so the order never depends on evaluation order.
        population.sort_by(|a, b| {
            fitness(&scores, b)
                .total_cmp(&fitness(&scores, a))
                .then_with(|| a.cmp(b))
        });
        let top = fitness(&scores, &population[0]);
        if top > best {
            best = top;
            stale = 0;
        } else {
            stale += 1;
            if stale >= s.patience {
                break;
            }
        }
        if generation + 1 == s.max_generations || scores.len() as u64 >= space.size() {
            break;
        }
        let mut next: Vec<Vec<usize>> = Vec::with_capacity(s.population);
        for g in &population {
            if next.len() >= s.elitism {
                break;
            }
            if !next.contains(g) {
                next.push(g.clone());
            }
        }
        let tournament = |rng: &mut SmallRng| -> &Vec<usize> {
            let mut pick = &population[rng.gen_range(0..population.len())];
            for _ in 0..2 {
                let other = &population[rng.gen_range(0..population.len())];
                if fitness(&scores, other) > fitness(&scores, pick) {
                    pick = other;
                }
            }
            pick
        };
        while next.len() < s.population {
            let a = tournament(rng);
            let b = tournament(rng);
            let mut child: Vec<usize> = if rng.gen_bool(s.crossover) {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| if rng.gen_bool(0.5) { *x } else { *y })
                    .collect()
            } else if fitness(&scores, a) >= fitness(&scores, b) {
                a.clone()
            } else {
                b.clone()
            };
            for (gene, d) in child.iter_mut().zip(&space.dimensions) {
                let n = d.values.len();
                if n > 1 && rng.gen_bool(s.mutation) {
                    // Half the mutations are small steps (local search), half jumps anywhere.
                    *gene = if rng.gen_bool(0.5) {
                        let reach = (n / 8).max(1) as i64;
                        let step =
                            rng.gen_range(1..=reach) * if rng.gen_bool(0.5) { 1 } else { -1 };
                        (*gene as i64 + step).clamp(0, n as i64 - 1) as usize
                    } else {
                        rng.gen_range(0..n)
                    };
                }
            }
            next.push(child);
        }
        population = next;
    }
    Ok(evaluated)
}

/// A backtest's figures kept for a candidate.
pub type Outcome = Result<Report, String>;

/// Scores parameter sets of one strategy by backtesting them on a tape.
pub struct StrategyRuns<'a> {
    pub template: &'a BacktestConfig,
    pub registry: &'a StrategyRegistry,
    pub objective: Objective,
    pub constraints: &'a Constraints,
    pub space: &'a Space,
}

impl StrategyRuns<'_> {
    /// One run: the report, or why the parameters were refused.
    pub fn run(&self, tape: &Tape, values: &[f64], record_equity: bool) -> Outcome {
        let mut cfg = self.template.clone();
        cfg.record_equity = record_equity;
        for (k, v) in self.space.params(values) {
            cfg.params.insert(k, v);
        }
        let bt = Backtest::new(cfg, self.registry).map_err(|e| e.to_string())?;
        Ok(bt.run_tape(tape).0)
    }

    pub fn score(&self, outcome: &Outcome) -> Option<f64> {
        let r = outcome.as_ref().ok()?;
        if !self.constraints.allow(r) {
            return None;
        }
        self.objective.score(r)
    }

    /// Searches on one tape.
    pub fn optimise(
        &self,
        tape: &Tape,
        method: &Method,
        seed: u64,
        control: &Control,
    ) -> Result<Vec<Candidate<Outcome>>, Cancelled> {
        search(self.space, method, seed, control, |values| {
            let outcome = self.run(tape, values, false);
            (self.score(&outcome), outcome)
        })
    }
}

/// How walk-forward windows are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WalkForwardSpec {
    pub in_sample_ms: i64,
    pub out_of_sample_ms: i64,
    /// In-sample windows all start at the history's start (else they roll forward).
    pub anchored: bool,
}

/// One window: in-sample `[in_from, in_to)`, out-of-sample `[out_from, out_to)` with `out_from == in_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowBounds {
    pub in_from_ms: i64,
    pub in_to_ms: i64,
    pub out_from_ms: i64,
    pub out_to_ms: i64,
}

impl WalkForwardSpec {
    /// The windows over `[start, end]`: out-of-sample windows follow each other without gap or overlap;
    /// the last one may be shorter (it ends with the history).
    pub fn windows(&self, start_ms: i64, end_ms: i64) -> Result<Vec<WindowBounds>, String> {
        if self.in_sample_ms <= 0 || self.out_of_sample_ms <= 0 {
            return Err("in-sample and out-of-sample lengths must be positive".into());
        }
        let mut out = Vec::new();
        let mut k: i64 = 0;
        loop {
            let in_to = start_ms
                .saturating_add(self.in_sample_ms)
                .saturating_add(k.saturating_mul(self.out_of_sample_ms));
            if in_to > end_ms {
                break;
            }
            let in_from = if self.anchored {
                start_ms
            } else {
                in_to - self.in_sample_ms
            };
            out.push(WindowBounds {
                in_from_ms: in_from,
                in_to_ms: in_to,
                out_from_ms: in_to,
                out_to_ms: in_to.saturating_add(self.out_of_sample_ms).min(end_ms + 1),
            });
            k += 1;
            if out.len() > 10_000 {
                return Err("more than 10000 windows; use longer windows".into());
            }
        }
        if out.is_empty() {
            return Err(format!(
                "the history ({} ms) is shorter than one in-sample window ({} ms)",
                end_ms - start_ms,
                self.in_sample_ms
            ));
        }
        Ok(out)
    }
}

/// A walk-forward window's result.
#[derive(Debug, Clone, Serialize)]
pub struct WindowResult {
    pub bounds: WindowBounds,
    pub best: Option<Vec<f64>>,
    pub in_score: Option<f64>,
    pub in_net_profit: f64,
    pub out_net_profit: f64,
    pub out_trades: usize,
    pub candidates: usize,
}

/// The whole walk-forward.
#[derive(Debug, Clone, Serialize)]
pub struct WalkForward {
    pub spec: WalkForwardSpec,
    pub windows: Vec<WindowResult>,
    /// Out-of-sample equity, window after window, each starting where the previous ended.
    pub stitched: Vec<(i64, f64)>,
    pub out_net_profit: f64,
    /// (out-of-sample profit per unit time) / (in-sample profit per unit time); `None` when in-sample
    /// profit is not positive.
    pub efficiency: Option<f64>,
}

/// Joins equity curves that each start at `balance`: every curve is shifted to begin where the previous one
/// ended. Returns the joined curve and the final equity.
pub fn stitch(balance: f64, curves: &[Vec<(i64, f64)>]) -> (Vec<(i64, f64)>, f64) {
    let mut out = Vec::new();
    let mut level = balance;
    for c in curves {
        let shift = level - balance;
        out.extend(c.iter().map(|(t, e)| (*t, e + shift)));
        if let Some((_, last)) = c.last() {
            level = last + shift;
        }
    }
    (out, level)
}

/// Walk-forward efficiency from per-window (in-sample profit, in-sample length, out-of-sample profit,
/// out-of-sample length).
pub fn efficiency(windows: &[(f64, i64, f64, i64)]) -> Option<f64> {
    let (is_p, is_t, oos_p, oos_t) = windows
        .iter()
        .fold((0.0, 0i64, 0.0, 0i64), |(a, b, c, d), (ip, it, op, ot)| {
            (a + ip, b + it, c + op, d + ot)
        });
    if is_p <= 0.0 || is_t <= 0 || oos_t <= 0 {
        return None;
    }
    Some((oos_p / oos_t as f64) / (is_p / is_t as f64))
}

impl StrategyRuns<'_> {
    /// Optimises each in-sample window and runs its best on the next out-of-sample window.
    pub fn walk_forward(
        &self,
        history: &History,
        spec: WalkForwardSpec,
        method: &Method,
        seed: u64,
        control: &Control,
    ) -> Result<Result<WalkForward, String>, Cancelled> {
        let Some((start, end)) = history.span() else {
            return Ok(Err("no ticks of the symbol".into()));
        };
        let windows = match spec.windows(start, end) {
            Ok(w) => w,
            Err(e) => return Ok(Err(e)),
        };
        let balance = self.template.balance.to_f64().unwrap_or(0.0);
        let mut results = Vec::new();
        let mut curves = Vec::new();
        let mut rates = Vec::new();
        for w in windows {
            let in_tape = history.tape_of(
                self.template.timeframe,
                history.range(w.in_from_ms, w.in_to_ms),
            );
            let out_tape = history.tape_of(
                self.template.timeframe,
                history.range(w.out_from_ms, w.out_to_ms),
            );
            let candidates = self.optimise(&in_tape, method, seed, control)?;
            let best = candidates.first().filter(|c| c.score.is_some());
            let in_net = best
                .and_then(|c| c.outcome.as_ref().ok())
                .and_then(|r| r.total_pnl.to_f64())
                .unwrap_or(0.0);
            let (out_net, out_trades, curve) = match best {
                Some(c) => match self.run(&out_tape, &c.values, true) {
                    Ok(r) => (r.total_pnl.to_f64().unwrap_or(0.0), r.trades, r.equity),
                    Err(_) => (0.0, 0, Vec::new()),
                },
                // Nothing feasible in-sample: the window is sat out (flat).
                None => (
                    0.0,
                    0,
                    vec![(w.out_from_ms, balance), (w.out_to_ms, balance)],
                ),
            };
            rates.push((
                in_net,
                w.in_to_ms - w.in_from_ms,
                out_net,
                w.out_to_ms - w.out_from_ms,
            ));
            curves.push(curve);
            results.push(WindowResult {
                bounds: w,
                best: best.map(|c| c.values.clone()),
                in_score: best.and_then(|c| c.score),
                in_net_profit: in_net,
                out_net_profit: out_net,
                out_trades,
                candidates: candidates.len(),
            });
        }
        let (stitched, last) = stitch(balance, &curves);
        Ok(Ok(WalkForward {
            spec,
            windows: results,
            stitched,
            out_net_profit: last - balance,
            efficiency: efficiency(&rates),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Symbol, Timeframe};
    use crate::sim::feed::RandomWalk;

    fn space2(n: usize) -> Space {
        let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
        Space::new(vec![
            Dimension {
                name: "x".into(),
                values: values.clone(),
            },
            Dimension {
                name: "y".into(),
                values,
            },
        ])
        .expect("space")
    }

    /// A smooth hill with its top at (37, 61) and a lower ridge elsewhere, so a search can be misled.
    fn hill(v: &[f64]) -> (Option<f64>, ()) {
        let (x, y) = (v[0], v[1]);
        let main = 1000.0 - ((x - 37.0).powi(2) + (y - 61.0).powi(2));
        let ridge = 700.0 - 0.5 * ((x - 80.0).powi(2) + (y - 10.0).powi(2));
        (Some(main.max(ridge)), ())
    }

    #[test]
    fn a_parameter_range_includes_its_stop_and_does_not_drift() {
        let d = Dimension::parse("fast=0.1:0.5:0.1").expect("range");
        assert_eq!(d.values, vec![0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!(
            Dimension::parse("slow=5,10, 20").expect("list").values,
            vec![5.0, 10.0, 20.0]
        );
        assert!(Dimension::parse("slow=5:1:1").is_err());
        assert!(Dimension::parse("slow=a:1:1")
            .expect_err("not a number")
            .contains("`a`"));
        assert!(Space::new(vec![
            Dimension::parse("a=1").expect("a"),
            Dimension::parse("a=2").expect("a"),
        ])
        .is_err());
    }

    #[test]
    fn a_grid_evaluates_every_combination_once_and_ranks_the_best_first() {
        let space = space2(10);
        let control = Control::default();
        let all = search(&space, &Method::Grid, 1, &control, |v| {
            (Some(-(v[0] - 3.0).abs() - (v[1] - 7.0).abs()), ())
        })
        .expect("grid");
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].values, vec![3.0, 7.0]);
        assert_eq!(control.done.load(Ordering::Relaxed), 100);
        let mut seen: Vec<Vec<u64>> = all
            .iter()
            .map(|c| c.values.iter().map(|v| *v as u64).collect())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 100);
    }

    #[test]
    fn a_random_search_draws_distinct_combinations_the_same_way_for_a_seed() {
        let space = space2(100);
        let control = Control::default();
        let f = |v: &[f64]| (Some(v[0] * v[1]), ());
        let a = search(&space, &Method::Random { samples: 300 }, 9, &control, f).expect("a");
        let b = search(&space, &Method::Random { samples: 300 }, 9, &control, f).expect("b");
        assert_eq!(a.len(), 300);
        let key = |c: &Vec<Candidate<()>>| c.iter().map(|c| c.values.clone()).collect::<Vec<_>>();
        assert_eq!(key(&a), key(&b));
        let mut distinct = key(&a);
        distinct.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
        distinct.dedup();
        assert_eq!(distinct.len(), 300);
    }

    #[test]
    fn the_genetic_search_is_identical_for_the_same_seed() {
        let space = space2(100);
        let run = |seed| {
            search(&space, &Method::genetic(), seed, &Control::default(), hill)
                .expect("ga")
                .into_iter()
                .map(|c| (c.values, c.score))
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
    }

    #[test]
    fn the_genetic_search_gets_within_one_percent_of_the_grids_best_evaluating_a_fraction() {
        let space = space2(100);
        let grid = search(&space, &Method::Grid, 0, &Control::default(), hill).expect("grid");
        let best = grid[0].score.expect("scored");
        assert_eq!(grid[0].values, vec![37.0, 61.0]);
        for seed in 0..5 {
            let ga =
                search(&space, &Method::genetic(), seed, &Control::default(), hill).expect("ga");
            let found = ga[0].score.expect("scored");
            assert!(
                found >= best - 0.01 * best.abs(),
                "seed {seed}: {found} against the grid's {best}"
            );
            assert!(ga.len() < grid.len() / 2, "seed {seed}: {} runs", ga.len());
        }
    }

    #[test]
    fn a_cancelled_search_stops_with_cancelled() {
        let control = Control::default();
        control.cancel.store(true, Ordering::Relaxed);
        assert_eq!(
            search(&space2(10), &Method::Grid, 0, &control, hill).err(),
            Some(Cancelled)
        );
    }

    #[test]
    fn infeasible_candidates_rank_after_every_feasible_one() {
        let control = Control::default();
        let all = search(&space2(5), &Method::Grid, 0, &control, |v| {
            (if v[0] > 2.0 { None } else { Some(-v[1]) }, ())
        })
        .expect("grid");
        let first_none = all.iter().position(|c| c.score.is_none()).expect("some");
        assert_eq!(first_none, 15);
        assert!(all[first_none..].iter().all(|c| c.score.is_none()));
    }

    #[test]
    fn walk_forward_windows_are_disjoint_adjacent_and_cover_the_history() {
        let rolling = WalkForwardSpec {
            in_sample_ms: 30,
            out_of_sample_ms: 20,
            anchored: false,
        };
        let w = rolling.windows(0, 100).expect("windows");
        let bounds: Vec<(i64, i64, i64, i64)> = w
            .iter()
            .map(|b| (b.in_from_ms, b.in_to_ms, b.out_from_ms, b.out_to_ms))
            .collect();
        assert_eq!(
            bounds,
            vec![
                (0, 30, 30, 50),
                (20, 50, 50, 70),
                (40, 70, 70, 90),
                (60, 90, 90, 101)
            ]
        );
        let anchored = WalkForwardSpec {
            anchored: true,
            ..rolling
        };
        let a = anchored.windows(0, 100).expect("windows");
        assert!(a.iter().all(|b| b.in_from_ms == 0));
        assert_eq!(a.last().map(|b| b.in_to_ms), Some(90));
        assert!(rolling.windows(0, 10).is_err());
    }

    #[test]
    fn stitched_out_of_sample_curves_continue_from_each_other() {
        let curves = vec![
            vec![(1, 1000.0), (2, 1010.0)],
            vec![(3, 1000.0), (4, 990.0), (5, 1005.0)],
            vec![(6, 1000.0), (7, 1020.0)],
        ];
        let (joined, last) = stitch(1000.0, &curves);
        assert_eq!(
            joined,
            vec![
                (1, 1000.0),
                (2, 1010.0),
                (3, 1010.0),
                (4, 1000.0),
                (5, 1015.0),
                (6, 1015.0),
                (7, 1035.0)
            ]
        );
        assert_eq!(last, 1035.0);
        // 35 earned out of sample in 30 time units against 100 in 90 in sample: (35/30)/(100/90) = 1.05.
        let e = efficiency(&[(40.0, 30, 10.0, 10), (60.0, 60, 25.0, 20)]).expect("efficiency");
        assert!((e - 1.05).abs() < 1e-12, "{e}");
        assert_eq!(efficiency(&[(-5.0, 30, 10.0, 10)]), None);
    }

    fn walk(n: usize) -> Vec<crate::domain::Tick> {
        let symbols = RandomWalk::default_symbols(&["EURUSD".into(), "GBPUSD".into()]);
        RandomWalk::new(symbols, 1_700_000_000_000, 700, 5)
            .with_steps(8, 2)
            .take(n)
            .collect()
    }

    #[test]
    fn a_tape_replays_exactly_what_feeding_every_tick_gives() {
        let ticks = walk(60_000);
        let registry = StrategyRegistry::default();
        let symbol = Symbol::new("EURUSD");
        let history =
            History::collect(&symbol, ticks.iter().cloned().map(Ok::<_, ()>)).expect("history");
        for (fast, slow, tf) in [(3.0, 8.0, Timeframe::M1), (5.0, 21.0, Timeframe::M5)] {
            let mut cfg = BacktestConfig::new("EURUSD", "ema_cross", Params::new(), tf);
            cfg.params.insert("fast".into(), fast);
            cfg.params.insert("slow".into(), slow);
            cfg.record_equity = true;
            let mut live = Backtest::new(cfg.clone(), &registry).expect("strategy");
            for t in &ticks {
                live.on_tick(t);
            }
            let (mut a, deals_a) = live.finish();
            let (mut b, deals_b) = Backtest::new(cfg, &registry)
                .expect("strategy")
                .run_tape(&history.tape(tf));
            for r in [&mut a, &mut b] {
                r.elapsed_ms = 0.0;
                r.ticks_per_sec = 0.0;
            }
            assert!(a.fills >= 3, "the strategy traded: {a:?}");
            assert_eq!(a, b);
            assert_eq!(deals_a, deals_b);
        }
    }

    #[test]
    fn optimising_a_strategy_on_a_tape_ranks_its_backtests_by_the_objective() {
        let ticks = walk(30_000);
        let registry = StrategyRegistry::default();
        let history = History::collect(&Symbol::new("EURUSD"), ticks.into_iter().map(Ok::<_, ()>))
            .expect("history");
        let tape = history.tape(Timeframe::M1);
        let template = BacktestConfig::new("EURUSD", "ema_cross", Params::new(), Timeframe::M1);
        let space = Space::new(vec![
            Dimension::parse("fast=2:6:1").expect("fast"),
            Dimension::parse("slow=8,12,16").expect("slow"),
        ])
        .expect("space");
        let constraints = Constraints {
            min_trades: Some(3),
            max_drawdown: None,
        };
        let runs = StrategyRuns {
            template: &template,
            registry: &registry,
            objective: Objective::NetProfit,
            constraints: &constraints,
            space: &space,
        };
        let all = runs
            .optimise(&tape, &Method::Grid, 0, &Control::default())
            .expect("grid");
        assert_eq!(all.len(), 15);
        let best = &all[0];
        let report = best.outcome.as_ref().expect("ran");
        assert_eq!(best.score, report.total_pnl.to_f64());
        assert!(all
            .iter()
            .filter_map(|c| c.score)
            .all(|s| s <= best.score.unwrap_or(f64::NEG_INFINITY)));
        // The best candidate's figures are those of a backtest of its parameters on its own.
        let mut cfg = template.clone();
        cfg.params = space.params(&best.values);
        let (mut again, _) = Backtest::new(cfg, &registry)
            .expect("strategy")
            .run_tape(&tape);
        again.elapsed_ms = report.elapsed_ms;
        again.ticks_per_sec = report.ticks_per_sec;
        assert_eq!(&again, report);
    }
}
