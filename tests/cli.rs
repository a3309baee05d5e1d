//! The `kiln` binary: dump and run built-in models, clear errors otherwise.
#![cfg(feature = "cli")]

use std::process::Command;

fn kiln(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn dump_prints_every_format() {
    let (ok, text, _) = kiln(&["dump", "conv1d"]);
    assert!(ok);
    assert!(
        text.starts_with("%0 = input() {name=\"x\"} : f32[8,64,256]\n"),
        "{text}"
    );
    assert!(text.contains("unfold(%0) {dilation=[1], kernel=[3], pad=[1], stride=[1]}"));
    assert!(text.trim_end().ends_with("return %9"));
    let (ok, dot, _) = kiln(&["dump", "maxpool2d", "--format", "dot"]);
    assert!(ok && dot.starts_with("digraph kiln {"));
    let (ok, json, _) = kiln(&["dump", "mlp", "--format", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["nodes"][0]["shape"], serde_json::json!([32, 784]));
}

#[test]
fn run_prints_shape_and_checksum() {
    let (ok, out, err) = kiln(&["run", "mlp"]);
    assert!(ok, "{err}");
    assert!(out.contains("output:   [32, 10]"), "{out}");
    assert!(out.contains("checksum: sum = "));
    let (_, again, _) = kiln(&["run", "mlp"]);
    let checksum = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("checksum"))
            .unwrap()
            .to_string()
    };
    assert_eq!(checksum(&out), checksum(&again), "same seed, same output");
    let (_, other, _) = kiln(&["run", "mlp", "--seed", "3"]);
    assert_ne!(checksum(&out), checksum(&other));
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let (ok, _, err) = kiln(&["dump", "vgg"]);
    assert!(!ok);
    assert!(
        err.contains("unknown model `vgg`") && err.contains("resnet"),
        "{err}"
    );
    let (ok, _, err) = kiln(&["dump", "cnn", "--format", "xml"]);
    assert!(!ok && err.contains("unknown dump format `xml`"), "{err}");
}

#[test]
fn dump_stages_and_stats() {
    let (ok, before, _) = kiln(&["dump", "mlp", "--stage", "before"]);
    assert!(ok && before.contains("transpose("));
    let (ok, fin, _) = kiln(&["dump", "mlp", "--stage", "final"]);
    assert!(
        ok && !fin.contains("transpose(") && fin.contains("{trans_b=true}"),
        "{fin}"
    );
    let (ok, mid, _) = kiln(&["dump", "mlp", "--stage", "algebraic"]);
    assert!(
        ok && mid.contains("transpose("),
        "matmul_transpose runs after algebraic"
    );
    let (ok, stats, _) = kiln(&["dump", "cnn", "--train", "--stats"]);
    assert!(ok, "{stats}");
    let first = stats.lines().next().unwrap();
    assert!(
        first.starts_with("nodes: ") && first.contains(" before, "),
        "{stats}"
    );
    for pass in ["algebraic", "matmul_transpose", "permute", "cse", "dce"] {
        assert!(
            stats
                .lines()
                .any(|l| l.trim_start().starts_with(pass) && l.ends_with("rewrites")),
            "{pass} in {stats}"
        );
    }
    let (ok, train, _) = kiln(&["dump", "conv1d", "--train"]);
    assert!(
        ok && train.contains("grad_y")
            && train.contains("conv.weight.grad")
            && train.contains("x.grad"),
        "{train}"
    );
    let (ok, _, err) = kiln(&["dump", "mlp", "--stage", "nope"]);
    assert!(
        !ok && err.contains("unknown stage `nope`") && err.contains("permute"),
        "{err}"
    );
}

