//! The benchmark rows: each seed layer's forward and forward+backward graph
//! (and a `Linear` layer's, the matrix-product row), and the `cnn` and `mlp`
//! training steps, timed compiled and
//! unrewritten side by side. `kiln bench` and the criterion benches run these.

use crate::alloc_count;
use crate::compile::{compile_program, CompileOptions};
use crate::dtype::Feed;
use crate::error::{KilnError, Result};
use crate::exec::{feed_refs, Executable, Profile};
use crate::models;

use serde::Serialize;
use std::time::{Duration, Instant};

/// What a row's graph computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    /// The layer's forward output.
    Forward,
    /// The forward output plus the gradients w.r.t. the input and every
    /// parameter, for a fixed upstream gradient (input `grad_y`).
    ForwardBackward,
    /// A whole training step: forward, loss, backward and SGD updates.
    TrainStep,
}

impl Pass {
    /// The name used in tables, JSON and `--pass`.
    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::ForwardBackward => "forward_backward",
            Pass::TrainStep => "train_step",
        }
    }
}

/// One benchmark row: a built-in model and what its graph computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// Layer name as in SEED_BENCHMARK.md (`Conv2D`, ..., `CNN`).
    pub layer: &'static str,
    /// The built-in model (see [`models::MODELS`]).
    pub model: &'static str,
    /// Input shape, e.g. `8x64x32x32`.
    pub shape: &'static str,
    /// Forward, forward+backward or training step.
    pub pass: Pass,
}

impl Row {
    /// `layer/shape/pass`, the row's id in criterion and `--row` filters.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.layer, self.shape, self.pass.name())
    }
}

/// Every row, in table order.
pub fn rows() -> Vec<Row> {
    const LAYERS: [(&str, &str, &str); 7] = [
        ("Conv2D", "conv2d", "8x64x32x32"),
        ("Conv1D", "conv1d", "8x64x256"),
        ("MaxPool2D", "maxpool2d-small", "4x32x16x16"),
        ("MaxPool2D", "maxpool2d", "8x64x32x32"),
        ("AvgPool2D", "avgpool2d-small", "4x32x16x16"),
        ("AvgPool2D", "avgpool2d", "8x64x32x32"),
        ("Linear", "linear", "256x1024"),
    ];
    let mut rows = Vec::new();
    for (layer, model, shape) in LAYERS {
        for pass in [Pass::Forward, Pass::ForwardBackward] {
            rows.push(Row {
                layer,
                model,
                shape,
                pass,
            });
        }
    }
    rows.push(Row {
        layer: "CNN",
        model: "cnn",
        shape: "32x1x28x28",
        pass: Pass::TrainStep,
    });
    rows.push(Row {
        layer: "MLP",
        model: "mlp",
        shape: "32x784",
        pass: Pass::TrainStep,
    });
    rows.push(Row {
        layer: "ResNet-8",
        model: "resnet",
        shape: "32x1x28x28",
        pass: Pass::TrainStep,
    });
    rows.push(Row {
        layer: "LSTM",
        model: "lstm",
        shape: "32x28x28",
        pass: Pass::TrainStep,
    });
    for pass in [Pass::Forward, Pass::TrainStep] {
        rows.push(Row {
            layer: "Transformer",
            model: "transformer",
            shape: "16x64",
            pass,
        });
    }
    rows
}

