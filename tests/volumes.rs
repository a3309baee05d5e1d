//! 3-D convolutions and pools (`Conv3d`, `ConvTranspose3d`, `MaxPool3d`,
//! `AvgPool3d`) and the 1-D pools against values PyTorch 2.15 printed
//! (`tests/data/volumes_ref.py`): outputs and the gradients of input,
//! weight and bias; compiled equals unrewritten; 3-D windows stay generic
//! ops (the fused kernels are 1-D and 2-D) and the 1-D pools fuse.

mod common;
use common::*;
use kiln::nn::{self, Layer};
use kiln::{compile, CompileOptions, Graph, Op, OpBuilder, Tensor};

const REF: &str = include_str!("data/volumes_ref.txt");

/// The reference cases: name, layer (named `m`), input shape.
fn cases() -> Vec<(&'static str, Box<dyn Layer>, Vec<usize>)> {
    vec![
        (
            "conv3d_a",
            Box::new(
                nn::Conv3d::new(2, 4, 0)
                    .kernel([2, 3, 2])
                    .strides([1, 2, 1])
                    .paddings([1, 0, 1])
                    .groups(2)
                    .name("m"),
            ),
            vec![2, 2, 4, 5, 5],
        ),
        (
            "conv3d_b",
            Box::new(
                nn::Conv3d::new(3, 2, 2)
                    .padding(1)
                    .dilation(2)
                    .bias(false)
                    .name("m"),
            ),
            vec![1, 3, 4, 4, 3],
        ),
        (
            "convt3d",
            Box::new(
                nn::ConvTranspose3d::new(4, 2, 2)
                    .stride(2)
                    .output_padding(1)
                    .name("m"),
            ),
            vec![1, 4, 2, 3, 2],
        ),
        (
            "maxpool3d_a",
            Box::new(nn::MaxPool3d::new(2).stride(2).padding(1).ceil_mode(true)),
            vec![2, 3, 5, 4, 5],
        ),
        (
            "maxpool3d_b",
            Box::new(nn::MaxPool3d::new(3).stride(2).padding(1).dilation(2)),
            vec![1, 2, 6, 7, 6],
        ),
        (
            "avgpool3d_a",
            Box::new(
                nn::AvgPool3d::new(0)
                    .kernel([2, 2, 3])
                    .strides([1, 2, 2])
                    .padding(1)
                    .ceil_mode(true)
                    .count_include_pad(false),
            ),
            vec![2, 2, 4, 5, 6],
        ),
        (
            "avgpool3d_b",
            Box::new(nn::AvgPool3d::new(3).stride(2).padding(1)),
            vec![1, 2, 5, 5, 5],
        ),
        (
            "maxpool1d",
            Box::new(nn::MaxPool1d::new(3).stride(2).padding(1).ceil_mode(true)),
            vec![2, 3, 10],
        ),
        (
            "avgpool1d",
            Box::new(
                nn::AvgPool1d::new(4)
                    .stride(3)
                    .padding(2)
                    .ceil_mode(true)
                    .count_include_pad(false),
            ),
            vec![2, 2, 11],
        ),
    ]
}

/// `[y, dx, dw, db]` (those that exist) of `Σ y·r` for `layer` on its
/// input, compiled with `options`, and its forward graph after the passes.
fn run(
    layer: &dyn Layer,
    shape: &[usize],
    options: &CompileOptions,
) -> (Vec<Tensor>, kiln::Program) {
    let values = layer_grads(layer, "m", shape, options);
    let mut g = Graph::new();
    let x = g.input("x", shape.to_vec()).unwrap();
    let y = layer.build(&mut g, x).unwrap();
    let program = kiln::Program {
        graph: g,
        outputs: vec![y],
        updates: vec![],
    };
    (values, kiln::compile::optimize(program, options).unwrap().0)
}

#[test]
fn volumes_and_1d_pools_match_pytorch_outputs_and_gradients() {
    for (name, layer, shape) in cases() {
        let (out, _) = run(layer.as_ref(), &shape, &CompileOptions::default());
        assert_reference(REF, name, &out);
    }
}