#[test]
fn dump_traces_stops_and_bisects_the_rewrites() {
    let (ok, out, err) = kiln(&["dump", "cnn", "--train", "--trace"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("#1 ") && lines[0].contains("max_pool"),
        "{out}"
    );
    assert!(
        out.contains("conv_kernel_grad / kernel_grad") && out.contains("reshape -> n"),
        "{out}"
    );
    let table = lines
        .iter()
        .position(|l| l.starts_with("pass "))
        .expect("rules table");
    assert!(lines[table].contains("attempts") && lines[table].contains("rewrites"));
    assert!(lines.last().unwrap().starts_with("never fired: "), "{out}");
    let firings = lines[..table].iter().filter(|l| l.starts_with('#')).count();

    let (ok, out, err) = kiln(&["dump", "cnn", "--train", "--stop-after", "5", "--trace"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with('#')).count(),
        5,
        "{out}"
    );
    let (ok, out, _) = kiln(&["dump", "cnn", "--train", "--stop-after", "5", "--stats"]);
    assert!(ok && out.contains("stopped after 5 rewrites"), "{out}");
    let (ok, out, _) = kiln(&["dump", "cnn", "--stop-after", "0"]);
    assert!(
        ok && out.contains("unfold"),
        "no rewrite: the generic graph\n{out}"
    );

    let (ok, out, err) = kiln(&["dump", "cnn", "--train", "--bisect"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("no rewrite changes the results: all {firings} rewrites checked against the unrewritten graph")
    );
}

/// A reader that stops early (`kiln dump cnn | head -1`) ends kiln quietly,
/// without a panic: here the pipe is closed before kiln writes at all.
#[test]
fn a_closed_stdout_ends_kiln_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["dump", "cnn", "--train"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kiln");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{err}");
}

/// A bad thread count fails `dump --stats` before it prints anything.
#[test]
fn dump_stats_checks_the_thread_count_first() {
    let (ok, out, err) = kiln_env(
        &["dump", "cnn", "--stats"],
        &[("KILN_THREADS", "abc")],
        &std::env::temp_dir(),
    );
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("KILN_THREADS=`abc` is not a thread count"),
        "{err}"
    );
}

#[test]
fn run_profile_lists_the_ops() {
    let (ok, out, err) = kiln(&["run", "mlp", "--profile"]);
    assert!(ok, "{err}");
    let table: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("op ")).collect();
    assert!(table.len() > 2, "{out}");
    let matmul = table
        .iter()
        .find(|l| l.starts_with("matmul"))
        .expect("a matmul row");
    assert_eq!(
        matmul.split_whitespace().nth(1),
        Some("2"),
        "two matmuls per run: {matmul}"
    );
}

#[test]
fn dump_stats_reports_the_arena_and_its_sharing() {
    let (ok, text, err) = kiln(&["dump", "cnn", "--train", "--stats"]);
    assert!(ok, "{err}");
    let line = text
        .lines()
        .find(|l| l.starts_with("memory: "))
        .expect("a memory line");
    let nums: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (peak, unshared) = (nums[0], nums[1]);
    // the cnn step's parameters alone take 4·(144+16+4608+32+15680+10) bytes, twice with momentum
    assert!(peak >= 2 * 4 * 20_490, "{line}");
    assert!(peak < unshared, "values should share memory: {line}");
    // element-wise steps of the training step write over values nobody reads afterwards
    let in_place = nums[3];
    assert!(in_place > 0 && line.ends_with("written in place"), "{line}");
}

#[test]
fn bench_profile_lists_each_rows_ops() {
    let (ok, out, err) = kiln(&[
        "bench",
        "--row",
        "MaxPool2D/4x32x16x16/forward",
        "--row",
        "MaxPool2D/4x32x16x16/forward_backward",
        "--seconds",
        "0.05",
        "--skip-unrewritten",
        "--profile",
    ]);
    assert!(ok, "{err}");
    let forward = out
        .split("MaxPool2D/4x32x16x16/forward (compiled")
        .nth(1)
        .expect("the forward row's profile");
    let (forward, backward) = forward
        .split_once("MaxPool2D/4x32x16x16/forward_backward (compiled")
        .expect("the forward+backward row's profile");
    // a forward-only graph pools without indices; its gradient needs them
    assert!(
        forward.contains("maxpool2d ") && !forward.contains("with_indices"),
        "{out}"
    );
    assert!(
        backward.contains("maxpool2d_with_indices") && backward.contains("maxpool2d_backward"),
        "{out}"
    );
    let (ok, _, err) = kiln(&["bench", "--profile", "--json"]);
    assert!(!ok && err.contains("--json"), "{err}");
}

