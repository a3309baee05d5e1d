//! `Lstm` and `Gru` with layers, directions and initial states against
//! values PyTorch 2.15 printed (`tests/data/rnn_ref.py`): outputs, final
//! states and gradients; compiled equal to unrewritten; bad settings.

mod common;
use common::*;
use kiln::nn::{self, Layer, RnnOutput};
use kiln::{compile, CompileOptions, Graph, NodeId, OpBuilder, Tensor};

const REF: &str = include_str!("data/rnn_ref.txt");

/// A reference case: the layer's output, the gradients' subjects and feeds.
struct Case {
    name: &'static str,
    shape: Vec<usize>,
    states: Option<[usize; 3]>,
    param: &'static str,
}

/// Builds case `c` with `build(g, x, h0, c0)`, adds the reference loss and
/// returns `[out, h_n, (c_n), gx, gp, (gh0)]` compiled with `options`.
fn run(
    c: &Case,
    options: &CompileOptions,
    build: impl Fn(&mut Graph, NodeId, Option<NodeId>, Option<NodeId>) -> RnnOutput,
) -> Vec<Tensor> {
    let mut g = Graph::new();
    let x = g.input("x", c.shape.clone()).unwrap();
    let (h0, c0) = match c.states {
        Some(s) => (
            Some(g.input("h0", s.to_vec()).unwrap()),
            Some(g.input("c0", s.to_vec()).unwrap()),
        ),
        None => (None, None),
    };
    let r = build(&mut g, x, h0, c0);
    fill_params(&mut g);
    let mut terms = Vec::new();
    for (node, salt) in [(Some(r.output), 2.0), (Some(r.h_n), 3.0), (r.c_n, 6.0)] {
        if let Some(node) = node {
            let w = g.constant(fill(g.shape(node).unwrap(), salt)).unwrap();
            let p = g.mul(node, w).unwrap();
            terms.push(g.sum_all(p).unwrap());
        }
    }
    let mut loss = terms[0];
    for &t in &terms[1..] {
        loss = g.add(loss, t).unwrap();
    }
    let p = g
        .trainable_params()
        .into_iter()
        .find(|p| p.0 == format!("rnn.{}", c.param))
        .unwrap()
        .1;
    let mut wrt = vec![x, p];
    wrt.extend(h0);
    let mut outs = vec![r.output, r.h_n];
    outs.extend(r.c_n);
    outs.extend(g.grad(loss, &wrt).unwrap());
    let mut exe = compile(&g, &outs, options).unwrap();
    let (xv, hv, cv) = (
        fill(&c.shape, 1.0),
        c.states.map(|s| fill(&s, 4.0)),
        c.states.map(|s| fill(&s, 5.0)),
    );
    let mut feeds: Vec<(&str, &dyn kiln::Feed)> = vec![("x", &xv)];
    if let (Some(h), Some(cc)) = (&hv, &cv) {
        feeds.push(("h0", h));
        feeds.push(("c0", cc));
    }
    exe.run(&feeds).unwrap()
}

fn lstm_case() -> (Case, nn::Lstm) {
    let case = Case {
        name: "lstm",
        shape: vec![2, 5, 3],
        states: Some([4, 2, 4]),
        param: "weight_hh_l1_reverse",
    };
    let layer = nn::Lstm::new(3, 4)
        .num_layers(2)
        .bidirectional(true)
        .name("rnn");
    (case, layer)
}

fn gru_cases() -> Vec<(Case, nn::Gru)> {
    vec![
        (
            Case {
                name: "gru",
                shape: vec![5, 2, 3],
                states: None,
                param: "bias_hh_l1",
            },
            nn::Gru::new(3, 4)
                .num_layers(2)
                .batch_first(false)
                .name("rnn"),
        ),
        (
            Case {
                name: "gru_bi",
                shape: vec![2, 4, 3],
                states: Some([2, 2, 4]),
                param: "weight_hh_l0_reverse",
            },
            nn::Gru::new(3, 4)
                .bidirectional(true)
                .bias(false)
                .name("rnn"),
        ),
    ]
}

