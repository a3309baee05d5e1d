//! `ConvTranspose1d` / `ConvTranspose2d` against values PyTorch 2.15
//! printed (`tests/data/conv_transpose_ref.py`): outputs and the gradients
//! of input, weight and bias; the compiled graph is one fused transposed
//! convolution and equals the unrewritten one.

mod common;
use common::*;
use kiln::nn::{self, Layer};
use kiln::{CompileOptions, Graph, NodeId, Op, Tensor};

const REF: &str = include_str!("data/conv_transpose_ref.txt");

/// The reference cases: name, layer, input shape.
fn cases() -> Vec<(&'static str, Box<dyn Layer>, Vec<usize>)> {
    vec![
        (
            "a",
            Box::new(
                nn::ConvTranspose2d::new(4, 6, 3)
                    .stride(2)
                    .padding(1)
                    .output_padding(1)
                    .groups(2)
                    .name("ct"),
            ),
            vec![2, 4, 3, 5],
        ),
        (
            "b",
            Box::new(
                nn::ConvTranspose2d::new(3, 2, 0)
                    .kernel([2, 3])
                    .strides([1, 2])
                    .dilation(2)
                    .output_padding(1)
                    .name("ct"),
            ),
            vec![1, 3, 4, 3],
        ),
        (
            "c",
            Box::new(
                nn::ConvTranspose1d::new(2, 3, 4)
                    .stride(3)
                    .padding(2)
                    .output_padding(2)
                    .bias(false)
                    .name("ct"),
            ),
            vec![2, 2, 5],
        ),
    ]
}

/// `[y, dx, dw, (db)]` of `Σ y·r` for case `layer` on its input, compiled with `options`.
fn run(layer: &dyn Layer, shape: &[usize], options: &CompileOptions) -> Vec<Tensor> {
    layer_grads(layer, "ct", shape, options)
}

#[test]
fn conv_transpose_matches_pytorch_outputs_and_gradients() {
    for (name, layer, shape) in cases() {
        let out = run(layer.as_ref(), &shape, &CompileOptions::default());
        assert_reference(REF, name, &out);
    }
}

#[test]
fn conv_transpose_compiles_to_one_fused_kernel_equal_to_unrewritten() {
    for (name, layer, shape) in cases() {
        let want = run(layer.as_ref(), &shape, &CompileOptions::unrewritten());
        let got = run(layer.as_ref(), &shape, &CompileOptions::default());
        for (w, g) in want.iter().zip(&got) {
            assert_close(g.data(), w.data(), 1e-5);
        }
        // the forward graph alone: the fold became conv_input_grad
        let mut g = Graph::new();
        let x = g.input("x", shape.clone()).unwrap();
        let y = layer.build(&mut g, x).unwrap();
        let program = kiln::Program {
            graph: g,
            outputs: vec![y],
            updates: vec![],
        };
        let (p, _) = kiln::compile::optimize(program, &CompileOptions::default()).unwrap();
        let ops: Vec<&Op> = p
            .graph
            .node_ids()
            .iter()
            .map(|&n| &p.graph.node(n).unwrap().op)
            .collect();
        assert!(
            ops.iter().any(|o| matches!(o, Op::ConvInputGrad(_))),
            "case {name}: no fused kernel"
        );
        assert!(
            !ops.iter().any(|o| matches!(o, Op::Fold(_) | Op::MatMul(_))),
            "case {name}: a generic op is left"
        );
    }
}

#[test]
fn bad_conv_transpose_settings_are_errors_naming_the_layer() {
    let mut g = Graph::new();
    let x = g.input("x", [1, 4, 3, 3]).unwrap();
    let msg = |r: kiln::Result<NodeId>| r.unwrap_err().to_string();
    let e = msg(nn::ConvTranspose2d::new(4, 2, 3)
        .output_padding(1)
        .name("t")
        .build(&mut g, x));
    assert!(
        e.contains("`t`") && e.contains("output_padding [1, 1]"),
        "{e}"
    );
    let e = msg(nn::ConvTranspose2d::new(4, 3, 3).groups(2).build(&mut g, x));
    assert!(e.contains("groups = 2"), "{e}");
    let e = msg(nn::ConvTranspose2d::new(3, 2, 3).build(&mut g, x));
    assert!(
        e.contains("[1, 4, 3, 3]") && e.contains("[N, 3, H, W]"),
        "{e}"
    );
    let e = msg(nn::ConvTranspose2d::new(4, 2, 1)
        .padding(2)
        .build(&mut g, x));
    assert!(e.contains("gives no output"), "{e}");
    let e = msg(nn::ConvTranspose2d::new(4, 2, 3)
        .padding(usize::MAX)
        .build(&mut g, x));
    assert!(
        e.contains("gives no output") || e.contains("padding"),
        "{e}"
    );
}
