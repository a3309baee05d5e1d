//! Training on bad or unusual input: optimisers follow PyTorch's documented
//! updates for every option, and bad settings, labels, data files and weight
//! files are `Err`s naming what was wrong — never a panic, an abort or a
//! silently wrong number.

mod common;
use common::*;
use kiln::optim::{Adam, Optimizer, Sgd};
use kiln::OpBuilder;
use kiln::{Graph, Init, Trainer};

fn msg<T>(r: kiln::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn has_all(m: &str, parts: &[&str]) {
    for p in parts {
        assert!(m.contains(p), "message {m:?} should mention {p:?}");
    }
}

/// A trainer for `loss = Σ (w − target)² / 2` over one parameter `w`, with
/// `target` fed as input `t`: the gradient is `w − target`.
fn quadratic(w0: &[f32], opt: impl Optimizer) -> kiln::Result<Trainer> {
    let mut g = Graph::new();
    let n = w0.len();
    let w = g.param("w", [n], Init::FromTensor(t(&[n], w0)))?;
    let target = g.input("t", [n])?;
    let d = g.sub(w, target)?;
    let sq = g.mul(d, d)?;
    let s = g.sum_all(sq)?;
    let loss = g.mul_scalar(s, 0.5)?;
    Trainer::new(g, loss, opt)
}

fn w_of(tr: &Trainer) -> Vec<f32> {
    tr.params()[0].1.data().to_vec()
}

/// `torch.optim.SGD`'s documented update, one parameter element, in f64.
#[derive(Clone, Copy)]
struct TorchSgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
}

impl TorchSgd {
    /// Runs `steps` steps from `w` on the gradient `w − target`; returns w after each.
    fn run(self, mut w: f64, target: f64, steps: usize) -> Vec<f64> {
        let mut buf: Option<f64> = None;
        let mut out = vec![];
        for _ in 0..steps {
            let mut g = w - target;
            if self.weight_decay != 0.0 {
                g += self.weight_decay * w;
            }
            if self.momentum != 0.0 {
                let b = match buf {
                    None => g,
                    Some(b) => self.momentum * b + (1.0 - self.dampening) * g,
                };
                buf = Some(b);
                g = if self.nesterov {
                    g + self.momentum * b
                } else {
                    b
                };
            }
            w -= self.lr * g;
            out.push(w);
        }
        out
    }

    fn kiln(self) -> Sgd {
        Sgd::new(self.lr as f32)
            .momentum(self.momentum as f32)
            .dampening(self.dampening as f32)
            .weight_decay(self.weight_decay as f32)
            .nesterov(self.nesterov)
    }
}

fn three_steps(tr: &mut Trainer, target: f32) -> Vec<f32> {
    let tt = t(&[1], &[target]);
    (0..3)
        .map(|_| {
            tr.step(&[("t", &tt)]).unwrap();
            w_of(tr)[0]
        })
        .collect()
}

#[test]
fn sgd_dampening_leaves_the_first_step_undamped() {
    // w = [1], loss = sum(w): the gradient is 1 at every step.
    let mut g = Graph::new();
    let w = g.param("w", [1], Init::Constant(1.0)).unwrap();
    let loss = g.sum_all(w).unwrap();
    let mut tr = Trainer::new(g, loss, Sgd::new(0.1).momentum(0.5).dampening(0.3)).unwrap();
    // buf₁ = g = 1              → w = 1 − 0.1·1 = 0.9
    // buf₂ = 0.5·1 + 0.7·1 = 1.2 → w = 0.9 − 0.12 = 0.78
    // buf₃ = 0.5·1.2 + 0.7 = 1.3 → w = 0.78 − 0.13 = 0.65
    let mut got = vec![];
    for _ in 0..3 {
        tr.step(&[]).unwrap();
        got.push(w_of(&tr)[0]);
    }
    assert_close(&got, &[0.9, 0.78, 0.65], 1e-6);
}