fn check_against_reference(name: &str, got: &[Tensor], keys: &[&str]) {
    assert_eq!(got.len(), keys.len(), "{name}");
    for (t, key) in got.iter().zip(keys) {
        assert_close(t.data(), &reference_values(REF, name, key), 1e-5);
    }
}

#[test]
fn lstm_with_two_bidirectional_layers_and_initial_states_matches_pytorch() {
    let (case, layer) = lstm_case();
    let got = run(&case, &CompileOptions::default(), |g, x, h0, c0| {
        layer.forward(g, x, h0.zip(c0)).unwrap()
    });
    assert_eq!(got[0].shape(), &[2, 5, 8]);
    assert_eq!(got[1].shape(), &[4, 2, 4]);
    check_against_reference("lstm", &got, &["out", "h_n", "c_n", "gx", "gp", "gh0"]);
}

#[test]
fn grus_match_pytorch_time_first_stacked_and_bidirectional_without_bias() {
    for (case, layer) in gru_cases() {
        let got = run(&case, &CompileOptions::default(), |g, x, h0, _| {
            layer.forward(g, x, h0).unwrap()
        });
        let keys: &[&str] = match case.states {
            Some(_) => &["out", "h_n", "gx", "gp", "gh0"],
            None => &["out", "h_n", "gx", "gp"],
        };
        check_against_reference(case.name, &got, keys);
    }
}

/// Cases whose batch runs as several blocks of rows (one scan each).
fn block_cases() -> (Case, nn::Lstm, Case, nn::Gru) {
    let lstm = Case {
        name: "lstm_blocks",
        shape: vec![48, 3, 3],
        states: Some([4, 48, 4]),
        param: "weight_hh_l0",
    };
    let gru = Case {
        name: "gru_blocks",
        shape: vec![3, 32, 3],
        states: Some([1, 32, 4]),
        param: "weight_ih_l0",
    };
    (
        lstm,
        nn::Lstm::new(3, 4)
            .num_layers(2)
            .bidirectional(true)
            .name("rnn"),
        gru,
        nn::Gru::new(3, 4).batch_first(false).name("rnn"),
    )
}

#[test]
fn batches_run_as_blocks_of_rows_match_pytorch_and_unrewritten() {
    let (lc, lstm, gc, gru) = block_cases();
    let l = |g: &mut Graph, x, h0: Option<NodeId>, c0: Option<NodeId>| {
        lstm.forward(g, x, h0.zip(c0)).unwrap()
    };
    let got = run(&lc, &CompileOptions::default(), l);
    check_against_reference(lc.name, &got, &["out", "h_n", "c_n", "gx", "gp", "gh0"]);
    let want = run(&lc, &CompileOptions::unrewritten(), l);
    for (w, g) in want.iter().zip(&got) {
        assert_close(g.data(), w.data(), 1e-5);
    }
    let gr = |g: &mut Graph, x, h0, _| gru.forward(g, x, h0).unwrap();
    let got = run(&gc, &CompileOptions::default(), gr);
    check_against_reference(gc.name, &got, &["out", "h_n", "gx", "gp", "gh0"]);
    // 48 rows: three scans per layer and direction, forward
    let mut g = Graph::new();
    let x = g.input("x", [48, 3, 3]).unwrap();
    lstm.forward(&mut g, x, None).unwrap();
    let scans = (g.node_ids().into_iter())
        .filter(|&id| g.node(id).unwrap().op.name() == "scan")
        .count();
    assert_eq!(scans, 3 * 4);
}

