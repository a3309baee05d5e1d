//! `i64` inputs and the ops that read them: `gather`, `one_hot`, `to_f32`,
//! `Embedding` and cross-entropy's `ignore_index`, checked against values
//! PyTorch 2.15 printed and against loops written here.

mod common;
use common::*;
use kiln::nn::{self, Layer, Reduction};
use kiln::optim::Sgd;
use kiln::{compile, CompileOptions, Feed, Graph, I64Tensor, OpBuilder, Tensor, Trainer, BATCH};

fn ids(shape: &[usize], data: &[i64]) -> I64Tensor {
    I64Tensor::from_vec(shape.to_vec(), data.to_vec()).unwrap()
}

#[test]
fn embedding_matches_pytorch_with_a_negative_padding_idx_and_repeated_ids() {
    // torch.nn.Embedding(5, 3, padding_idx=-2), weight = arange(15)/10,
    // ids [[1, 3, 1], [0, 4, 1]], loss = Σ y·arange(18)
    let mut g = Graph::new();
    let x = g.input_i64("ids", [2, 3]).unwrap();
    let y = nn::Embedding::new(5, 3)
        .padding_idx(-2)
        .name("emb")
        .build(&mut g, x)
        .unwrap();
    assert_eq!(
        g.param_value("emb.weight").unwrap().data()[9..12],
        [0.0; 3],
        "the padding row starts at zero"
    );
    let w: Vec<f32> = (0..15).map(|v| v as f32 / 10.0).collect();
    g.set_param_value("emb.weight", t(&[5, 3], &w)).unwrap();
    let r = g
        .constant(Tensor::from_vec([2, 3, 3], (0..18).map(|v| v as f32).collect()).unwrap())
        .unwrap();
    let yr = g.mul(y, r).unwrap();
    let loss = g.sum_all(yr).unwrap();
    let wid = g.trainable_params()[0].1;
    let grad = g.grad(loss, &[wid]).unwrap()[0];
    let mut exe = compile(&g, &[y, grad], &CompileOptions::default()).unwrap();
    let out = exe
        .run(&[("ids", &ids(&[2, 3], &[1, 3, 1, 0, 4, 1]))])
        .unwrap();
    assert_eq!(out[0].shape(), &[2, 3, 3]);
    let want_y = [
        0.3, 0.4, 0.5, 0.9, 1.0, 1.1, 0.3, 0.4, 0.5, 0.0, 0.1, 0.2, 1.2, 1.3, 1.4, 0.3, 0.4, 0.5,
    ];
    assert_close(out[0].data(), &want_y, 1e-6);
    // row 1 sums its three uses; row 3 pads: no gradient
    let want_g = [
        9.0, 10.0, 11.0, 21.0, 24.0, 27.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 12.0, 13.0, 14.0,
    ];
    assert_eq!(out[1].data(), &want_g);
}

#[test]
fn the_padding_row_keeps_its_value_through_training() {
    let mut g = Graph::with_seed(3);
    let x = g.input_i64("ids", [4]).unwrap();
    let e = nn::Embedding::new(3, 2)
        .padding_idx(0)
        .name("emb")
        .build(&mut g, x)
        .unwrap();
    let target = g.input("target", [4, 2]).unwrap();
    let loss = nn::mse_loss(&mut g, e, target, Reduction::Mean).unwrap();
    // rows 1 and 2 are read once: each step halves their distance to 3
    let mut tr = Trainer::new(g, loss, Sgd::new(2.0)).unwrap();
    let (i, tg) = (ids(&[4], &[0, 1, 2, 0]), Tensor::full([4, 2], 3.0));
    let first = tr.step(&[("ids", &i), ("target", &tg)]).unwrap();
    for _ in 0..20 {
        tr.step(&[("ids", &i), ("target", &tg)]).unwrap();
    }
    let last = tr.step(&[("ids", &i), ("target", &tg)]).unwrap();
    let w = tr.params().remove(0).1;
    assert_eq!(&w.data()[..2], &[0.0, 0.0], "row 0 pads");
    assert_close(&w.data()[2..], &[3.0; 4], 1e-3);
    // what remains is the padding rows' error: 4 values of (0 − 3)² over 8
    assert!(first > 4.6, "{first}");
    assert_close(&[last], &[4.5], 1e-4);
}

