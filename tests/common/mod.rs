//! Helpers shared by the integration tests.
#![allow(dead_code)]

use kiln::{compile, CompileOptions, Feed, Graph, NodeId, Tensor};

/// Compiles `out` and runs it once on `feeds`.
pub fn eval(g: &Graph, out: NodeId, feeds: &[(&str, &dyn Feed)]) -> Tensor {
    let mut exe = compile(g, &[out], &CompileOptions::default()).expect("compile");
    exe.run(feeds).expect("run").remove(0)
}

/// Asserts element-wise closeness: `|a − b| ≤ tol · (1 + |b|)`.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()) || (a.is_nan() && b.is_nan()),
            "element {i}: got {a}, want {b}"
        );
    }
}

/// A seeded random tensor in [-1, 1).
pub fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape.to_vec(), -1.0, 1.0, seed)
}

/// A graph with one input `x` of `shape`.
pub fn graph_with_input(shape: &[usize]) -> (Graph, NodeId) {
    let mut g = Graph::with_seed(7);
    let x = g.input("x", shape.to_vec()).unwrap();
    (g, x)
}

/// Applies `f` to a fresh graph with input `x = value` and returns the result.
pub fn apply(value: &Tensor, f: impl FnOnce(&mut Graph, NodeId) -> kiln::Result<NodeId>) -> Tensor {
    let (mut g, x) = graph_with_input(value.shape());
    let y = f(&mut g, x).expect("build");
    eval(&g, y, &[("x", value)])
}

/// [`apply`] twice: compiled with all passes, and unrewritten.
pub fn apply_both(
    value: &Tensor,
    f: impl Fn(&mut Graph, NodeId) -> kiln::Result<NodeId>,
) -> [Tensor; 2] {
    [CompileOptions::default(), CompileOptions::unrewritten()].map(|opts| {
        let (mut g, x) = graph_with_input(value.shape());
        let y = f(&mut g, x).expect("build");
        let mut exe = compile(&g, &[y], &opts).expect("compile");
        exe.run(&[("x", value)]).expect("run").remove(0)
    })
}

/// Shorthand for a tensor from data.
pub fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), data.to_vec()).unwrap()
}

/// A deliberately wrong pass (`broken`, rule `relu_to_neg`): turns every
/// ReLU into a negation, for verification and bisection to catch.
pub struct Broken;

impl kiln::passes::Pass for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn run(&self, rw: &mut kiln::passes::Rewriter) -> kiln::Result<usize> {
        use kiln::ops::UnaryOp;
        use kiln::Op;
        let mut n = 0;
        for id in rw.live_nodes() {
            let p = rw.program();
            if matches!(p.graph.node(id)?.op, Op::Unary(UnaryOp::Relu)) {
                let x = p.graph.operands(id)[0];
                let mut patch = kiln::passes::Patch::new();
                let bad = patch.add(Op::Unary(UnaryOp::Neg), &[x.into()]);
                patch.replace(id, bad);
                n += usize::from(rw.apply("relu_to_neg", &[id], patch)?.is_some());
            }
        }
        Ok(n)
    }
}

/// The values a reference script printed as `{key} [v, v, ..]` under the
/// line `// {section}` of `text`.
pub fn reference_values(text: &str, section: &str, key: &str) -> Vec<f32> {
    let start = text
        .find(&format!("// {section}\n"))
        .unwrap_or_else(|| panic!("no section {section}"));
    let line = text[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("//"))
        .find(|l| l.starts_with(&format!("{key} [")))
        .unwrap_or_else(|| panic!("no {key} in {section}"));
    let list = &line[key.len() + 2..line.len() - 1];
    list.split(", ").map(|v| v.parse().unwrap()).collect()
}

/// `0.5·sin(0.37·i + salt)`: the reference scripts' fill (`tests/data/*.py`).
pub fn fill(shape: &[usize], salt: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| (0.5 * (0.37 * i as f64 + salt).sin()) as f32)
        .collect();
    Tensor::from_vec(shape.to_vec(), data).unwrap()
}

/// Sets every parameter of `g` as the reference scripts do (salt 0.1·numel).
pub fn fill_params(g: &mut Graph) {
    let params: Vec<(String, Vec<usize>)> = g
        .params()
        .map(|(n, _, t)| (n.to_string(), t.shape().to_vec()))
        .collect();
    for (name, shape) in params {
        let n: usize = shape.iter().product();
        g.set_param_value(&name, fill(&shape, 0.1 * n as f64))
            .unwrap();
    }
}

/// `[y, dx, d{name}.weight, d{name}.bias]` (the parameters that exist) of
/// `Σ y·r` for `layer` on input `x` of `shape`, with `x`, `r` and the
/// parameters filled as the reference scripts in tests/data fill them (x
/// salt 1, r salt 2), compiled with `options`.
pub fn layer_grads(
    layer: &dyn kiln::nn::Layer,
    name: &str,
    shape: &[usize],
    options: &CompileOptions,
) -> Vec<Tensor> {
    use kiln::OpBuilder;
    let mut g = Graph::new();
    let x = g.input("x", shape.to_vec()).unwrap();
    let y = layer.build(&mut g, x).unwrap();
    fill_params(&mut g);
    let r = g.constant(fill(g.shape(y).unwrap(), 2.0)).unwrap();
    let yr = g.mul(y, r).unwrap();
    let loss = g.sum_all(yr).unwrap();
    let mut wrt = vec![x];
    let params: Vec<(String, NodeId)> = g.trainable_params();
    for p in [format!("{name}.weight"), format!("{name}.bias")] {
        wrt.extend(params.iter().filter(|q| q.0 == p).map(|q| q.1));
    }
    let mut outs = vec![y];
    outs.extend(g.grad(loss, &wrt).unwrap());
    let mut exe = compile(&g, &outs, options).unwrap();
    exe.run(&[("x", &fill(shape, 1.0))]).unwrap()
}

/// Asserts `out` (`[y, dx, dw, db]`, as [`layer_grads`] gives) against the
/// values section `name` of a reference file holds (`shape`, `out`, `gx`,
/// `gw`, `gb`).
pub fn assert_reference(reference: &str, name: &str, out: &[Tensor]) {
    let want_shape: Vec<usize> = reference_values(reference, name, "shape")
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(out[0].shape(), &want_shape[..], "case {name}");
    for (i, key) in ["out", "gx", "gw", "gb"].iter().enumerate().take(out.len()) {
        let want = reference_values(reference, name, key);
        assert_eq!(out[i].data().len(), want.len(), "case {name} {key}");
        assert_close(out[i].data(), &want, 1e-5);
    }
}
