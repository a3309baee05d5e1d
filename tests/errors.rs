//! Bad input gives an `Err` whose message names the problem; nothing panics.

mod common;
use common::*;
use kiln::nn::{self, Layer};
use kiln::ops::{AvgPool, MaxPool, MaxPoolBackward, MaxPoolWithIndices};
use kiln::CompileOptions;
use kiln::OpBuilder;
use kiln::{compile, Graph, Init, KilnError, Tensor, Window};

fn msg<T: std::fmt::Debug>(r: kiln::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn has_all(m: &str, parts: &[&str]) {
    for p in parts {
        assert!(m.contains(p), "message {m:?} should mention {p:?}");
    }
}

#[test]
fn shape_errors_name_op_operand_and_both_shapes() {
    let mut g = Graph::new();
    let a = g.input("a", [2, 3]).unwrap();
    let b = g.input("b", [4, 3]).unwrap();
    has_all(&msg(g.add(a, b)), &["add", "operand 1", "[4, 3]", "[2, 3]"]);
    let c = g.input("c", [2, 5]).unwrap();
    has_all(
        &msg(g.matmul(a, c)),
        &["matmul", "operand 0", "[2, 3]", "operand 1", "[2, 5]"],
    );
    has_all(
        &msg(g.reshape(a, &[4, 2])),
        &["reshape", "[2, 3]", "[4, 2]"],
    );
    has_all(
        &msg(g.concat(&[a, c, b], 0)),
        &["concat", "operand 1", "[2, 5]", "[2, 3]"],
    );
    has_all(&msg(g.stack(&[a, b], 0)), &["stack", "operand 1", "[4, 3]"]);
    has_all(
        &msg(g.broadcast_to(b, &[2, 3])),
        &["broadcast", "[4, 3]", "[2, 3]"],
    );
    let v = g.input("v", [3]).unwrap();
    has_all(&msg(g.matmul(v, a)), &["matmul", "rank"]);
    has_all(
        &msg(g.unfold(a, Window::new(&[2, 2]))),
        &["unfold", "[2, 3]", "rank 4"],
    );
    let s = g.scalar(1.0).unwrap();
    has_all(&msg(g.select(a, b, s)), &["select", "operand 1"]);
}

#[test]
fn invalid_attributes_are_errors() {
    let mut g = Graph::new();
    let x = g.input("x", [1, 2, 5, 5]).unwrap();
    has_all(
        &msg(g.sum(x, &[4], false)),
        &["reduce_sum", "axis 4", "rank 4"],
    );
    has_all(&msg(g.sum(x, &[-5], false)), &["axis -5"]);
    has_all(&msg(g.mean(x, &[1, -3], false)), &["same axis"]);
    has_all(&msg(g.first_max_mask(x, 7)), &["first_max_mask", "axis 7"]);
    has_all(
        &msg(g.transpose(x, &[0, 1, 1, 2])),
        &["transpose", "perm", "[0, 1, 1, 2]"],
    );
    has_all(&msg(g.slice(x, 2, 3, 9, 1)), &["slice", "3..9"]);
    has_all(&msg(g.slice(x, 2, 0, 5, 0)), &["slice", "step"]);
    has_all(&msg(g.pad(x, &[(1, 1)], 0.0)), &["pad", "per dimension"]);
    has_all(&msg(g.reshape(x, &[-1, -1])), &["reshape", "-1"]);
    has_all(&msg(g.dropout(x, 1.5, 0)), &["dropout", "1.5"]);
    let zero_stride = Window {
        kernel: vec![2, 2],
        stride: vec![0, 1],
        padding: vec![0, 0],
        dilation: vec![1, 1],
    };
    has_all(
        &msg(g.unfold(x, zero_stride)),
        &["unfold", "stride", "at least 1"],
    );
    has_all(
        &msg(g.unfold(x, Window::new(&[6, 2]))),
        &["unfold", "larger than the padded input"],
    );
    has_all(
        &msg(g.fold(x, Window::new(&[2, 2]), &[3, 3])),
        &["fold", "[1, 2, 5, 5]"],
    );
}

#[test]
fn layer_errors_name_the_layer() {
    let mut g = Graph::new();
    let x = g.input("x", [1, 3, 8, 8]).unwrap();
    has_all(
        &msg(nn::Conv2d::new(4, 8, 3).name("c1").build(&mut g, x)),
        &["c1", "[1, 3, 8, 8]", "[N, 4, H, W]"],
    );
    has_all(
        &msg(nn::Conv2d::new(3, 8, 3).groups(2).build(&mut g, x)),
        &["conv2d", "groups = 2"],
    );
    has_all(
        &msg(nn::Conv2d::new(3, 8, 3).stride(0).build(&mut g, x)),
        &["stride", "at least 1"],
    );
    has_all(
        &msg(nn::Conv2d::new(3, 8, 9).build(&mut g, x)),
        &["larger than the padded input"],
    );
    has_all(
        &msg(nn::Conv2d::new(3, 8, 3).dilation(4).build(&mut g, x)),
        &["spans 9 cells"],
    );
    assert!(
        nn::Conv2d::new(3, 8, 3)
            .dilation(4)
            .padding(1)
            .build(&mut g, x)
            .is_ok(),
        "padding makes room"
    );
    has_all(
        &msg(nn::Conv1d::new(3, 8, 3).build(&mut g, x)),
        &["conv1d", "[N, 3, L]"],
    );
    has_all(
        &msg(nn::MaxPool2d::new(9).build(&mut g, x)),
        &["maxpool2d", "larger than the padded input"],
    );
    has_all(
        &msg(nn::MaxPool2d::new(2).stride(0).build(&mut g, x)),
        &["at least 1"],
    );
    has_all(
        &msg(nn::MaxPool2d::new(2).padding(2).build(&mut g, x)),
        &["at most half"],
    );
    has_all(
        &msg(nn::AvgPool2d::new(3).padding(2).build(&mut g, x)),
        &["avgpool2d", "at most half"],
    );
    has_all(
        &msg(nn::Linear::new(5, 2).name("fc").build(&mut g, x)),
        &["fc", "[1, 3, 8, 8]", "[..., 5]"],
    );
    has_all(
        &msg(nn::Lstm::new(4, 2).build(&mut g, x)),
        &["lstm", "[N, T ≥ 1, 4]"],
    );
    has_all(&msg(nn::Softmax(4).build(&mut g, x)), &["axis 4"]);
    let flat = g.input("v", [3]).unwrap();
    has_all(
        &msg(nn::MaxPool2d::new(2).build(&mut g, flat)),
        &["[N, C, H, W]"],
    );
}

#[test]
fn feed_errors_are_clear() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 2]).unwrap();
    let w = g.param("w", [2, 2], Init::Zeros).unwrap();
    let y = g.add(x, w).unwrap();
    let mut exe = compile(&g, &[y], &CompileOptions::default()).unwrap();
    let ok = Tensor::zeros([2, 2]);
    assert_eq!(
        exe.run(&[]).unwrap_err(),
        KilnError::MissingFeed("x".into())
    );
    has_all(
        &msg(exe.run(&[("x", &ok), ("z", &ok)])),
        &["unknown feed `z`", "\"x\""],
    );
    has_all(
        &msg(exe.run(&[("x", &Tensor::zeros([2, 3]))])),
        &["`x`", "[2, 3]", "[2, 2]"],
    );
    has_all(&msg(exe.run(&[("x", &ok), ("x", &ok)])), &["`x`", "twice"]);
    has_all(
        &msg(exe.run(&[("x", &ok), ("w", &ok)])),
        &["`w`", "parameter"],
    );
    has_all(
        &msg(exe.set_param("w", &Tensor::zeros([3]))),
        &["`w`", "[3]", "[2, 2]"],
    );
    has_all(&msg(exe.set_param("nope", &ok)), &["nope"]);
    assert!(
        exe.run(&[("x", &ok)]).is_ok(),
        "the executable still works after rejected calls"
    );
}