#[test]
fn bench_lists_and_filters_rows_and_times_one_as_json() {
    let (ok, list, _) = kiln(&["bench", "--list"]);
    assert!(ok);
    assert_eq!(list.lines().count(), 20, "{list}");
    assert!(list.contains("Conv2D/8x64x32x32/forward_backward"));
    assert!(list.contains("Transformer/16x64/forward"));
    assert!(list.contains("CNN/32x1x28x28/train_step"));
    assert!(list.contains("Linear/256x1024/forward_backward"));
    assert!(list.contains("MLP/32x784/train_step"));
    let (ok, _, err) = kiln(&["bench", "--row", "nonsense"]);
    assert!(
        !ok && err.contains("no benchmark row matches `nonsense`"),
        "{err}"
    );
    let (ok, json, err) = kiln(&[
        "bench",
        "--row",
        "avgpool2d/4x32x16x16/forward_backward",
        "--json",
        "--seconds",
        "0.05",
        "--threads",
        "1",
    ]);
    assert!(ok, "{err}");
    let row: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(row["layer"], "AvgPool2D");
    assert_eq!(row["shape"], "4x32x16x16");
    assert_eq!(row["pass"], "forward_backward");
    assert!(row["compiled_ns"].as_u64().unwrap() > 0);
    assert!(row["unrewritten_ns"].as_u64().unwrap() > 0);
    assert!(row["allocs_per_op"].as_f64().is_some());
    assert!(row["bytes_per_op"].as_f64().is_some());
}

