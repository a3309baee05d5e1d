//! `kiln train --model transformer`: the character language model on a text
//! file, and `--plot`'s loss chart (shared with the classifiers).

use super::{optimizer, save_trained, set_schedule, TrainArgs};
use indicatif::{ProgressBar, ProgressStyle};
use kiln::data::{CharCorpus, Split};
use kiln::models::CharTransformer;
use kiln::rng::Rng;
use kiln::tooling::lm::{lm_trainer, mean_loss, sample};
use kiln::KilnError;
use std::path::Path;
use std::time::{Duration, Instant};

/// Validation batches per evaluation during training, and at the end.
const VAL_BATCHES: (usize, usize) = (8, 64);

/// Trains the character language model on `--data` for `--steps` steps of
/// random windows, evaluating the validation loss ten times; then prints
/// the throughput, the final validation loss and a sample of text.
pub fn train_lm(a: &TrainArgs) -> kiln::Result<()> {
    let Some(path) = &a.data else {
        return Err(KilnError::Invalid(
            "--model transformer trains on a text file: give --data FILE \
             (python bench/shakespeare.py target/shakespeare.txt writes one)"
                .into(),
        ));
    };
    if a.epochs.is_some() {
        return Err(KilnError::Invalid(
            "--epochs applies to the classifiers; the transformer trains for --steps".into(),
        ));
    }
    if a.warmup_epochs > 0 {
        return Err(KilnError::Invalid(
            "--warmup-epochs counts epochs, which the transformer does not have \
             (it trains for --steps); --schedule onecycle warms up"
                .into(),
        ));
    }
    let (chars, temperature) = (a.sample.unwrap_or(500), a.temperature.unwrap_or(0.8));
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(KilnError::Invalid(format!(
            "--temperature must be positive and finite, got {temperature}"
        )));
    }
    let t0 = Instant::now();
    let corpus = CharCorpus::from_file(path)?;
    let model = CharTransformer::new().vocab(corpus.vocab_size());
    let context = model.context();
    for split in [Split::Train, Split::Validation] {
        if corpus.len(split) <= context {
            return Err(KilnError::Invalid(format!(
                "{}: the {split:?} split ({} of {} characters) is too short for one window of \
                 {context} characters and the next (the first 90% trains, the rest validates)",
                path.display(),
                corpus.len(split),
                corpus.len(Split::Train) + corpus.len(Split::Validation)
            )));
        }
    }
    let prompt = match &a.prompt {
        Some(p) if p.is_empty() => {
            return Err(KilnError::Invalid(
                "--prompt is empty: give at least one character".into(),
            ))
        }
        Some(p) => {
            corpus
                .encode(p)
                .map_err(|e| KilnError::Invalid(format!("--prompt: {e}")))?;
            p.clone()
        }
        None => {
            // the validation split's first line, with its newline
            let ids = corpus.ids(Split::Validation);
            let end = ids
                .iter()
                .position(|&i| corpus.decode(&[i]).is_ok_and(|c| c == "\n"));
            corpus.decode(&ids[..end.map_or(ids.len().min(1), |e| e + 1)])?
        }
    };
    let steps = a.steps.unwrap_or(2000);
    let mut trainer = lm_trainer(&model, a.batch_size, a.seed, optimizer(a)?).map_err(|e| {
        KilnError::Invalid(format!(
            "building the transformer's training step for --batch-size {}: {e}",
            a.batch_size
        ))
    })?;
    set_schedule(&mut trainer, a, steps, 0)?;
    if let Some(load) = &a.load {
        trainer.load(load).map_err(|e| {
            KilnError::Invalid(format!(
                "{e} (the model's vocabulary is the text's {} distinct characters)",
                corpus.vocab_size()
            ))
        })?;
    }
    trainer.set_profiling(a.profile);
    let params: usize = trainer.params().iter().map(|p| p.1.numel()).sum();
    let context = model.context();
    outln!(
        "training transformer ({params} parameters) on {} ({} train / {} validation characters, \
         vocabulary {}), batch {} x {context}, {steps} steps, lr {}",
        path.display(),
        corpus.len(Split::Train),
        corpus.len(Split::Validation),
        corpus.vocab_size(),
        a.batch_size,
        a.lr
    );
    let style = ProgressStyle::with_template("step [{bar:30}] {pos}/{len} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let bar = ProgressBar::new(steps).with_style(style);
    let (mut rng, mut losses, mut val) = (Rng::new(a.seed ^ 0xC0FFEE), Vec::new(), Vec::new());
    let mut stepping = Duration::ZERO;
    let every = (steps / 10).max(1);
    for step in 1..=steps {
        let (x, y) = corpus.batch(Split::Train, &mut rng, a.batch_size, context)?;
        let started = Instant::now();
        let loss = trainer.step(&[("x", &x), ("labels", &y)])?;
        stepping += started.elapsed();
        losses.push(loss);
        bar.set_position(step);
        if step % every == 0 || step == steps {
            let v = mean_loss(
                &mut trainer,
                &corpus,
                Split::Validation,
                VAL_BATCHES.0,
                a.seed,
            )?;
            val.push((step, v));
            bar.suspend(|| outln!("step {step}: training loss {loss:.4}, validation loss {v:.4}"));
        }
        let tokens = (step * (a.batch_size * context) as u64) as f64;
        bar.set_message(format!(
            "loss {loss:.4}  {:.0} tokens/s",
            tokens / stepping.as_secs_f64()
        ));
    }
    bar.finish_and_clear();
    if steps > 0 {
        let tokens = steps as f64 * (a.batch_size * context) as f64;
        outln!(
            "{steps} steps in {:.1} s: {:.0} tokens/s (training steps only), {:.2} ms per step",
            stepping.as_secs_f64(),
            tokens / stepping.as_secs_f64(),
            stepping.as_secs_f64() * 1e3 / steps as f64
        );
    }
    save_trained(&trainer, a)?;
    if let Some(plot) = &a.plot {
        plot_losses(plot, "transformer", &losses, &val)?;
        outln!("loss curve written to {}", plot.display());
    }
    if let Some(p) = trainer.step_profile() {
        outln!("time per training step, by op:");
        out!("{p}");
    }
    let v = mean_loss(
        &mut trainer,
        &corpus,
        Split::Validation,
        VAL_BATCHES.1,
        !a.seed,
    )?;
    outln!(
        "validation loss: {v:.4} ({} windows)",
        VAL_BATCHES.1 * a.batch_size
    );
    if chars > 0 {
        let params = trainer.params();
        let text = sample(
            &model,
            &params,
            &corpus,
            &prompt,
            chars,
            temperature,
            a.seed,
        )?;
        outln!("sample (temperature {temperature}):\n{text}");
    }
    outln!("total time: {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// `Err` unless `path` names a file with the extension `.svg` (the one
/// format written) that can be written, so that a long run does not end in
/// a failed plot: its directory exists, it is not a directory, and it opens
/// for writing (a file it had to create is removed again).
pub fn check_plot_path(path: &Path) -> kiln::Result<()> {
    let bad = |why: String| KilnError::Invalid(format!("--plot {}: {why}", path.display()));
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        return Err(bad(
            "the loss curve is written as SVG: give a file name ending in .svg".into(),
        ));
    }
    if path.is_dir() {
        return Err(bad("is a directory".into()));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| bad(format!("cannot be written: {e} (checked before training)")))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Writes the per-step training losses (and validation losses at their
/// steps) as an SVG line chart; non-finite losses are left out.
pub fn plot_losses(
    path: &Path,
    model: &str,
    train: &[f32],
    val: &[(u64, f32)],
) -> kiln::Result<()> {
    use plotters::prelude::*;
    check_plot_path(path)?;
    let failed = |e: &dyn std::fmt::Display| {
        KilnError::Invalid(format!(
            "--plot {}: cannot write the chart: {e}",
            path.display()
        ))
    };
    let points: Vec<(f64, f64)> = train
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as f64 + 1.0, l as f64))
        .chain(val.iter().map(|&(s, l)| (s as f64, l as f64)))
        .filter(|p| p.1.is_finite())
        .collect();
    let top = points.iter().fold(0.0f64, |m, p| m.max(p.1)).max(1e-3) * 1.05;
    let right = (train.len() as f64).max(1.0);
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("kiln train --model {model}"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..right, 0.0..top)
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("cross-entropy loss")
        .draw()
        .map_err(|e| failed(&e))?;
    let finite = |(x, y): (f64, f64)| y.is_finite().then_some((x, y));
    let series = [
        (
            "training loss (each step)",
            BLUE.mix(0.6),
            train
                .iter()
                .enumerate()
                .filter_map(|(i, &l)| finite((i as f64 + 1.0, l as f64)))
                .collect::<Vec<_>>(),
        ),
        (
            "validation loss",
            RED.mix(1.0),
            val.iter()
                .filter_map(|&(s, l)| finite((s as f64, l as f64)))
                .collect(),
        ),
    ];
    for (label, color, data) in series {
        if data.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))
            .map_err(|e| failed(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))
}