#[test]
fn recurrent_gradients_take_a_symbolic_batch() {
    // forward, input and every parameter gradient of a symbolic-batch graph
    // equal a fixed-batch graph's, for the LSTM (its gradient scan pads a
    // flat carry by batch-sized parts) and the GRU (its `b_hh` gradients
    // are sums over the batch)
    let graph = |batch: usize, lstm: bool| {
        let mut g = Graph::with_seed(1);
        let x = g.input("x", [batch, 4, 3]).unwrap();
        let y = match lstm {
            true => nn::Lstm::new(3, 4)
                .num_layers(2)
                .name("rnn")
                .build(&mut g, x),
            false => nn::Gru::new(3, 4)
                .bidirectional(true)
                .name("rnn")
                .build(&mut g, x),
        }
        .unwrap();
        let p = g.mul(y, y).unwrap();
        let loss = g.sum_all(p).unwrap();
        let mut wrt = vec![x];
        wrt.extend(g.trainable_params().into_iter().map(|p| p.1));
        let mut outs = vec![y];
        outs.extend(g.grad(loss, &wrt).unwrap());
        compile(&g, &outs, &CompileOptions::default()).unwrap()
    };
    for lstm in [true, false] {
        let mut sym = graph(kiln::BATCH, lstm);
        for batch in [3, 1] {
            let xv = fill(&[batch, 4, 3], 0.5);
            let want = graph(batch, lstm).run(&[("x", &xv)]).unwrap();
            let got = sym.run(&[("x", &xv)]).unwrap();
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.shape(),
                    w.shape(),
                    "lstm {lstm}, batch {batch}, output {i}"
                );
                assert_eq!(g.data(), w.data(), "lstm {lstm}, batch {batch}, output {i}");
            }
        }
    }
}

#[test]
fn blocks_of_rows_are_at_most_eight_and_a_symbolic_batch_is_one() {
    let scans = |shape: &[usize], sub: Option<isize>| {
        let mut g = Graph::new();
        let mut x = g.input("x", shape.to_vec()).unwrap();
        if let Some(t) = sub {
            // each sample's `shape[1]` sub-sequences as rows: 16·B rows
            x = g.reshape(x, &[-1, t, 3]).unwrap();
        }
        nn::Gru::new(3, 2).build(&mut g, x).unwrap();
        (g.node_ids().into_iter())
            .filter(|&id| g.node(id).unwrap().op.name() == "scan")
            .count()
    };
    assert_eq!(scans(&[4096, 2, 3], None), 8);
    assert_eq!(scans(&[96, 2, 3], None), 6);
    assert_eq!(scans(&[101, 2, 3], None), 1); // a prime
    assert_eq!(scans(&[31, 2, 3], None), 1);
    assert_eq!(scans(&[kiln::BATCH, 2, 3], None), 1);
    assert_eq!(scans(&[kiln::BATCH, 16, 5, 3], Some(5)), 1);
    assert_eq!(scans(&[kiln::BATCH, 40, 5, 3], Some(5)), 1);
}

#[test]
fn a_row_of_a_blocked_batch_has_the_bits_of_that_row_run_alone() {
    // the second block of 16 rows of a batch of 32, and those 16 rows as a
    // batch of their own (one block)
    let x32 = fill(&[32, 5, 3], 1.0);
    let rows: Vec<f32> = x32.data()[16 * 15..].to_vec();
    let x16 = Tensor::from_vec([16, 5, 3], rows).unwrap();
    let out = |x: &Tensor| {
        let mut g = Graph::new();
        let xi = g.input("x", x.shape().to_vec()).unwrap();
        let r = nn::Lstm::new(3, 4)
            .name("rnn")
            .forward(&mut g, xi, None)
            .unwrap();
        fill_params(&mut g);
        let mut exe = compile(&g, &[r.output, r.h_n], &CompileOptions::default()).unwrap();
        exe.run(&[("x", x)]).unwrap()
    };
    let (all, alone) = (out(&x32), out(&x16));
    assert_eq!(&all[0].data()[16 * 20..], alone[0].data());
    assert_eq!(&all[1].data()[16 * 4..], alone[1].data());
}