/// Runs kiln with extra environment variables in `dir`.
fn kiln_env(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("KILN_DATA")
        .env_remove("KILN_DUMP");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kiln");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A fresh directory holding an MNIST-format set of `train` and `test`
/// 28x28 images whose labels are `labels(i)`.
fn tiny_mnist(name: &str, train: u32, test: u32) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let idx = |dims: &[u32], data: Vec<u8>| {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(data);
        v
    };
    for (stem, n) in [("train", train), ("t10k", test)] {
        let pixels = (0..n as usize * 784).map(|i| (i * 7 % 256) as u8).collect();
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(
            dir.join(format!("{stem}-images-idx3-ubyte")),
            idx(&[n, 28, 28], pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{stem}-labels-idx1-ubyte")),
            idx(&[n], labels),
        )
        .unwrap();
    }
    dir
}

#[test]
fn train_refuses_data_and_sizes_it_cannot_use_before_training() {
    let tmp = std::env::temp_dir();
    let d = tiny_mnist("sizes", 4, 0);
    let data = d.to_str().unwrap();
    let (ok, out, err) = kiln_env(
        &[
            "train",
            "--data",
            data,
            "--epochs",
            "1",
            "--batch-size",
            "2",
        ],
        &[],
        &tmp,
    );
    assert!(
        !ok && err.contains("the test set has no images"),
        "{out}{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
    let d = tiny_mnist("batch", 4, 2);
    let data = d.to_str().unwrap();
    for batch in ["5", "100000000000"] {
        let (ok, out, err) = kiln_env(
            &[
                "train",
                "--data",
                data,
                "--epochs",
                "1",
                "--batch-size",
                batch,
            ],
            &[],
            &tmp,
        );
        assert!(
            !ok && err.contains(&format!(
                "--batch-size {batch} is larger than the 4 training images"
            )),
            "{out}{err}"
        );
        assert!(!out.contains("epoch"), "{out}");
    }
    let (ok, _, err) = kiln_env(
        &[
            "train",
            "--data",
            data,
            "--epochs",
            "0",
            "--batch-size",
            "3",
        ],
        &[],
        &tmp,
    );
    assert!(
        !ok && err.contains("--batch-size 3 is larger than the 2 test images"),
        "{err}"
    );
    // a --save path that cannot be written is refused before any epoch
    let (ok, out, err) = kiln_env(
        &[
            "train",
            "--data",
            data,
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--save",
            "/nonexistent-kiln-dir/w.safetensors",
        ],
        &[],
        &tmp,
    );
    assert!(
        !ok && err
            .contains("--save: /nonexistent-kiln-dir/w.safetensors: cannot write weights here"),
        "{err}"
    );
    assert!(!out.contains("epoch"), "{out}");
    for (flag, value, part) in [
        (
            "--lr",
            "NaN",
            "learning rate (lr) must be a finite number ≥ 0, got NaN",
        ),
        ("--lr", "-1", "got -1"),
        (
            "--momentum",
            "-0.5",
            "momentum must be a finite number ≥ 0, got -0.5",
        ),
    ] {
        let (ok, _, err) = kiln_env(
            &[
                "train",
                "--data",
                data,
                "--epochs",
                "1",
                "--batch-size",
                "2",
                flag,
                value,
            ],
            &[],
            &tmp,
        );
        assert!(!ok && err.contains(part), "{flag} {value}: {err}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn train_finds_its_data_at_run_time_and_dumps_each_graph_apart() {
    let d = tiny_mnist("env", 4, 2);
    let data = d.to_str().unwrap();
    let dump = d.join("dumps");
    let save = d.join("w.safetensors");
    // KILN_DATA, from a directory with no ./data
    let (ok, out, err) = kiln_env(
        &[
            "train",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--save",
            save.to_str().unwrap(),
        ],
        &[("KILN_DATA", data), ("KILN_DUMP", dump.to_str().unwrap())],
        &std::env::temp_dir(),
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("training cnn on {data} (4 train / 2 test images)")),
        "{out}"
    );
    assert!(
        out.contains("epoch 1/1: mean loss ") && out.contains("test accuracy: "),
        "{out}"
    );
    assert!(kiln::weights::load(&save).is_ok());
    for sub in ["train-step", "evaluate"] {
        let first = dump.join(sub).join("00-input.txt");
        assert!(first.is_file(), "{} missing", first.display());
    }
    let step = std::fs::read_to_string(dump.join("train-step/00-input.txt")).unwrap();
    let eval = std::fs::read_to_string(dump.join("evaluate/00-input.txt")).unwrap();
    assert!(
        step.len() > eval.len(),
        "the step graph holds the backward pass too"
    );
    // a KILN_DATA that does not hold the files is named
    let (ok, _, err) = kiln_env(&["train"], &[("KILN_DATA", "/nonexistent-kiln-data")], &d);
    assert!(
        !ok && err.contains("/nonexistent-kiln-data: no train-images-idx3-ubyte"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn dump_html_writes_one_page_and_refuses_what_it_cannot_do() {
    let dir = std::env::temp_dir().join(format!("kiln-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mlp.html");
    let (ok, out, err) = kiln(&["dump", "mlp", "--train", "--html", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("wrote {}\n", file.display()));
    let page = std::fs::read_to_string(&file).unwrap();
    assert!(page.contains("<title>kiln: the mlp training step, pass by pass</title>"));
    assert!(page.matches("<svg").count() >= 2);
    // `-` is standard output
    let (ok, out, _) = kiln(&["dump", "mlp", "--html", "-"]);
    assert!(ok && out.starts_with("<!doctype html>") && out.trim_end().ends_with("</html>"));
    // the graph as built has no passes to step through
    let (ok, _, err) = kiln(&["dump", "mlp", "--stage", "before", "--html", "x.html"]);
    assert!(!ok && err.contains("--html need passes"), "{err}");
    // an unwritable path is an error naming it, and nothing is printed
    let bad = dir.join("no-such-dir").join("x.html");
    let (ok, out, err) = kiln(&["dump", "mlp", "--html", bad.to_str().unwrap()]);
    assert!(
        !ok && out.is_empty() && err.contains("no-such-dir"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn summary_lists_built_in_models_and_trainable_classifiers() {
    let (ok, out, err) = kiln(&["summary", "resnet20"]);
    assert!(ok, "{err}");
    // ResNet-20: 272,186 parameters, as torch counts the same model
    // (bench/pytorch_train.py's resnet(3))
    assert!(out.contains("Trainable params: 272,186"), "{out}");
    assert!(
        out.contains("└─BasicBlock") && out.contains("[32, 64, 7, 7]"),
        "{out}"
    );
    let (ok, _, err) = kiln(&["summary", "vgg"]);
    assert!(!ok && err.contains("unknown model `vgg`"), "{err}");
    let (ok, _, err) = kiln(&[
        "train",
        "--epochs",
        "0",
        "--schedule",
        "onecycle",
        "--warmup-epochs",
        "2",
    ]);
    assert!(
        !ok && err.contains("--warmup-epochs applies to --schedule cosine"),
        "{err}"
    );
}

#[test]
fn train_transformer_on_a_text_file_prints_throughput_and_a_sample_and_plots_svg() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("verse.txt");
    std::fs::write(
        &text,
        "ROMEO:\nBut soft, what light through yonder window breaks?\n\n".repeat(20),
    )
    .unwrap();
    let (text_s, plot) = (text.to_str().unwrap(), dir.join("loss.svg"));
    let args = |extra: &[&str]| {
        let mut v = vec![
            "train",
            "--model",
            "transformer",
            "--data",
            text_s,
            "--batch-size",
            "2",
        ];
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        kiln(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (ok, out, err) = run(&[
        "--steps",
        "3",
        "--sample",
        "30",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("vocabulary 28") && out.contains("batch 2 x 64, 3 steps"),
        "{out}"
    );
    assert!(
        out.contains("3 steps in") && out.contains("tokens/s"),
        "{out}"
    );
    assert!(out.contains("validation loss: "), "{out}");
    // the default prompt is the validation split's first line
    let sample = out
        .split("sample (temperature 0.8):\n")
        .nth(1)
        .expect("a sample");
    let sample = sample.split("\ntotal time").next().unwrap();
    assert!(
        sample.starts_with("ROMEO:\n") && sample.chars().count() == "ROMEO:\n".len() + 30,
        "{sample}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("validation loss"),
        "{svg:.200}"
    );
    // refused before training: no data, a plot that is not SVG, epochs-only options
    let (ok, _, err) = kiln(&["train", "--model", "transformer"]);
    assert!(!ok && err.contains("--data FILE"), "{err}");
    let (ok, _, err) = run(&["--plot", "loss.png"]);
    assert!(!ok && err.contains("SVG"), "{err}");
    let (ok, _, err) = run(&["--warmup-epochs", "1", "--schedule", "cosine"]);
    assert!(!ok && err.contains("--steps"), "{err}");
    let (ok, _, err) = run(&["--temperature", "0", "--steps", "1"]);
    assert!(!ok && err.contains("temperature"), "{err}");
    let (ok, _, err) = run(&["--prompt", "Juliet", "--steps", "1"]);
    assert!(
        !ok && err.contains("'J'") && err.contains("vocabulary"),
        "{err}"
    );
    let (ok, _, err) = kiln(&["train", "--model", "mlp", "--steps", "5"]);
    assert!(!ok && err.contains("--model transformer"), "{err}");
    // refused before any step runs: the output has no step lines
    for (extra, want) in [
        (&["--temperature", "0"][..], "--temperature"),
        (&["--prompt", "Juliet"][..], "--prompt: character 'J'"),
        (&["--prompt", ""][..], "--prompt is empty"),
        (&["--epochs", "3"][..], "--steps"),
        (&["--plot", dir.to_str().unwrap()][..], "SVG"),
    ] {
        let (ok, out, err) = run(extra);
        assert!(!ok && err.contains(want), "{extra:?}: {err}");
        assert!(!out.contains("steps in"), "{extra:?} trained first: {out}");
    }
    let sub = dir.join("sub.svg");
    std::fs::create_dir_all(&sub).unwrap();
    let (ok, _, err) = run(&["--plot", sub.to_str().unwrap()]);
    assert!(!ok && err.contains("is a directory"), "{err}");
    // a validation split shorter than a window is refused up front
    let short = dir.join("short.txt");
    std::fs::write(&short, "abcdefghij".repeat(60)).unwrap();
    let (ok, _, err) = kiln(&[
        "train",
        "--model",
        "transformer",
        "--data",
        short.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("Validation split (60 of 600 characters)"),
        "{err}"
    );
    // the classifiers check --plot before training and refuse the LM options
    let (ok, out, err) = kiln(&["train", "--model", "mlp", "--plot", "/tmp/kiln-loss.png"]);
    assert!(
        !ok && err.contains("SVG") && !out.contains("epoch"),
        "{err}"
    );
    let (ok, _, err) = kiln(&["train", "--model", "mlp", "--sample", "10"]);
    assert!(!ok && err.contains("--sample"), "{err}");
}