#[test]
fn graph_misuse_is_an_error() {
    let mut g = Graph::new();
    let x = g.input("x", [2]).unwrap();
    assert_eq!(
        g.input("x", [3]).unwrap_err(),
        KilnError::DuplicateName("x".into())
    );
    assert_eq!(
        g.param("x", [3], Init::Zeros).unwrap_err(),
        KilnError::DuplicateName("x".into())
    );
    has_all(
        &msg(g.param("p", [2], Init::FromTensor(Tensor::zeros([3])))),
        &["`p`", "[3]", "[2]"],
    );
    has_all(
        &msg(g.param(
            "q",
            [2],
            Init::Uniform {
                low: 1.0,
                high: 0.0,
            },
        )),
        &["low"],
    );
    let mut other = Graph::new();
    let a = other.input("a", [2]).unwrap();
    let b = other.input("b", [2]).unwrap();
    let _ = other.add(a, b).unwrap();
    let foreign = other.add(a, b).unwrap();
    has_all(&msg(g.relu(foreign)), &["unknown node"]);
    has_all(
        &msg(compile(&g, &[], &CompileOptions::default())),
        &["no outputs"],
    );
    has_all(
        &msg(compile(&g, &[foreign], &CompileOptions::default())),
        &["unknown node"],
    );
    assert!(compile(&g, &[x], &CompileOptions::default()).is_ok());
}