#[test]
fn sgd_matches_pytorch_for_every_option_over_three_steps() {
    let base = TorchSgd {
        lr: 0.1,
        momentum: 0.0,
        dampening: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let cases = [
        base,
        TorchSgd {
            momentum: 0.9,
            ..base
        },
        TorchSgd {
            momentum: 0.5,
            dampening: 0.3,
            ..base
        },
        TorchSgd {
            momentum: 0.5,
            dampening: 1.0,
            ..base
        },
        TorchSgd {
            momentum: 0.5,
            nesterov: true,
            ..base
        },
        TorchSgd {
            weight_decay: 0.2,
            ..base
        },
        TorchSgd {
            momentum: 0.7,
            dampening: 0.4,
            weight_decay: 0.2,
            ..base
        },
        TorchSgd {
            momentum: 0.7,
            weight_decay: 0.2,
            nesterov: true,
            ..base
        },
        // PyTorch accepts momentum ≥ 1 and lr = 0
        TorchSgd {
            momentum: 1.5,
            ..base
        },
        TorchSgd { lr: 0.0, ..base },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let (w0, target) = (1.5f64, 0.25f64);
        let want: Vec<f32> = c.run(w0, target, 3).iter().map(|&v| v as f32).collect();
        let mut tr = quadratic(&[w0 as f32], c.kiln()).unwrap();
        let got = three_steps(&mut tr, target as f32);
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "case {i}, step {}: kiln {a}, PyTorch {b}",
                k + 1
            );
        }
    }
}

/// `torch.optim.Adam`'s documented update (L2 weight decay, bias
/// correction, no amsgrad), one parameter element, in f64.
fn torch_adam(
    (lr, b1, b2, eps, wd): (f64, f64, f64, f64, f64),
    mut w: f64,
    target: f64,
    steps: usize,
) -> Vec<f64> {
    let (mut m, mut v) = (0.0, 0.0);
    let mut out = vec![];
    for t in 1..=steps as i32 {
        let mut g = w - target;
        if wd != 0.0 {
            g += wd * w;
        }
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let step_size = lr / bc1;
        let denom = v.sqrt() / bc2.sqrt() + eps;
        w -= step_size * m / denom;
        out.push(w);
    }
    out
}

#[test]
fn adam_matches_pytorch_for_every_option_over_three_steps() {
    let cases = [
        (0.1, 0.9, 0.999, 1e-8, 0.0),
        (0.1, 0.8, 0.99, 1e-8, 0.0),
        (0.05, 0.9, 0.999, 0.5, 0.0),
        (0.1, 0.9, 0.999, 1e-8, 0.3),
        (0.2, 0.0, 0.5, 0.1, 0.1),
        (0.0, 0.9, 0.999, 1e-8, 0.0),
    ];
    for (i, c @ (lr, b1, b2, eps, wd)) in cases.into_iter().enumerate() {
        let (w0, target) = (1.5f64, -0.5f64);
        let want = torch_adam(c, w0, target, 3);
        let opt = Adam::new(lr as f32)
            .betas(b1 as f32, b2 as f32)
            .eps(eps as f32)
            .weight_decay(wd as f32);
        let mut tr = quadratic(&[w0 as f32], opt).unwrap();
        let got = three_steps(&mut tr, target as f32);
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            let b = *b as f32;
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "case {i}, step {}: kiln {a}, PyTorch {b}",
                k + 1
            );
        }
    }
}

