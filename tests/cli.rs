//! The `kiln` binary: dump and run built-in models, clear errors otherwise.

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
    let (ok, _, err) = kiln(&["dump", "resnet"]);
    assert!(!ok);
    assert!(
        err.contains("unknown model `resnet`") && err.contains("conv2d"),
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
    assert_eq!(list.lines().count(), 13, "{list}");
    assert!(list.contains("Conv2D/8x64x32x32/forward_backward"));
    assert!(list.contains("CNN/32x1x28x28/train_step"));
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