#[test]
fn cross_entropy_with_smoothing_and_an_ignored_label_matches_pytorch() {
    // F.cross_entropy(logits, [2, -100, 0], label_smoothing=0.2): loss and
    // logits.grad
    let mut g = Graph::new();
    let x = g.input("x", [3, 3]).unwrap();
    let y = g.input_i64("y", [3]).unwrap();
    let options = nn::CrossEntropy {
        label_smoothing: 0.2,
        ..nn::CrossEntropy::default()
    };
    let loss = nn::cross_entropy(&mut g, x, y, &options).unwrap();
    let grad = g.grad(loss, &[x]).unwrap()[0];
    let mut exe = compile(&g, &[loss, grad], &CompileOptions::default()).unwrap();
    let logits = t(&[3, 3], &[0.5, -1.0, 2.0, 0.0, 3.0, -2.0, 1.0, 1.0, 1.0]);
    let out = exe
        .run(&[("x", &logits), ("y", &ids(&[3], &[2, -100, 0]))])
        .unwrap();
    assert_close(out[0].data(), &[0.819_961_85], 1e-6);
    let want = [
        0.054_311_86,
        -0.013_777_05,
        -0.040_534_82,
        0.0,
        0.0,
        0.0,
        -0.266_666_68,
        0.133_333_33,
        0.133_333_33,
    ];
    assert_close(out[1].data(), &want, 1e-6);
}

#[test]
fn gather_picks_slices_along_any_axis() {
    // out[a, j.., b] = data[a, idx[j..], b], by loops written here
    let data = rand(&[2, 4, 3], 1);
    let idx = ids(&[2, 2], &[3, 0, 3, 1]);
    let mut g = Graph::new();
    let d = g.input("d", [2, 4, 3]).unwrap();
    let i = g.input_i64("i", [2, 2]).unwrap();
    let y = g.gather(d, i, -2).unwrap();
    assert_eq!(g.shape(y).unwrap(), &[2, 2, 2, 3]);
    let out = eval(&g, y, &[("d", &data), ("i", &idx)]);
    let mut want = Vec::new();
    for a in 0..2 {
        for &k in idx.data() {
            for b in 0..3 {
                want.push(data.data()[(a * 4 + k as usize) * 3 + b]);
            }
        }
    }
    assert_eq!(out.data(), &want[..]);
}

#[test]
fn indices_are_checked_through_movement_ops_and_on_every_run() {
    let mut g = Graph::new();
    let w = g.input("w", [3, 2]).unwrap();
    let i = g.input_i64("ids", [2, 2]).unwrap();
    let flat = g.reshape(i, &[4]).unwrap();
    let y = g.gather(w, flat, 0).unwrap();
    let mut exe = compile(&g, &[y], &CompileOptions::default()).unwrap();
    let wv = rand(&[3, 2], 2);
    exe.run(&[("w", &wv), ("ids", &ids(&[2, 2], &[0, 1, 2, 2]))])
        .unwrap();
    let e = exe
        .run(&[("w", &wv), ("ids", &ids(&[2, 2], &[0, 1, 2, 3]))])
        .unwrap_err()
        .to_string();
    for part in ["`ids`", "element [1, 1]", "is 3", "`gather`", "0..3"] {
        assert!(e.contains(part), "{e}");
    }
    // an i64 value read by no index op converts as torch's .float() does
    let mut g = Graph::new();
    let i = g.input_i64("big", [2]).unwrap();
    let f = g.to_f32(i).unwrap();
    let out = eval(&g, f, &[("big", &ids(&[2], &[(1 << 24) + 1, -7]))]);
    assert_eq!(out.data(), &[16_777_216.0, -7.0]);
}

/// An embedding classifier: ids `[B, 3]` → mean of their embeddings →
/// linear → cross-entropy, trained three SGD steps; the losses and the table.
fn embedding_run(options: CompileOptions) -> (Vec<f32>, Tensor) {
    let mut g = Graph::with_seed(11);
    let x = g.input_i64("ids", [4, 3]).unwrap();
    let y = g.input_i64("labels", [4]).unwrap();
    let e = nn::Embedding::new(6, 4)
        .padding_idx(5)
        .name("emb")
        .build(&mut g, x)
        .unwrap();
    let m = g.mean(e, &[1], false).unwrap();
    let logits = nn::Linear::new(4, 3).name("fc").build(&mut g, m).unwrap();
    let loss = nn::softmax_cross_entropy(&mut g, logits, y, Reduction::Mean).unwrap();
    let params: Vec<kiln::NodeId> = g.trainable_params().iter().map(|p| p.1).collect();
    let grads = g.grad(loss, &params).unwrap();
    let mut updates = Vec::new();
    for (&p, &gr) in params.iter().zip(&grads) {
        let step = g.mul_scalar(gr, 0.5).unwrap();
        updates.push((p, g.sub(p, step).unwrap()));
    }
    let program = kiln::Program {
        graph: g,
        outputs: vec![loss],
        updates,
    };
    let mut exe = kiln::compile_program(program, &options).unwrap();
    let (i, l) = (
        ids(&[4, 3], &[0, 1, 5, 2, 2, 2, 4, 5, 5, 3, 1, 0]),
        ids(&[4], &[0, 1, -100, 2]),
    );
    let feeds: [(&str, &dyn Feed); 2] = [("ids", &i), ("labels", &l)];
    let losses = (0..3)
        .map(|_| exe.run(&feeds).unwrap()[0].data()[0])
        .collect();
    (losses, exe.param("emb.weight").unwrap())
}