#[test]
fn optimiser_options_outside_pytorchs_ranges_are_errors_naming_them() {
    let nan = f32::NAN;
    let sgd_cases: Vec<(Sgd, &[&str])> = vec![
        (Sgd::new(nan), &["learning rate", "NaN"]),
        (Sgd::new(-1.0), &["learning rate", "-1"]),
        (Sgd::new(f32::INFINITY), &["learning rate", "inf"]),
        (Sgd::new(0.1).momentum(nan), &["momentum", "NaN"]),
        (Sgd::new(0.1).momentum(-0.5), &["momentum", "-0.5"]),
        (
            Sgd::new(0.1).momentum(0.9).dampening(nan),
            &["dampening", "NaN"],
        ),
        (Sgd::new(0.1).weight_decay(nan), &["weight_decay", "NaN"]),
        (Sgd::new(0.1).weight_decay(-0.1), &["weight_decay", "-0.1"]),
        (Sgd::new(0.1).nesterov(true), &["nesterov", "momentum 0"]),
        (
            Sgd::new(0.1).momentum(0.9).dampening(0.1).nesterov(true),
            &["nesterov", "dampening 0.1"],
        ),
    ];
    for (opt, parts) in sgd_cases {
        has_all(&msg(quadratic(&[1.0], opt)), parts);
    }
    let adam_cases: Vec<(Adam, &[&str])> = vec![
        (Adam::new(nan), &["learning rate", "NaN"]),
        (Adam::new(-0.1), &["learning rate", "-0.1"]),
        (Adam::new(0.1).eps(nan), &["eps", "NaN"]),
        (Adam::new(0.1).eps(-1e-8), &["eps", "-0.00000001"]),
        (Adam::new(0.1).betas(nan, 0.9), &["beta1", "NaN"]),
        (Adam::new(0.1).betas(0.9, 1.0), &["beta2", "1"]),
        (Adam::new(0.1).betas(-0.1, 0.9), &["beta1", "-0.1"]),
        (Adam::new(0.1).weight_decay(nan), &["weight_decay", "NaN"]),
        (Adam::new(0.1).weight_decay(-1.0), &["weight_decay", "-1"]),
    ];
    for (opt, parts) in adam_cases {
        has_all(&msg(quadratic(&[1.0], opt)), parts);
    }
    // PyTorch accepts eps = 0
    let mut tr = quadratic(&[1.0], Adam::new(0.1).eps(0.0)).unwrap();
    tr.step(&[("t", &t(&[1], &[0.0]))]).unwrap();
    // m̂ = g = 1, v̂ = g² = 1: w = 1 − 0.1·1/1
    assert_close(&w_of(&tr), &[0.9], 1e-6);
}

#[test]
fn set_learning_rate_refuses_what_the_constructor_refuses() {
    let mut tr = quadratic(&[1.0], Sgd::new(0.1)).unwrap();
    has_all(
        &msg(tr.set_learning_rate(f32::NAN)),
        &["learning rate", "NaN"],
    );
    has_all(&msg(tr.set_learning_rate(-1.0)), &["learning rate", "-1"]);
    has_all(
        &msg(tr.set_learning_rate(f32::INFINITY)),
        &["learning rate", "inf"],
    );
    // nothing changed: the step still uses lr 0.1 (w = 1 − 0.1·1)
    tr.step(&[("t", &t(&[1], &[0.0]))]).unwrap();
    assert_close(&w_of(&tr), &[0.9], 1e-6);
    // lr = 0 is allowed and freezes the parameter
    tr.set_learning_rate(0.0).unwrap();
    tr.step(&[("t", &t(&[1], &[0.0]))]).unwrap();
    assert_close(&w_of(&tr), &[0.9], 1e-6);
}

/// A linear classifier `x [2, 2] → logits [2, 3]` with a softmax
/// cross-entropy against the `i64` input `labels [2]`.
fn tiny_classifier() -> Trainer {
    use kiln::nn::{self, Layer, Reduction};
    let mut g = Graph::with_seed(5);
    let x = g.input("x", [2, 2]).unwrap();
    let y = g.input_i64("labels", [2]).unwrap();
    let logits = nn::Linear::new(2, 3).build(&mut g, x).unwrap();
    let loss = nn::softmax_cross_entropy(&mut g, logits, y, Reduction::Mean).unwrap();
    Trainer::with_outputs(g, loss, &[logits, loss], Sgd::new(0.1)).unwrap()
}

#[test]
fn bad_class_labels_are_errors_naming_position_and_value() {
    use kiln::I64Tensor;
    let mut tr = tiny_classifier();
    let x = t(&[2, 2], &[0.5, -1.0, 2.0, 0.25]);
    let before = tr.params();
    for (labels, parts) in [
        ([0, 3], ["element [1]", "is 3", "0..3"]),
        ([1, -1], ["element [1]", "is -1", "0..3"]),
        (
            [i64::MIN, 1],
            ["element [0]", "is -9223372036854775808", "0..3"],
        ),
        ([-99, 1], ["element [0]", "is -99", "ignore_index -100"]),
    ] {
        let y = I64Tensor::from(labels.to_vec());
        let e = msg(tr.step(&[("x", &x), ("labels", &y)]));
        has_all(&e, &["`labels`", "one_hot"]);
        has_all(&e, &parts);
        let e = msg(tr.evaluate(&[("x", &x), ("labels", &y)]));
        has_all(&e, &parts);
    }
    // f32 labels for an i64 input: a type error naming the feed
    let e = msg(tr.step(&[("x", &x), ("labels", &t(&[2], &[0.0, 1.0]))]));
    has_all(&e, &["`labels`", "is f32", "declared i64", "I64Tensor"]);
    let after = tr.params();
    for ((_, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a.data(), b.data(), "a refused step changes nothing");
    }
    // valid labels train, the ignore_index among them
    tr.step(&[("x", &x), ("labels", &I64Tensor::from(vec![2, -100]))])
        .unwrap();
}