#[test]
fn compiled_equals_unrewritten_and_only_1d_and_2d_windows_fuse() {
    for (name, layer, shape) in cases() {
        let (want, _) = run(layer.as_ref(), &shape, &CompileOptions::unrewritten());
        let (got, forward) = run(layer.as_ref(), &shape, &CompileOptions::default());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.shape(), g.shape(), "case {name}");
            assert_close(g.data(), w.data(), 1e-5);
        }
        let ops: Vec<&Op> = forward
            .live_nodes()
            .into_iter()
            .map(|n| &forward.graph.node(n).unwrap().op)
            .collect();
        let fused = ops.iter().any(|o| {
            matches!(
                o,
                Op::Conv(_) | Op::ConvInputGrad(_) | Op::MaxPool(_) | Op::AvgPool(_)
            )
        });
        assert_eq!(fused, name.ends_with("1d"), "case {name}: {ops:?}");
    }
}

#[test]
fn three_d_windows_are_refused_by_the_fused_ops_and_four_d_ones_everywhere() {
    let mut g = Graph::new();
    let x = g.input("x", [1, 1, 4, 4, 4]).unwrap();
    let w = g.input("w", [1, 1, 2, 2, 2]).unwrap();
    let conv = Op::Conv(kiln::ops::Conv {
        window: kiln::Window::new(&[2, 2, 2]),
        groups: 1,
        residual: false,
        epilogue: vec![],
    });
    let e = g.add_op(conv, &[x, w]).unwrap_err().to_string();
    assert!(e.contains("1-D and 2-D") && e.contains("[2, 2, 2]"), "{e}");
    let x4 = g.input("x4", [1, 1, 3, 3, 3, 3]).unwrap();
    let e = g
        .unfold(x4, kiln::Window::new(&[2, 2, 2, 2]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("1-D, 2-D or 3-D"), "{e}");
    let e = nn::Conv3d::new(2, 1, 2)
        .build(&mut g, x)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[N, 2, D, H, W]"), "{e}");
    let e = nn::MaxPool3d::new(2)
        .build(&mut g, x4)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("maxpool3d") && e.contains("[N, C, D, H, W]"),
        "{e}"
    );
}

#[test]
fn unbatched_inputs_give_the_batched_result_without_its_batch_as_pytorch() {
    let layers: Vec<(Box<dyn Layer>, Vec<usize>)> = vec![
        (Box::new(nn::Conv1d::new(2, 3, 3).padding(1)), vec![2, 7]),
        (Box::new(nn::Conv3d::new(2, 3, 2)), vec![2, 3, 4, 3]),
        (
            Box::new(nn::ConvTranspose2d::new(2, 3, 2).stride(2)),
            vec![2, 3, 2],
        ),
        (Box::new(nn::MaxPool2d::new(2)), vec![3, 4, 6]),
        (Box::new(nn::AvgPool3d::new(2).padding(1)), vec![2, 3, 3, 3]),
    ];
    for (layer, shape) in layers {
        let batched: Vec<usize> = std::iter::once(1).chain(shape.iter().copied()).collect();
        let mut outs = Vec::new();
        for s in [&shape, &batched] {
            let mut g = Graph::with_seed(3);
            let x = g.input("x", s.clone()).unwrap();
            let y = layer.build(&mut g, x).unwrap();
            let mut exe = compile(&g, &[y], &CompileOptions::default()).unwrap();
            outs.push(exe.run(&[("x", &fill(s, 1.0))]).unwrap().remove(0));
        }
        assert_eq!(outs[0].shape(), &outs[1].shape()[1..], "{shape:?}");
        assert_eq!(outs[0].data(), outs[1].data(), "{shape:?}");
    }
    // a rank that is neither is still refused, naming both forms
    let mut g = Graph::new();
    let x = g.input("x", [5]).unwrap();
    let e = nn::Conv1d::new(2, 3, 3)
        .build(&mut g, x)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[N, 2, L] or unbatched [2, L]"), "{e}");
}