#[test]
fn embedding_training_compiled_equals_unrewritten_and_any_thread_count() {
    // the rewritten matmuls may sum in another order: equal within 1e-6
    let (want, table) = embedding_run(CompileOptions::unrewritten());
    assert!(want[2] < want[0], "{want:?}");
    let on = |threads| CompileOptions {
        threads: Some(threads),
        ..CompileOptions::default()
    };
    let (got, t1) = embedding_run(on(1));
    assert_close(&got, &want, 1e-6);
    assert_close(t1.data(), table.data(), 1e-6);
    // threads change nothing, bit for bit
    let (got2, t2) = embedding_run(on(2));
    assert_eq!(got2, got);
    assert_eq!(t2.data(), t1.data());
    assert_eq!(&table.data()[20..], &[0.0; 4], "the padding row stays zero");
}

#[test]
fn i64_inputs_take_a_symbolic_batch() {
    let mut g = Graph::with_seed(2);
    let x = g.input_i64("ids", [BATCH, 2]).unwrap();
    let e = nn::Embedding::new(4, 3).build(&mut g, x).unwrap();
    let mut exe = compile(&g, &[e], &CompileOptions::default()).unwrap();
    let two = exe.run(&[("ids", &ids(&[1, 2], &[3, 0]))]).unwrap();
    let five = exe
        .run(&[("ids", &ids(&[5, 2], &[1, 1, 2, 2, 3, 0, 0, 0, 1, 2]))])
        .unwrap();
    assert_eq!(five[0].shape(), &[5, 2, 3]);
    assert_eq!(
        &five[0].data()[12..18],
        two[0].data(),
        "same rows, same values"
    );
    let e = exe
        .run(&[("ids", &ids(&[3, 2], &[1, 1, 2, 4, 3, 0]))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("element [1, 1]") && e.contains("is 4"), "{e}");
}

#[test]
fn an_ignore_index_inside_the_classes_is_ignored() {
    // F.cross_entropy([[1, 0], [0, 0]], [0, 1], ignore_index=0) = ln 2:
    // sample 0 is left out of the loss and the mean
    let mut g = Graph::new();
    let x = g.input("x", [2, 2]).unwrap();
    let y = g.input_i64("y", [2]).unwrap();
    let options = nn::CrossEntropy {
        ignore_index: Some(0),
        ..nn::CrossEntropy::default()
    };
    let loss = nn::cross_entropy(&mut g, x, y, &options).unwrap();
    let dx = g.grad(loss, &[x]).unwrap()[0];
    let mut exe = compile(&g, &[loss, dx], &CompileOptions::default()).unwrap();
    let out = exe
        .run(&[
            ("x", &t(&[2, 2], &[1., 0., 0., 0.])),
            ("y", &ids(&[2], &[0, 1])),
        ])
        .unwrap();
    assert_close(out[0].data(), &[std::f32::consts::LN_2], 1e-6);
    assert_close(out[1].data(), &[0.0, 0.0, 0.5, -0.5], 1e-6);
    // one_hot: an all-zero row for the ignored label, in range or not
    let mut g = Graph::new();
    let y = g.input_i64("y", [4]).unwrap();
    let h = g.one_hot(y, 3, Some(1)).unwrap();
    let out = eval(&g, h, &[("y", &ids(&[4], &[0, 1, 2, 1]))]);
    assert_eq!(
        out.data(),
        &[1., 0., 0., 0., 0., 0., 0., 0., 1., 0., 0., 0.]
    );
}

#[test]
fn losses_and_masks_name_themselves_when_given_indices() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let y = g.input_i64("y", [2, 3]).unwrap();
    let e = nn::binary_cross_entropy_with_logits(&mut g, x, y, Reduction::Mean)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`binary_cross_entropy_with_logits`") && e.contains("target is i64"),
        "{e}"
    );
    let q = g.input("q", [1, 2, 3]).unwrap();
    let m = g.input_i64("m", [2, 2]).unwrap();
    let options = nn::Sdpa {
        attn_mask: Some(nn::Mask::Allow(m)),
        ..nn::Sdpa::default()
    };
    let e = nn::scaled_dot_product_attention(&mut g, q, q, q, &options)
        .unwrap_err()
        .to_string();
    assert!(e.contains("attention mask") && e.contains("to_f32"), "{e}");
}