#[test]
fn cross_entropy_ignores_the_ignore_index_and_leaves_it_out_of_the_mean() {
    use kiln::nn::{self, CrossEntropy, Reduction};
    use kiln::I64Tensor;
    // −log_softmax([1, 2, 3])[1] = lse − 2, computed by hand
    let z = [1.0f64, 2.0, 3.0];
    let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
    let logits = t(&[3, 3], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    for (reduction, want) in [
        (
            Reduction::None,
            vec![(lse - 2.0) as f32, 0.0, (lse - 3.0) as f32],
        ),
        // mean over the two counted samples, not three
        (Reduction::Mean, vec![((2.0 * lse - 5.0) / 2.0) as f32]),
        (Reduction::Sum, vec![(2.0 * lse - 5.0) as f32]),
    ] {
        let mut g = Graph::new();
        let x = g.input("logits", [3, 3]).unwrap();
        let y = g.input_i64("y", [3]).unwrap();
        let options = CrossEntropy {
            reduction,
            ignore_index: Some(-5),
            ..CrossEntropy::default()
        };
        let l = nn::cross_entropy(&mut g, x, y, &options).unwrap();
        let labels = I64Tensor::from(vec![1, -5, 2]);
        let out = eval(&g, l, &[("logits", &logits), ("y", &labels)]);
        assert_close(out.data(), &want, 1e-6);
    }
    // every label ignored: a mean of no samples is NaN, as in PyTorch
    let mut g = Graph::new();
    let x = g.input("logits", [3, 3]).unwrap();
    let y = g.input_i64("y", [3]).unwrap();
    let l = nn::softmax_cross_entropy(&mut g, x, y, Reduction::Mean).unwrap();
    let out = eval(
        &g,
        l,
        &[("logits", &logits), ("y", &I64Tensor::from(vec![-100; 3]))],
    );
    assert!(out.data()[0].is_nan());
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-trust-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An IDX header of unsigned bytes with `dims`.
fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_files_are_read_no_further_than_their_header_says() {
    use kiln::data::read_idx;
    let dir = scratch("idx");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // a good file, plain and gzip
    let mut good = idx_header(&[2, 3]);
    good.extend([1, 2, 3, 4, 5, 6]);
    for p in [write("good", &good), write("good.gz", &gzip(&good))] {
        assert_eq!(read_idx(&p).unwrap(), (vec![2, 3], vec![1, 2, 3, 4, 5, 6]));
    }
    // dimensions whose product overflows, no data: an Err before allocating
    let huge = idx_header(&[65536; 4]);
    for p in [write("huge", &huge), write("huge.gz", &gzip(&huge))] {
        has_all(
            &msg(read_idx(&p)),
            &["huge", "[65536, 65536, 65536, 65536]", "overflows"],
        );
    }
    // a header claiming 1 GB with no data
    let gb = idx_header(&[1000, 1000, 1000]);
    for p in [write("gb", &gb), write("gb.gz", &gzip(&gb))] {
        has_all(
            &msg(read_idx(&p)),
            &[
                "gb",
                "[1000, 1000, 1000]",
                "need 1000000000 data bytes",
                "has 0",
            ],
        );
    }
    // a gzip bomb: 6 data bytes declared, 16 MB inflated
    let mut bomb = idx_header(&[2, 3]);
    bomb.resize(bomb.len() + (16 << 20), 0);
    let bomb_gz = gzip(&bomb);
    assert!(bomb_gz.len() < 100_000);
    has_all(
        &msg(read_idx(&write("bomb.gz", &bomb_gz))),
        &["bomb.gz", "need 6 data bytes", "has more"],
    );
    // short data, trailing data, a truncated header, bad magic, corrupt gzip
    has_all(
        &msg(read_idx(&write("short", &good[..good.len() - 1]))),
        &["short", "need 6 data bytes", "has 5"],
    );
    let mut long = good.clone();
    long.push(7);
    has_all(&msg(read_idx(&write("long", &long))), &["need 6", "has 7"]);
    has_all(
        &msg(read_idx(&write("cut", &good[..6]))),
        &["cut", "truncated IDX header"],
    );
    has_all(
        &msg(read_idx(&write("magic", b"PK\x03\x04 a zip"))),
        &["magic", "bad magic"],
    );
    let gz = gzip(&good);
    has_all(
        &msg(read_idx(&write("broken.gz", &gz[..gz.len() / 2]))),
        &["broken.gz"],
    );
    has_all(
        &msg(read_idx(&dir.join("absent"))),
        &["absent", "cannot read"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fill_batch_refuses_indices_and_buffers_that_do_not_fit() {
    use kiln::data::Dataset;
    use kiln::Tensor;
    let dir = scratch("fill");
    let mut images = idx_header(&[3, 2, 2]);
    images.extend((0..12).map(|v| v as u8 * 20));
    let mut labels = idx_header(&[3]);
    labels.extend([4, 0, 9]);
    let (ip, lp) = (dir.join("img"), dir.join("lab"));
    std::fs::write(&ip, &images).unwrap();
    std::fs::write(&lp, &labels).unwrap();
    let data = Dataset::from_idx(&ip, &lp).unwrap();
    let (mut x, mut y) = (
        Tensor::zeros([2, 1, 2, 2]),
        kiln::I64Tensor::from(vec![0, 0]),
    );
    has_all(
        &msg(data.fill_batch(&[0, 3], &mut x, &mut y)),
        &["index 3", "3 samples"],
    );
    has_all(
        &msg(data.fill_batch(&[usize::MAX], &mut x, &mut y)),
        &[&usize::MAX.to_string(), "3 samples"],
    );
    has_all(
        &msg(data.fill_batch(&[0, 1, 2], &mut x, &mut y)),
        &["3 indices", "2 rows"],
    );
    has_all(
        &msg(data.fill_batch(&[0], &mut Tensor::zeros([2, 4]), &mut y)),
        &["[2, 4]", "[B, 1, 2, 2]"],
    );
    assert_eq!(y.data(), &[0, 0], "a refused fill changes nothing");
    data.fill_batch(&[2], &mut x, &mut y).unwrap();
    // sample 2's pixels are 160, 180, 200, 220 (/255); the padding row is zero
    let want: Vec<f32> = [160.0, 180.0, 200.0, 220.0, 0.0, 0.0, 0.0, 0.0]
        .iter()
        .map(|v| v / 255.0)
        .collect();
    assert_close(x.data(), &want, 1e-7);
    assert_eq!(y.data(), &[9, 0]);

    // the epoch and accuracy helpers refuse what would give NaN, 0 or a panic
    use kiln::nn::{self};
    use kiln::tooling::classify::{accuracy, classifier_trainer, train_epoch};
    let net = nn::Sequential::new()
        .push(nn::Flatten)
        .push(nn::Linear::new(4, 10));
    has_all(
        &msg(classifier_trainer(&net, 0, [1, 2, 2], 0, Sgd::new(0.1))),
        &["batch size must be at least 1"],
    );
    has_all(
        &msg(classifier_trainer(
            &net,
            usize::MAX / 2,
            [1, 2, 2],
            0,
            Sgd::new(0.1),
        )),
        &["batch size", "larger than memory"],
    );
    let mut tr = classifier_trainer(&net, 4, [1, 2, 2], 0, Sgd::new(0.1)).unwrap();
    has_all(
        &msg(train_epoch(&mut tr, &data, 4, 0, |_, _| {})),
        &["batch size 4", "3 training samples"],
    );
    has_all(
        &msg(train_epoch(&mut tr, &data, 0, 0, |_, _| {})),
        &["at least 1"],
    );
    has_all(&msg(accuracy(&mut tr, &data.take(0), 4)), &["no samples"]);
    // three samples in a batch of four: padded, every sample counted once
    let acc = accuracy(&mut tr, &data, 4).unwrap();
    assert!([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0].contains(&acc), "{acc}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weights_save_refuses_duplicates_keeps_permissions_and_leaves_no_temp_file() {
    use kiln::weights::{check_writable, load, save};
    use kiln::Tensor;
    let dir = scratch("save");
    let path = dir.join("w.safetensors");
    let a = (
        String::from("a"),
        Tensor::from_vec([2], vec![1.0, 2.0]).unwrap(),
    );
    let b = (String::from("b"), Tensor::scalar(3.0));
    has_all(
        &msg(save(&path, &[a.clone(), b.clone(), a.clone()])),
        &["w.safetensors", "two tensors are named `a`"],
    );
    assert!(!path.exists(), "nothing written");
    save(&path, &[b.clone(), a.clone()]).unwrap();
    let back = load(&path).unwrap();
    assert_eq!(back, vec![a.clone(), b.clone()], "sorted by name");
    // overwriting keeps the file's permissions
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        save(&path, std::slice::from_ref(&a)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), vec![a.clone()]);
    }
    // a failed save (the target is a directory) leaves no temporary file
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    has_all(&msg(save(&sub, std::slice::from_ref(&a))), &["sub"]);
    has_all(&msg(check_writable(&sub)), &["sub", "is a directory"]);
    has_all(
        &msg(check_writable(dir.join("missing/w.safetensors"))),
        &["missing/w.safetensors", "cannot write"],
    );
    check_writable(&path).unwrap();
    // a save killed half way left its temporary file (its process is gone:
    // pid 2^32 − 1 is above any pid_max); the next save removes it, and
    // leaves a running process's (init's, pid 1) temporary file alone
    #[cfg(target_os = "linux")]
    {
        let stray = dir.join(".w.safetensors.kiln-save-4294967295.tmp");
        let running = dir.join(format!(".w.safetensors.kiln-save-{}.tmp", 1));
        std::fs::write(&stray, b"half a file").unwrap();
        std::fs::write(&running, b"pid 1 is running").unwrap();
        save(&path, std::slice::from_ref(&a)).unwrap();
        assert!(!stray.exists(), "a killed save's temporary file is removed");
        assert!(running.exists(), "a running process's is kept");
        std::fs::remove_file(&running).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["sub", "w.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_weight_files_are_errors_naming_the_file() {
    use kiln::weights::{load, save};
    use kiln::Tensor;
    let dir = scratch("load");
    let path = dir.join("good.safetensors");
    save(
        &path,
        &[
            ("a".into(), Tensor::from_vec([2], vec![1.0, 2.0]).unwrap()),
            ("b".into(), Tensor::scalar(3.0)),
        ],
    )
    .unwrap();
    let good = std::fs::read(&path).unwrap();
    let bad = dir.join("bad.safetensors");
    // every truncation
    for len in 0..good.len() {
        std::fs::write(&bad, &good[..len]).unwrap();
        has_all(&msg(load(&bad)), &["bad.safetensors"]);
    }
    // every single-byte change of the header: an Err or a valid load, never a panic
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    for i in 0..header_end {
        for v in [0u8, b'9', b'"', 0xff] {
            let mut b = good.clone();
            b[i] = v;
            std::fs::write(&bad, &b).unwrap();
            if let Err(e) = load(&bad) {
                has_all(&e.to_string(), &["bad.safetensors"]);
            }
        }
    }
    // hand-written headers: a huge shape, another dtype, a header length past the end
    let craft = |header: &str, data: usize| {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        b.resize(b.len() + data, 0);
        b
    };
    for (bytes, part) in [
        (
            craft(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#,
                4,
            ),
            "bad.safetensors",
        ),
        (
            craft(
                r#"{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
                4,
            ),
            "F16",
        ),
        (u64::MAX.to_le_bytes().to_vec(), "bad.safetensors"),
    ] {
        std::fs::write(&bad, &bytes).unwrap();
        has_all(&msg(load(&bad)), &["bad.safetensors", part]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