/// A node of another graph whose index exists in this one is refused, not
/// taken for this graph's node at that index (which gave relu(x) for a
/// foreign neg(q)); a clone accepts its original's nodes.
#[test]
fn a_node_of_another_graph_is_never_taken_for_a_node_of_this_one() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let y = g.relu(x).unwrap();
    let mut other = Graph::new();
    let q = other.input("q", [2, 3]).unwrap();
    let n = other.neg(q).unwrap();
    assert_eq!(n.index(), y.index(), "the same index in both graphs");
    has_all(
        &msg(compile(&g, &[n], &CompileOptions::default())),
        &["unknown node", "not part of this graph"],
    );
    has_all(&msg(g.exp(n)), &["unknown node"]);
    has_all(&msg(g.shape(n)), &["unknown node"]);
    assert!(g.users(q).is_empty() && g.operands(n).is_empty());
    let program = kiln::Program {
        graph: g.clone(),
        outputs: vec![y],
        updates: vec![(q, n)],
    };
    has_all(
        &msg(kiln::compile_program(program, &CompileOptions::default())),
        &["unknown node"],
    );
    let copy = g.clone();
    assert_eq!(copy.shape(y).unwrap(), &[2, 3]);
}

#[test]
fn tensor_construction_errors() {
    has_all(
        &msg(Tensor::from_vec([2, 3], vec![0.0; 5])),
        &["5 elements", "[2, 3]", "6"],
    );
    let mut t = Tensor::zeros([2, 2]);
    assert_eq!(t.get(&[2, 0]), None);
    assert_eq!(t.get(&[0]), None);
    has_all(&msg(t.set(&[0, 2], 1.0)), &["[0, 2]", "out of bounds"]);
    t.set(&[1, 0], 3.0).unwrap();
    assert_eq!(t.get(&[1, 0]), Some(3.0));
    assert_eq!(Vec::from(t), vec![0.0, 0.0, 3.0, 0.0]);
    let _ = rand(&[1], 0);
}

#[test]
fn multi_output_ops_are_read_through_output_nodes() {
    let mut g = Graph::new();
    let x = g.input("x", [1, 2, 4, 4]).unwrap();
    let window = kiln::ops::PoolWindow {
        kernel: vec![2, 2],
        stride: vec![2, 2],
        dilation: vec![1, 1],
        pads: vec![(0, 0), (0, 0)],
    };
    let pool = g
        .add_op(
            kiln::Op::MaxPoolWithIndices(MaxPoolWithIndices(window.clone())),
            &[x],
        )
        .unwrap();
    has_all(
        &msg(g.relu(pool)),
        &[
            "relu",
            "maxpool2d_with_indices",
            "2 outputs",
            "Graph::output",
        ],
    );
    has_all(
        &msg(g.output(pool, 2)),
        &["output", "maxpool2d_with_indices", "no output 2"],
    );
    has_all(&msg(g.output(x, 1)), &["output", "input", "no output 1"]);
    has_all(
        &msg(compile(&g, &[pool], &CompileOptions::default())),
        &["maxpool2d_with_indices", "2 outputs", "Graph::output"],
    );
    // shape rules of the fused pooling ops name the op and the operand
    let gy = g.input("gy", [1, 2, 3, 3]).unwrap();
    let idx = g.output(pool, 1).unwrap();
    let back = kiln::Op::MaxPoolBackward(MaxPoolBackward {
        window,
        spatial: vec![4, 4],
    });
    has_all(
        &msg(g.add_op(back, &[gy, idx])),
        &[
            "maxpool2d_backward",
            "operand 0",
            "[1, 2, 3, 3]",
            "[1, 2, 2, 2]",
        ],
    );
    let big = kiln::ops::PoolWindow {
        kernel: vec![5, 5],
        stride: vec![1, 1],
        dilation: vec![1, 1],
        pads: vec![(0, 0), (0, 0)],
    };
    has_all(
        &msg(g.add_op(
            kiln::Op::AvgPool(AvgPool {
                window: big,
                divisor: kiln::ops::AvgDivisor::Window,
            }),
            &[x],
        )),
        &["avgpool2d", "spans 5", "larger than the padded input 4"],
    );
    let flat = g.input("flat", [2, 16]).unwrap();
    has_all(
        &msg(g.add_op(kiln::Op::MaxPool(MaxPool(window_2x2())), &[flat])),
        &["maxpool2d", "[2, 16]", "rank 4"],
    );
}

fn window_2x2() -> kiln::ops::PoolWindow {
    kiln::ops::PoolWindow {
        kernel: vec![2, 2],
        stride: vec![2, 2],
        dilation: vec![1, 1],
        pads: vec![(0, 0), (0, 0)],
    }
}
