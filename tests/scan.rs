//! `scan`: a loop whose step is a graph. Checked against the same step
//! unrolled by hand (values and gradients, forward and reverse), by finite
//! differences, for graph size independent of the sequence length, and for
//! bad bodies.

mod common;
use common::*;
use kiln::ops::ScanBody;
use kiln::{compile, CompileOptions, Graph, NodeId, OpBuilder, Tensor};
use std::sync::Arc;

/// The step `carry' = tanh(carry·w + x·u) + b·v` on a carry `[2, 3]`, per-step
/// inputs x `[3]` and v `[2, 3]`, constants `w [3, 3]`, `u [3]`, `b [2, 3]`.
fn step(g: &mut Graph, carry: NodeId, x: &[NodeId], k: &[NodeId]) -> kiln::Result<NodeId> {
    let cw = g.matmul(carry, k[0])?;
    let xu = g.mul(x[0], k[1])?;
    let s = g.add(cw, xu)?;
    let t = g.tanh(s)?;
    let bv = g.mul(k[2], x[1])?;
    g.add(t, bv)
}

fn body() -> Arc<ScanBody> {
    ScanBody::build(&[2, 3], &[&[3], &[2, 3]], &[&[3, 3], &[3], &[2, 3]], step).unwrap()
}

/// A graph with the step's inputs: `c0 [2, 3]`, `xs [t_len, 3]`,
/// `vs [t_len, 2, 3]` and the constants `k0 [3, 3]`, `k1 [3]`, `k2 [2, 3]`.
fn step_inputs(t_len: usize) -> (Graph, NodeId, [NodeId; 2], Vec<NodeId>) {
    let mut g = Graph::new();
    let c0 = g.input("c0", [2, 3]).unwrap();
    let xs = g.input("xs", [t_len, 3]).unwrap();
    let vs = g.input("vs", [t_len, 2, 3]).unwrap();
    let xs = [xs, vs];
    let k: Vec<NodeId> = [vec![3, 3], vec![3], vec![2, 3]]
        .iter()
        .enumerate()
        .map(|(i, s)| g.input(&format!("k{i}"), s.clone()).unwrap())
        .collect();
    (g, c0, xs, k)
}

/// `[carries [T, 2, 3], grads of Σ carries·r w.r.t. carry0, xs, vs, w, u,
/// b]`, by the scan or unrolled.
fn run(t_len: usize, reverse: bool, scanned: bool, options: &CompileOptions) -> Vec<Tensor> {
    let (mut g, c0, xs, k) = step_inputs(t_len);
    let seq = if scanned {
        g.scan(&body(), c0, &xs, &k, reverse).unwrap()
    } else {
        let mut carry = c0;
        let mut outs = vec![c0; t_len];
        let order: Vec<usize> = match reverse {
            true => (0..t_len).rev().collect(),
            false => (0..t_len).collect(),
        };
        for t in order {
            let xt = g.slice(xs[0], 0, t, t + 1, 1).unwrap();
            let xt = g.reshape(xt, &[3]).unwrap();
            let vt = g.slice(xs[1], 0, t, t + 1, 1).unwrap();
            let vt = g.reshape(vt, &[2, 3]).unwrap();
            carry = step(&mut g, carry, &[xt, vt], &k).unwrap();
            outs[t] = carry;
        }
        g.stack(&outs, 0).unwrap()
    };
    let r = g.constant(fill(g.shape(seq).unwrap(), 9.0)).unwrap();
    let p = g.mul(seq, r).unwrap();
    let loss = g.sum_all(p).unwrap();
    let mut outs = vec![seq];
    let mut wrt = vec![c0, xs[0], xs[1]];
    wrt.extend(&k);
    outs.extend(g.grad(loss, &wrt).unwrap());
    let mut exe = compile(&g, &outs, options).unwrap();
    let values = [
        fill(&[2, 3], 1.0),
        fill(&[t_len, 3], 2.0),
        fill(&[t_len, 2, 3], 6.0),
        fill(&[3, 3], 3.0),
        fill(&[3], 4.0),
        fill(&[2, 3], 5.0),
    ];
    let names = ["c0", "xs", "vs", "k0", "k1", "k2"];
    let feeds: Vec<(&str, &dyn kiln::Feed)> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| (*n, v as &dyn kiln::Feed))
        .collect();
    exe.run(&feeds).unwrap()
}