/// The rows that any of `filters` picks (case-insensitive): a filter equal
/// to a row's whole id picks that row alone (`Conv2D/8x64x32x32/forward`, not
/// its `forward_backward`), any other filter the rows whose id contains it.
/// All rows if `filters` is empty. `Err` if a filter picks nothing.
pub fn select(filters: &[String]) -> Result<Vec<Row>> {
    let all = rows();
    if filters.is_empty() {
        return Ok(all);
    }
    let ids: Vec<String> = all.iter().map(|r| r.id().to_lowercase()).collect();
    let picks = |f: &str, id: &str| {
        let f = f.to_lowercase();
        match ids.contains(&f) {
            true => id == f,
            false => id.contains(&f),
        }
    };
    if let Some(f) = filters.iter().find(|f| !ids.iter().any(|id| picks(f, id))) {
        let ids: Vec<String> = all.iter().map(Row::id).collect();
        return Err(KilnError::Invalid(format!(
            "no benchmark row matches `{f}`; rows: {}",
            ids.join(", ")
        )));
    }
    Ok(all
        .into_iter()
        .zip(&ids)
        .filter(|(_, id)| filters.iter().any(|f| picks(f, id)))
        .map(|(r, _)| r)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picked(filters: &[&str]) -> Vec<String> {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        select(&filters).unwrap().iter().map(Row::id).collect()
    }

    #[test]
    fn a_whole_id_picks_one_row_and_other_text_every_row_containing_it() {
        assert_eq!(
            picked(&["conv2d/8x64x32x32/FORWARD"]),
            ["Conv2D/8x64x32x32/forward"]
        );
        assert_eq!(
            picked(&["Conv2D/8x64x32x32/forward", "conv1d/8x64x256/forward"]),
            ["Conv2D/8x64x32x32/forward", "Conv1D/8x64x256/forward"]
        );
        assert_eq!(
            picked(&["Conv2D/8x64x32x32/forw"]),
            [
                "Conv2D/8x64x32x32/forward",
                "Conv2D/8x64x32x32/forward_backward"
            ]
        );
        assert_eq!(picked(&[]).len(), rows().len());
        let e = select(&["GRU".to_string()]).unwrap_err().to_string();
        assert!(
            e.contains("`GRU`") && e.contains("CNN/32x1x28x28/train_step"),
            "{e}"
        );
    }
}

/// A row's graph compiled with `options`, with seeded feeds for every input.
pub struct Prepared {
    /// The executable.
    pub exe: Executable,
    /// Input name and value for each input.
    pub feeds: Vec<(String, Box<dyn Feed>)>,
}

impl Prepared {
    /// Compiles `row` with `options` (seed 0 parameters, inputs from
    /// [`Executable::example_feeds`]), for training unless it is a forward row.
    pub fn new(row: &Row, options: &CompileOptions) -> Result<Prepared> {
        let training = row.pass != Pass::Forward;
        let program = models::program(row.model, 0, training)?;
        let options = &CompileOptions {
            training,
            ..options.clone()
        };
        let exe = compile_program(program, options)?;
        let feeds = exe.example_feeds()?;
        Ok(Prepared { exe, feeds })
    }

    /// One run (outputs left in place); allocates nothing for up to two inputs.
    pub fn run(&mut self) -> Result<()> {
        fn f((n, t): &(String, Box<dyn Feed>)) -> (&str, &dyn Feed) {
            (n.as_str(), t.as_ref())
        }
        match self.feeds.as_slice() {
            [a] => self.exe.run_in_place(&[f(a)]),
            [a, b] => self.exe.run_in_place(&[f(a), f(b)]),
            many => self.exe.run_in_place(&feed_refs(many)),
        }
    }
}

/// Timing of one executable over repeated runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// Median time of one run.
    pub median: Duration,
    /// Runs timed.
    pub runs: usize,
    /// Heap allocations per run (process-wide; `None` without the counting allocator).
    pub allocs: Option<f64>,
    /// Bytes allocated per run.
    pub bytes: Option<f64>,
}