#[test]
fn recurrent_layers_compile_equal_to_unrewritten() {
    let (case, layer) = lstm_case();
    let build = |g: &mut Graph, x, h0: Option<NodeId>, c0: Option<NodeId>| {
        layer.forward(g, x, h0.zip(c0)).unwrap()
    };
    let want = run(&case, &CompileOptions::unrewritten(), build);
    let got = run(&case, &CompileOptions::default(), build);
    for (w, g) in want.iter().zip(&got) {
        assert_close(g.data(), w.data(), 1e-5);
    }
    for (case, layer) in gru_cases() {
        let build = |g: &mut Graph, x, h0, _| layer.forward(g, x, h0).unwrap();
        let want = run(&case, &CompileOptions::unrewritten(), build);
        let got = run(&case, &CompileOptions::default(), build);
        for (w, g) in want.iter().zip(&got) {
            assert_close(g.data(), w.data(), 1e-5);
        }
    }
}

#[test]
fn bad_recurrent_settings_are_errors_naming_the_layer() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 5, 3]).unwrap();
    let msg = |r: kiln::Result<NodeId>| r.unwrap_err().to_string();
    let e = msg(nn::Gru::new(4, 2).name("r").build(&mut g, x));
    assert!(e.contains("`r`") && e.contains("[N, T ≥ 1, 4]"), "{e}");
    let e = msg(nn::Lstm::new(5, 2).batch_first(false).build(&mut g, x));
    assert!(e.contains("[T ≥ 1, N, 5]"), "{e}");
    let e = msg(nn::Lstm::new(3, 2).num_layers(0).build(&mut g, x));
    assert!(e.contains("num_layers"), "{e}");
    let e = msg(nn::Gru::new(3, 2).dropout(1.5).build(&mut g, x));
    assert!(e.contains("dropout must be in 0..1"), "{e}");
    let h0 = g.input("h0", [1, 2, 2]).unwrap();
    let e = nn::Gru::new(3, 2)
        .bidirectional(true)
        .forward(&mut g, x, Some(h0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("h_0 has shape [1, 2, 2]")
            && e.contains("[num_layers·directions = 2, N = 2, H = 2]"),
        "{e}"
    );
}

#[test]
fn a_recurrent_graph_does_not_grow_with_the_sequence() {
    let nodes = |steps: usize| {
        let mut g = Graph::new();
        let x = g.input("x", [2, steps, 3]).unwrap();
        let y = nn::Lstm::new(3, 4)
            .num_layers(2)
            .bidirectional(true)
            .build(&mut g, x)
            .unwrap();
        let loss = g.sum_all(y).unwrap();
        let params: Vec<NodeId> = g.trainable_params().iter().map(|p| p.1).collect();
        g.grad(loss, &params).unwrap();
        g.len()
    };
    assert_eq!(nodes(3), nodes(300));
}

#[test]
fn recurrent_layers_take_a_symbolic_batch() {
    let build = |g: &mut Graph, x| {
        nn::Gru::new(3, 4)
            .num_layers(2)
            .name("gru")
            .build(g, x)
            .unwrap()
    };
    let mut g = Graph::with_seed(1);
    let x = g.input("x", [kiln::BATCH, 4, 3]).unwrap();
    let y = build(&mut g, x);
    let mut sym = compile(&g, &[y], &CompileOptions::default()).unwrap();
    for batch in [3, 1] {
        let mut g = Graph::with_seed(1);
        let x = g.input("x", [batch, 4, 3]).unwrap();
        let y = build(&mut g, x);
        let mut fixed = compile(&g, &[y], &CompileOptions::default()).unwrap();
        let xv = fill(&[batch, 4, 3], 0.5);
        let want = fixed.run(&[("x", &xv)]).unwrap();
        let got = sym.run(&[("x", &xv)]).unwrap();
        assert_eq!(got[0].shape(), &[batch, 4, 4]);
        assert_eq!(got[0].data(), want[0].data(), "batch {batch}");
    }
}