#[test]
fn a_scan_equals_its_step_unrolled_forward_and_reverse_with_gradients() {
    for reverse in [false, true] {
        for t_len in [1, 5] {
            let want = run(t_len, reverse, false, &CompileOptions::default());
            for options in [CompileOptions::default(), CompileOptions::unrewritten()] {
                let got = run(t_len, reverse, true, &options);
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(a.shape(), b.shape(), "output {i}");
                    assert_close(a.data(), b.data(), 1e-5);
                }
            }
        }
    }
}

#[test]
fn a_scans_graph_does_not_grow_with_the_sequence() {
    let nodes = |t_len: usize| {
        let (mut g, c0, xs, k) = step_inputs(t_len);
        let seq = g.scan(&body(), c0, &xs, &k, false).unwrap();
        let loss = g.sum_all(seq).unwrap();
        g.grad(loss, &[c0, xs[0], xs[1], k[0]]).unwrap();
        g.len()
    };
    assert_eq!(nodes(4), nodes(400));
}

#[test]
fn bad_scan_bodies_and_operands_are_errors() {
    let msg = |r: kiln::Result<Arc<ScanBody>>| r.unwrap_err().to_string();
    let e = msg(ScanBody::build(&[2], &[&[3]], &[], |g, _, x, _| {
        g.relu(x[0])
    }));
    assert!(e.contains("returns shape [3]") && e.contains("[2]"), "{e}");
    let e = msg(ScanBody::build(&[2], &[&[2]], &[], |g, c, _, _| {
        let w = g.param("w", [2], kiln::Init::Zeros)?;
        g.add(c, w)
    }));
    assert!(e.contains("`param`") && e.contains("constants"), "{e}");
    let e = msg(ScanBody::build(&[2], &[&[2]], &[], |g, c, _, _| {
        g.dropout(c, 0.5, 1)
    }));
    assert!(e.contains("`dropout`"), "{e}");
    let mut g = Graph::new();
    let c0 = g.input("c0", [2, 3]).unwrap();
    let xs = g.input("xs", [4, 2]).unwrap();
    let e = g
        .scan(&body(), c0, &[xs], &[], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not fit the step"), "{e}");
    let e = g
        .scan(&body(), c0, &[], &[], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no per-step input"), "{e}");
    let e = msg(ScanBody::build(&[2], &[], &[], |_, c, _, _| Ok(c)));
    assert!(e.contains("no per-step input"), "{e}");
}

#[test]
fn a_scan_with_no_steps_returns_no_carries_and_passes_the_gradient_through() {
    let mut g = Graph::new();
    let c0 = g.input("c0", [2]).unwrap();
    let xs = g.input("xs", [0, 2]).unwrap();
    let b = ScanBody::build(&[2], &[&[2]], &[], |g, c, x, _| g.add(c, x[0])).unwrap();
    let seq = g.scan(&b, c0, &[xs], &[], false).unwrap();
    assert_eq!(g.shape(seq).unwrap(), &[0, 2]);
    let s = g.sum_all(seq).unwrap();
    let s2 = g.sum_all(c0).unwrap();
    let loss = g.add(s, s2).unwrap();
    let dc0 = g.grad(loss, &[c0]).unwrap()[0];
    let mut exe = compile(&g, &[seq, dc0], &CompileOptions::default()).unwrap();
    let out = exe
        .run(&[("c0", &t(&[2], &[1., 2.])), ("xs", &Tensor::zeros([0, 2]))])
        .unwrap();
    assert_eq!(out[0].numel(), 0);
    assert_eq!(out[1].data(), &[1.0, 1.0], "only the direct use");
}

#[test]
fn a_step_reading_an_input_of_its_own_is_refused() {
    let e = ScanBody::build(&[2], &[&[2]], &[], |g, c, _, _| {
        let extra = g.input("extra", [2])?;
        g.add(c, extra)
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("input `extra`") && e.contains("carry, x and constants"),
        "{e}"
    );
}
