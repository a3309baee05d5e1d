//! The `kiln` command line: dump and run the built-in models.

use clap::{Parser, Subcommand};
use kiln::graph::dump::dump;
use kiln::{compile, models, DumpFormat, Tensor};
use std::process::ExitCode;
use std::time::Instant;

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
    /// Print a built-in model's graph.
    Dump {
        /// Model name (see `kiln list`).
        model: String,
        /// Output format: text, dot or json.
        #[arg(long, default_value = "text")]
        format: String,
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
    },
    /// List the built-in models.
    List,
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
        Command::List => {
            for (name, what) in models::MODELS {
                println!("{name:16} {what}");
            }
        }
        Command::Dump {
            model,
            format,
            seed,
        } => {
            let format: DumpFormat = format.parse()?;
            let m = models::build(&model, seed)?;
            print!("{}", dump(&m.graph, &[m.output], format)?);
        }
        Command::Run { model, seed } => {
            let m = models::build(&model, seed)?;
            let t0 = Instant::now();
            let mut exe = compile(&m.graph, &[m.output])?;
            let compile_time = t0.elapsed();
            let inputs: Vec<(String, Tensor)> = m
                .inputs
                .iter()
                .enumerate()
                .map(|(i, (name, shape))| {
                    (
                        name.clone(),
                        Tensor::rand_uniform(shape.clone(), -1.0, 1.0, seed + 1 + i as u64),
                    )
                })
                .collect();
            let feeds: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let t1 = Instant::now();
            let out = exe.run(&feeds)?;
            let run_time = t1.elapsed();
            let y = &out[0];
            println!("model:    {model} ({} ops)", exe.num_steps());
            println!("output:   {:?}", y.shape());
            println!(
                "checksum: sum = {:.6}, sum|x| = {:.6}",
                y.sum(),
                y.data().iter().map(|v| v.abs() as f64).sum::<f64>()
            );
            println!("compile:  {:.3} ms", compile_time.as_secs_f64() * 1e3);
            println!(
                "run:      {:.3} ms (unrewritten graph, reference kernels)",
                run_time.as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