/// Runs `p` a few times to warm up, then times single runs until `budget` is
/// spent (at least `min_runs`), and counts allocations over the timed runs.
pub fn time(p: &mut Prepared, budget: Duration, min_runs: usize) -> Result<Timing> {
    let feeds = feed_refs(&p.feeds);
    let warm = Instant::now();
    for _ in 0..3 {
        p.exe.run_in_place(&feeds)?;
        if warm.elapsed() > budget / 2 {
            break;
        }
    }
    let max_runs = 10_000;
    let mut times = Vec::with_capacity(max_runs);
    let counting = alloc_count::installed();
    let before = alloc_count::snapshot();
    let started = Instant::now();
    while times.len() < max_runs && (times.len() < min_runs || started.elapsed() < budget) {
        let t = Instant::now();
        p.exe.run_in_place(&feeds)?;
        times.push(t.elapsed());
    }
    let used = alloc_count::snapshot() - before;
    let runs = times.len();
    times.sort();
    let per_run = |v: u64| counting.then(|| v as f64 / runs as f64);
    Ok(Timing {
        median: times[runs / 2],
        runs,
        allocs: per_run(used.count),
        bytes: per_run(used.bytes),
    })
}

/// One row's result, as `kiln bench --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct RowResult {
    /// Layer name.
    pub layer: &'static str,
    /// Input shape.
    pub shape: &'static str,
    /// `forward`, `forward_backward` or `train_step`.
    pub pass: &'static str,
    /// Median ns per run of the unrewritten graph (`None` if skipped).
    pub unrewritten_ns: Option<u64>,
    /// Median ns per run of the compiled graph.
    pub compiled_ns: u64,
    /// Heap allocations per compiled run.
    pub allocs_per_op: Option<f64>,
    /// Bytes allocated per compiled run.
    pub bytes_per_op: Option<f64>,
    /// Threads the executables ran on.
    pub threads: usize,
    /// Peak bytes of the compiled executable's buffers.
    pub arena_bytes: usize,
}

impl RowResult {
    /// Unrewritten time over compiled time.
    pub fn speedup(&self) -> Option<f64> {
        self.unrewritten_ns
            .map(|u| u as f64 / self.compiled_ns.max(1) as f64)
    }
}

/// Measures `row` compiled (and unrewritten unless `skip_unrewritten`) on
/// `threads` threads, each for about `budget`.
pub fn measure(
    row: &Row,
    threads: usize,
    budget: Duration,
    skip_unrewritten: bool,
) -> Result<RowResult> {
    let compiled_opts = CompileOptions {
        threads: Some(threads),
        ..CompileOptions::default()
    };
    let mut compiled = Prepared::new(row, &compiled_opts)?;
    let c = time(&mut compiled, budget, 5)?;
    let unrewritten_ns = if skip_unrewritten {
        None
    } else {
        let opts = CompileOptions {
            threads: Some(threads),
            ..CompileOptions::unrewritten()
        };
        let mut plain = Prepared::new(row, &opts)?;
        Some(time(&mut plain, budget, 3)?.median.as_nanos() as u64)
    };
    Ok(RowResult {
        layer: row.layer,
        shape: row.shape,
        pass: row.pass.name(),
        unrewritten_ns,
        compiled_ns: c.median.as_nanos() as u64,
        allocs_per_op: c.allocs,
        bytes_per_op: c.bytes,
        threads,
        arena_bytes: compiled.exe.planned_bytes(),
    })
}

/// The time per op kind of `row`'s compiled graph over `budget` of runs (at
/// least 3) after warm-up. Profiled runs take a level's steps one at a time
/// (each step's kernel still uses the threads), so they run slower than timed
/// runs; the shares are what to read.
pub fn profile(row: &Row, threads: usize, budget: Duration) -> Result<Profile> {
    let options = CompileOptions {
        threads: Some(threads),
        ..CompileOptions::default()
    };
    let mut p = Prepared::new(row, &options)?;
    let feeds = feed_refs(&p.feeds);
    for _ in 0..3 {
        p.exe.run_in_place(&feeds)?;
    }
    p.exe.set_profiling(true);
    let started = Instant::now();
    let mut runs = 0;
    while runs < 3 || started.elapsed() < budget {
        p.exe.run_in_place(&feeds)?;
        runs += 1;
    }
    Ok(p.exe.profile().cloned().unwrap_or_default())
}
