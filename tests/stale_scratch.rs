//! A compiled convolution's result does not depend on what ran before it:
//! kernel scratch is per thread and reused, so every kernel must write what
//! it reads. Each case first dirties the scratch (a larger convolution and
//! its gradients on NaN and huge inputs, on the same threads), then runs a
//! convolution with a large dilation and padding (accepted: its dilated
//! kernel fits the padded input) and its gradients, compiled and
//! unrewritten. (Builds with debug assertions also fill scratch with NaN
//! before every use, see `kernels::scratch::with`.)

mod common;
use common::*;
use kiln::compile;
use kiln::nn::{self, Layer};
use kiln::OpBuilder;
use kiln::{CompileOptions, Feed, Graph, NodeId, Tensor};

/// `outs` of `g` on `feeds` with these options.
fn run(g: &Graph, outs: &[NodeId], feeds: &[(&str, &dyn Feed)], o: CompileOptions) -> Vec<Tensor> {
    compile(g, outs, &o).unwrap().run(feeds).unwrap()
}

/// A convolution layer's output and the gradients of its sum w.r.t. the
/// input and parameters.
fn conv_and_grads(layer: &dyn Layer, shape: &[usize]) -> (Graph, Vec<NodeId>) {
    let mut g = Graph::with_seed(2);
    let x = g.input("x", shape.to_vec()).unwrap();
    let y = layer.build(&mut g, x).unwrap();
    let l = g.sum_all(y).unwrap();
    let mut wrt = vec![x];
    wrt.extend(g.trainable_params().iter().map(|p| p.1));
    let mut outs = vec![y];
    outs.extend(g.grad(l, &wrt).unwrap());
    (g, outs)
}

fn dirty(threads: usize) {
    for fill in [f32::NAN, 1e30] {
        let (g, outs) = conv_and_grads(&nn::Conv2d::new(8, 16, 3).padding(1), &[2, 8, 40, 40]);
        let x = Tensor::full([2, 8, 40, 40], fill);
        let o = CompileOptions {
            threads: Some(threads),
            ..CompileOptions::default()
        };
        run(&g, &outs, &[("x", &x)], o);
    }
}

#[test]
fn large_dilations_give_the_same_values_after_other_graphs_ran() {
    let conv2 =
        |k, d, p| -> Box<dyn Layer> { Box::new(nn::Conv2d::new(3, 2, k).dilation(d).padding(p)) };
    let conv1 =
        |k, d, p| -> Box<dyn Layer> { Box::new(nn::Conv1d::new(3, 2, k).dilation(d).padding(p)) };
    let cases: Vec<(Box<dyn Layer>, Vec<usize>)> = vec![
        (conv2(3, 100, 100), vec![1, 3, 6, 5]),
        (conv2(2, 30, 15), vec![2, 3, 6, 5]),
        (conv2(3, 9, 9), vec![1, 3, 6, 5]),
        (conv2(3, 17, 20), vec![1, 3, 9, 4]),
        (conv1(3, 200, 200), vec![2, 3, 7]),
        (conv1(2, 50, 25), vec![1, 3, 5]),
    ];
    for threads in [1, 2] {
        for (i, (layer, shape)) in cases.iter().enumerate() {
            let (g, outs) = conv_and_grads(layer.as_ref(), shape);
            let x = rand(shape, 3 + i as u64);
            let o = |unrewritten: bool| CompileOptions {
                threads: Some(threads),
                ..if unrewritten {
                    CompileOptions::unrewritten()
                } else {
                    CompileOptions::default()
                }
            };
            let alone = run(&g, &outs, &[("x", &x)], o(false));
            dirty(threads);
            let after = run(&g, &outs, &[("x", &x)], o(false));
            let want = run(&g, &outs, &[("x", &x)], o(true));
            for (k, ((a, b), w)) in alone.iter().zip(&after).zip(&want).enumerate() {
                let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(a),
                    bits(b),
                    "case {i}, result {k}, {threads} threads: alone vs after"
                );
                assert_close(b.data(), w.data(), 1e-4);
            }
        }
    }
}

/// The kind behind it: a dilation whose window extent `d·(k − 1) + 1`
/// wrapped (kernel 2, dilation `usize::MAX`: extent 0) was accepted, the
/// output grew past the input (`[1, 2, 7, 7]` from 6x6) and the fused kernel
/// read outside the padded image, into whatever the scratch held (compiled
/// −3.4e35, unrewritten 25.2). Every window's extent is now computed checked
/// when the node is built, in the layer and in the op's own shape rule.
#[test]
fn a_window_extent_that_wraps_is_refused() {
    let mut g = Graph::new();
    let x = g.input("x", [1, 2, 6, 6]).unwrap();
    for d in [usize::MAX, 1 << 63, (1 << 63) + 1] {
        let e = nn::Conv2d::new(2, 2, 2)
            .dilation(d)
            .build(&mut g, x)
            .expect_err("a wrapping extent");
        assert!(e.to_string().contains("window extent"), "{e}");
    }
    let window = kiln::Window {
        kernel: vec![2, 2],
        stride: vec![1, 1],
        padding: vec![0, 0],
        dilation: vec![usize::MAX, 1],
    };
    let e = g.unfold(x, window).expect_err("the op's own rule");
    assert!(
        e.to_string().contains("unfold") && e.to_string().contains("overflows"),
        "{e}"
    );
}
