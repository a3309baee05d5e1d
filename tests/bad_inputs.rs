//! The bad-input table of README.md, walked: every row's input is run here
//! and its answer must appear in README exactly as kiln gives it now. Value
//! rows also assert the right value (PyTorch's, or IEEE 754's), and where a
//! graph is run, that the compiled graph and the unrewritten one agree bit
//! for bit (NaN equal to NaN).

use kiln::compile;
use kiln::nn::{self, Layer};
use kiln::ops::{AvgPool, Conv, Fill};
use kiln::optim::{Adam, Sgd};
use kiln::passes::{Pass, Patch, Rewriter};
use kiln::OpBuilder;
use kiln::Program;
use kiln::{CompileOptions, Feed, Graph, I64Tensor, NodeId, Op, Tensor, Trainer, Window};

type Case = (&'static str, fn() -> String);

fn err<T: std::fmt::Debug>(r: kiln::Result<T>) -> String {
    format!("`Err`: {}", r.expect_err("this input must be refused"))
}

/// Runs `outs` compiled and unrewritten (one thread) and returns the
/// compiled results after checking that both agree bit for bit.
fn both(g: &Graph, outs: &[NodeId], feeds: &[(&str, &dyn Feed)]) -> Vec<Tensor> {
    let [a, b] = [CompileOptions::default(), CompileOptions::unrewritten()].map(|o| {
        let o = CompileOptions {
            threads: Some(1),
            ..o
        };
        compile(g, outs, &o).unwrap().run(feeds).unwrap()
    });
    for (x, y) in a.iter().zip(&b) {
        let bits = |t: &Tensor| -> Vec<u32> {
            t.data()
                .iter()
                .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
                .collect()
        };
        assert_eq!(x.shape(), y.shape());
        assert_eq!(bits(x), bits(y), "compiled {x:?} vs unrewritten {y:?}");
    }
    a
}

/// Runs `outs` with parameter `updates` once, compiled and unrewritten (one
/// thread), checks both agree, and returns the outputs and then the named
/// parameters' values after the run.
fn with_updates(
    g: &Graph,
    outs: &[NodeId],
    updates: &[(NodeId, NodeId)],
    params: &[&str],
) -> Vec<Vec<f32>> {
    let [a, b] = [CompileOptions::default(), CompileOptions::unrewritten()].map(|o| {
        let o = CompileOptions {
            threads: Some(1),
            ..o
        };
        let mut exe = kiln::compile_program(
            kiln::Program {
                graph: g.clone(),
                outputs: outs.to_vec(),
                updates: updates.to_vec(),
            },
            &o,
        )
        .unwrap();
        let mut r: Vec<Vec<f32>> = exe
            .run(&[])
            .unwrap()
            .into_iter()
            .map(Tensor::into_vec)
            .collect();
        r.extend(params.iter().map(|p| exe.param_data(p).unwrap().to_vec()));
        r
    });
    assert_eq!(a, b, "compiled vs unrewritten");
    a
}

fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), data.to_vec()).unwrap()
}

fn value(got: &Tensor, want: &[f32]) -> String {
    let same = got.data().len() == want.len()
        && got
            .data()
            .iter()
            .zip(want)
            .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
    assert!(same, "got {:?}, want {want:?}", got.data());
    format!("{:?}", got.data())
}

/// `d(sum(maxpool2d(x)))/dx` or with an upstream gradient `up`.
fn max_pool_grad(x: Tensor, k: [usize; 2], up: f32) -> Tensor {
    let mut g = Graph::new();
    let xi = g.input("x", x.shape().to_vec()).unwrap();
    let y = nn::MaxPool2d::new(1).kernel(k).build(&mut g, xi).unwrap();
    let s = g.mul_scalar(y, up).unwrap();
    let l = g.sum_all(s).unwrap();
    let dx = g.grad(l, &[xi]).unwrap()[0];
    both(&g, &[dx], &[("x", &x)]).remove(0)
}

/// `1 / f(x)` for x = −0.0.
fn recip_of(f: fn(&mut Graph, NodeId) -> kiln::Result<NodeId>) -> String {
    let mut g = Graph::new();
    let x = g.input("x", [1]).unwrap();
    let y = f(&mut g, x).unwrap();
    let r = g.recip(y).unwrap();
    format!(
        "{:?}",
        both(&g, &[r], &[("x", &t(&[1], &[-0.0]))])[0].data()
    )
}

/// `w = [1]`, loss = sum(w): the parameter after three steps.
fn three_steps(opt: Sgd) -> Vec<f32> {
    let mut g = Graph::new();
    let w = g.param("w", [1], kiln::Init::Constant(1.0)).unwrap();
    let loss = g.sum_all(w).unwrap();
    let mut tr = Trainer::new(g, loss, opt).unwrap();
    (0..3)
        .map(|_| {
            tr.step(&[]).unwrap();
            tr.params()[0].1.data()[0]
        })
        .collect()
}

fn trainer_with(opt: impl kiln::optim::Optimizer) -> kiln::Result<Trainer> {
    let mut g = Graph::new();
    let w = g.param("w", [1], kiln::Init::Constant(1.0)).unwrap();
    let loss = g.sum_all(w).unwrap();
    Trainer::new(g, loss, opt)
}

/// A pass that replaces the first output by zeros: verification must catch it
/// even where the output was NaN.
struct Zeroes;
impl Pass for Zeroes {
    fn name(&self) -> &'static str {
        "zeroes"
    }
    fn run(&self, rw: &mut Rewriter) -> kiln::Result<usize> {
        let p = rw.program();
        let old = p.outputs[0];
        if matches!(p.graph.node(old)?.op, Op::Fill(_)) {
            return Ok(0);
        }
        let shape = p.graph.shape(old)?.to_vec();
        let mut patch = Patch::new();
        let zeros = patch.add(Op::Fill(Fill { shape, value: 0.0 }), &[]);
        patch.replace(old, zeros);
        Ok(rw.apply("zeroes", &[old], patch)?.map_or(0, |_| 1))
    }
}

const CASES: &[Case] = &[
    ("`concat([a, b, a], 0)`, a = [1, 2], b = [3, 4]", || {
        let mut g = Graph::new();
        let (a, b) = (g.input("a", [2]).unwrap(), g.input("b", [2]).unwrap());
        let c = g.concat(&[a, b, a], 0).unwrap();
        assert!(kiln::graph::dump::to_text(&g, &[c]).contains("concat(%0, %1, %0)"));
        let (ta, tb) = (t(&[2], &[1., 2.]), t(&[2], &[3., 4.]));
        value(&both(&g, &[c], &[("a", &ta), ("b", &tb)])[0], &[1., 2., 3., 4., 1., 2.])
    }),
    ("`select(c, a, c)`, c = [0, 4], a = [1, 2]", || {
        let mut g = Graph::new();
        let (a, c) = (g.input("a", [2]).unwrap(), g.input("c", [2]).unwrap());
        let s = g.select(c, a, c).unwrap();
        let (ta, tc) = (t(&[2], &[1., 2.]), t(&[2], &[0., 4.]));
        value(&both(&g, &[s], &[("a", &ta), ("c", &tc)])[0], &[0., 2.])
    }),
    ("`concat([relu(x), y, relu(x)])` (relu built twice: CSE merges them), x = [-1, 2], y = [5, 6]", || {
        let mut g = Graph::new();
        let (x, y) = (g.input("x", [2]).unwrap(), g.input("y", [2]).unwrap());
        let (r1, r2) = (g.relu(x).unwrap(), g.relu(x).unwrap());
        let c = g.concat(&[r1, y, r2], 0).unwrap();
        let (tx, ty) = (t(&[2], &[-1., 2.]), t(&[2], &[5., 6.]));
        value(&both(&g, &[c], &[("x", &tx), ("y", &ty)])[0], &[0., 2., 5., 6., 0., 2.])
    }),
    ("`concat([x, y, stop_gradient(x)])`, x = [-1, 2], y = [5, 6]", || {
        let mut g = Graph::new();
        let (x, y) = (g.input("x", [2]).unwrap(), g.input("y", [2]).unwrap());
        let s = g.stop_gradient(x).unwrap();
        let c = g.concat(&[x, y, s], 0).unwrap();
        let (tx, ty) = (t(&[2], &[-1., 2.]), t(&[2], &[5., 6.]));
        value(&both(&g, &[c], &[("x", &tx), ("y", &ty)])[0], &[-1., 2., 5., 6., -1., 2.])
    }),
    ("`AvgPool2d::new(3).stride(3).padding(1)` on `[1, 1, 5, 3]`, gradient of the sum", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 5, 3]).unwrap();
        let y = nn::AvgPool2d::new(3).stride(3).padding(1).build(&mut g, x).unwrap();
        let l = g.sum_all(y).unwrap();
        let dx = g.grad(l, &[x]).unwrap()[0];
        let got = both(&g, &[dx], &[("x", &Tensor::zeros([1, 1, 5, 3]))]).remove(0);
        // windows cover columns 0 and 1 (and the left padding), each cell once; divisor 9
        let ninth = 1.0f32 / 9.0;
        value(&got, &[[ninth, ninth, 0.0]; 5].concat())
    }),
    ("`Conv2d::new(1, 2, 3)` on a batch of 0 `[0, 1, 4, 4]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [0, 1, 4, 4]).unwrap();
        let y = nn::Conv2d::new(1, 2, 3).build(&mut g, x).unwrap();
        let s = g.sum_all(y).unwrap();
        let r = both(&g, &[y, s], &[("x", &Tensor::zeros([0, 1, 4, 4]))]);
        value(&r[1], &[0.0]);
        format!("output shape {:?}, its sum {:?}", r[0].shape(), r[1].data())
    }),
    ("`Conv2d::new(1, 2, 1).padding(1)` on an empty plane `[1, 1, 0, 0]`", || {
        let mut g = Graph::with_seed(3);
        let x = g.input("x", [1, 1, 0, 0]).unwrap();
        let y = nn::Conv2d::new(1, 2, 1).padding(1).name("c").build(&mut g, x).unwrap();
        let r = both(&g, &[y], &[("x", &Tensor::zeros([1, 1, 0, 0]))]).remove(0);
        let b = g.param_value("c.bias").unwrap().data().to_vec();
        value(&r, &[[b[0]; 4], [b[1]; 4]].concat());
        format!("shape {:?}: every output is its channel's bias", r.shape())
    }),
    ("`MaxPool2d::new(2).padding(1)` on a zero-width input `[1, 1, 2, 0]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 2, 0]).unwrap();
        err(nn::MaxPool2d::new(2).padding(1).build(&mut g, x))
    }),
    ("`first_max_mask(x, 0)` on `[0]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [0]).unwrap();
        let m = g.first_max_mask(x, 0).unwrap();
        value(&both(&g, &[m], &[("x", &Tensor::zeros([0]))])[0], &[])
    }),
    ("`sum(x, [0])` and `mean(x, [0])` of `[0, 2]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [0, 2]).unwrap();
        let (s, m) = (g.sum(x, &[0], false).unwrap(), g.mean(x, &[0], false).unwrap());
        let r = both(&g, &[s, m], &[("x", &Tensor::zeros([0, 2]))]);
        format!("{} and {} (as PyTorch)", value(&r[0], &[0.0, 0.0]), value(&r[1], &[f32::NAN; 2]))
    }),
    ("`max(x, [0])` of `[0, 2]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [0, 2]).unwrap();
        err(g.max(x, &[0], false))
    }),
    ("`Conv2d::new(1, 1, 3).padding(1 << 62)` on `[1, 1, 4, 4]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 4, 4]).unwrap();
        err(nn::Conv2d::new(1, 1, 3).padding(1 << 62).build(&mut g, x))
    }),
    ("`Conv2d::new(1, 1, 3).dilation(1 << 62)` on `[1, 1, 4, 4]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 4, 4]).unwrap();
        err(nn::Conv2d::new(1, 1, 3).dilation(1 << 62).build(&mut g, x))
    }),
    ("`pad(x, &[(usize::MAX, 1)], 0.0)` on `[2]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        err(g.pad(x, &[(usize::MAX, 1)], 0.0))
    }),
    ("`reshape` of `[6]` to `[2^62 + 1, 2, 2^62 + 3]` (the product wraps to 6)", || {
        let mut g = Graph::new();
        let x = g.input("x", [6]).unwrap();
        err(g.reshape(x, &[(1 << 62) + 1, 2, (1 << 62) + 3]))
    }),
    ("`g.input(\"x\", [1 << 32, 1 << 32])`", || {
        err(Graph::new().input("x", [1usize << 32, 1 << 32]))
    }),
    ("`Tensor::from_vec([1 << 32, 1 << 32], vec![])`", || {
        err(Tensor::from_vec([1usize << 32, 1 << 32], vec![]))
    }),
    ("`relu` of an input `[1 << 46]` (256 TiB), compiled", || {
        let mut g = Graph::new();
        let x = g.input("x", [1usize << 46]).unwrap();
        let y = g.relu(x).unwrap();
        err(kiln::compile(&g, &[y], &kiln::CompileOptions::default()))
    }),
    ("`g.param(\"w\", [1 << 46], Init::Zeros)`", || {
        err(Graph::new().param("w", [1usize << 46], kiln::Init::Zeros))
    }),
    ("`pad(x, &[(1 << 46, 0)], 0.0)` on `[2]`, compiled", || {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        let y = g.pad(x, &[(1 << 46, 0)], 0.0).unwrap();
        err(kiln::compile(&g, &[y], &kiln::CompileOptions::default()))
    }),
    ("`Tensor::try_full([1 << 46], 0.0)`", || err(Tensor::try_full([1usize << 46], 0.0))),
    ("`MaxPool2d(2)` on `[0.5, NaN, 0.25, NaN]` as `[1, 1, 2, 2]`, gradient of the sum", || {
        let x = t(&[1, 1, 2, 2], &[0.5, f32::NAN, 0.25, f32::NAN]);
        // PyTorch takes a value when it is greater or NaN: the last NaN wins
        value(&max_pool_grad(x, [2, 2], 1.0), &[0., 0., 0., 1.])
    }),
    ("`MaxPool2d(2)` on an all-NaN window, gradient of the sum", || {
        let x = t(&[1, 1, 2, 2], &[f32::NAN; 4]);
        value(&max_pool_grad(x, [2, 2], 1.0), &[0., 0., 0., 1.])
    }),
    ("`MaxPool2d` kernel `[1, 2]` on `[1, 5]`, loss = sum(y · NaN)", || {
        let x = t(&[1, 1, 1, 2], &[1., 5.]);
        // only the argmax receives the (NaN) gradient, as PyTorch's scatter
        value(&max_pool_grad(x, [1, 2], f32::NAN), &[0., f32::NAN])
    }),
    ("`max(x, [1])` of `[[0.0, -0.0], [-0.0, 0.0]]` and of a row of 12 with −0.0 at 1 and 0.0 at 8", || {
        let mut g = Graph::new();
        let x = g.input("x", [2, 2]).unwrap();
        let m = g.max(x, &[1], false).unwrap();
        let r = both(&g, &[m], &[("x", &t(&[2, 2], &[0.0, -0.0, -0.0, 0.0]))]).remove(0);
        let mut g2 = Graph::new();
        let y = g2.input("x", [12]).unwrap();
        let m2 = g2.max(y, &[0], false).unwrap();
        let mut row = vec![-1.0f32; 12];
        (row[1], row[8]) = (-0.0, 0.0);
        let r2 = both(&g2, &[m2], &[("x", &t(&[12], &row))]).remove(0);
        // the first of equal maxima, as max pooling keeps it
        format!("{} and {}", value(&r, &[0.0, -0.0]), value(&r2, &[-0.0]))
    }),
    ("`relu` on `[-1, 2]`, loss = sum(relu(x) · NaN)", || {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        let r = g.relu(x).unwrap();
        let s = g.mul_scalar(r, f32::NAN).unwrap();
        let l = g.sum_all(s).unwrap();
        let dx = g.grad(l, &[x]).unwrap()[0];
        // PyTorch's threshold_backward: where(y <= 0, 0, gy)
        value(&both(&g, &[dx], &[("x", &t(&[2], &[-1., 2.]))])[0], &[0., f32::NAN])
    }),
    ("`1 / (x + 0.0)` with x = -0.0", || recip_of(|g, x| g.add_scalar(x, 0.0))),
    ("`1 / (0.0 + x)` with x = -0.0", || {
        recip_of(|g, x| {
            let z = g.scalar(0.0)?;
            g.add(z, x)
        })
    }),
    ("`1 / (x - (-0.0))` with x = -0.0", || {
        recip_of(|g, x| {
            let z = g.scalar(-0.0)?;
            g.sub(x, z)
        })
    }),
    ("`1 / (x + (-0.0))` with x = -0.0 (−0.0 is +'s identity: removed)", || {
        recip_of(|g, x| g.add_scalar(x, -0.0))
    }),
    ("`Sgd::new(0.1).momentum(0.5).dampening(0.3)`, w = [1], loss = sum(w), three steps", || {
        let w = three_steps(Sgd::new(0.1).momentum(0.5).dampening(0.3));
        let want = [0.9f32, 0.78, 0.65];
        assert!(w.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{w:?}");
        format!("{w:?} (PyTorch: [0.9, 0.78, 0.65])")
    }),
    ("`Sgd::new(0.1).weight_decay(f32::NAN)`", || {
        err(trainer_with(Sgd::new(0.1).weight_decay(f32::NAN)).map(|_| ()))
    }),
    ("`Sgd::new(0.1).momentum(0.9).dampening(f32::NAN)`", || {
        err(trainer_with(Sgd::new(0.1).momentum(0.9).dampening(f32::NAN)).map(|_| ()))
    }),
    ("`Adam::new(0.1).eps(f32::NAN)`", || {
        err(trainer_with(Adam::new(0.1).eps(f32::NAN)).map(|_| ()))
    }),
    ("`trainer.set_learning_rate(-1.0)`", || {
        err(trainer_with(Sgd::new(0.1)).unwrap().set_learning_rate(-1.0).map(|_| ()))
    }),
    ("`CompileOptions { threads: Some(100_000), .. }`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1]).unwrap();
        let o = CompileOptions {
            threads: Some(100_000),
            ..CompileOptions::default()
        };
        err(compile(&g, &[x], &o))
    }),
    ("`Op::Conv` with a 0-D window: its name, then `add_op`", || {
        let op = Op::Conv(Conv {
            window: Window::new(&[]),
            groups: 1,
            residual: false,
            epilogue: vec![],
        });
        let mut g = Graph::new();
        let (x, w) = (g.input("x", [1, 1]).unwrap(), g.input("w", [1, 1]).unwrap());
        format!("`{}`; {}", op.name(), err(g.add_op(op.clone(), &[x, w])))
    }),
    ("a serialized tensor whose data does not fill its shape, deserialized", || {
        let r: Result<Tensor, _> = serde_json::from_str(r#"{"shape":[4294967296,4294967296],"data":[]}"#);
        format!("`Err`: {}", r.expect_err("refused"))
    }),
    ("`verify` after a pass that turns NaN outputs (`sqrt(x) · 0`, x < 0) into 0", || {
        let mut g = Graph::new();
        let x = g.input("x", [64]).unwrap();
        let s = g.sqrt(x).unwrap();
        let y = g.mul_scalar(s, 0.0).unwrap();
        let program = Program {
            graph: g,
            outputs: vec![y],
            updates: vec![],
        };
        let pipeline = kiln::passes::PassManager::from_passes(vec![Box::new(Zeroes)]);
        let options = CompileOptions {
            verify: true,
            threads: Some(1),
            ..CompileOptions::default()
        };
        err(kiln::compile::optimize_with(program, &pipeline, &options).map(|_| ()))
    }),
    ("`weights::save(path, &[(\"w\", t), (\"w\", t)])`", || {
        let p = std::env::temp_dir().join(format!("kiln-bad-{}.safetensors", std::process::id()));
        let w = ("w".to_string(), Tensor::zeros([1]));
        let m = err(kiln::weights::save(&p, &[w.clone(), w]));
        m.replace(&p.display().to_string(), "PATH")
    }),
    ("`slice(x, 0, 0, 2, 0)` (step 0) on `[2]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        err(g.slice(x, 0, 0, 2, 0))
    }),
    ("`Conv2d::new(4, 4, 3).groups(3)` on `[1, 4, 5, 5]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 4, 5, 5]).unwrap();
        err(nn::Conv2d::new(4, 4, 3).groups(3).build(&mut g, x))
    }),
    ("`MaxPool2d::new(7)` on `[1, 1, 5, 5]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 5, 5]).unwrap();
        err(nn::MaxPool2d::new(7).build(&mut g, x))
    }),
    ("`dropout(x, 1.5, seed)`", || {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        err(g.dropout(x, 1.5, 0))
    }),
    ("`transpose(x, &[0, 0])` on `[2, 3]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [2, 3]).unwrap();
        err(g.transpose(x, &[0, 0]))
    }),
    ("`unfold` with stride `usize::MAX` (one window) on `[1, 1, 3, 3]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 3, 3]).unwrap();
        let w = Window {
            kernel: vec![2, 2],
            stride: vec![usize::MAX; 2],
            padding: vec![0, 0],
            dilation: vec![1, 1],
        };
        err(g.unfold(x, w))
    }),
    ("`Conv2d::new(1, 1, 2).stride(1 << 63)` on `[1, 1, 3, 3]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 3, 3]).unwrap();
        err(nn::Conv2d::new(1, 1, 2).stride(1 << 63).build(&mut g, x))
    }),
    ("`MaxPool2d::new(2).stride(1 << 63).padding(1).dilation(2)` on `[1, 1, 3, 3]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 3, 3]).unwrap();
        err(nn::MaxPool2d::new(2).stride(1 << 63).padding(1).dilation(2).build(&mut g, x))
    }),
    ("`Conv2d::new(1, 1, 1).stride(1 << 60).padding(1 << 40)` on `[1, 1, 1, 1]` (the fused kernel's padded planes cannot exist)", || {
        let mut g = Graph::with_seed(4);
        let x = g.input("x", [1, 1, 1, 1]).unwrap();
        let y = nn::Conv2d::new(1, 1, 1).stride(1 << 60).padding(1 << 40).name("c").build(&mut g, x).unwrap();
        let r = both(&g, &[y], &[("x", &Tensor::full([1, 1, 1, 1], 5.0))]).remove(0);
        // the one window lies in the padding: the output is the bias
        let b = g.param_value("c.bias").unwrap().data()[0];
        value(&r, &[b]);
        format!("shape {:?}, the bias (the pass keeps the generic form)", r.shape())
    }),
    ("`Op::AvgPool` (real-cell divisor), kernel 2^31, pads 2^30, stride 1, on `[1, 2, 3, 4]` as `[1, 1, 2, 2]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 1, 2, 2]).unwrap();
        let big = 1usize << 31;
        let op = Op::AvgPool(AvgPool {
            window: kiln::ops::PoolWindow {
                kernel: vec![big, big],
                stride: vec![1, 1],
                dilation: vec![1, 1],
                pads: vec![(big / 2, big / 2); 2],
            },
            divisor: kiln::ops::AvgDivisor::RealCells,
        });
        let y = g.add_op(op, &[x]).unwrap();
        let r = both(&g, &[y], &[("x", &t(&[1, 1, 2, 2], &[1., 2., 3., 4.]))]).remove(0);
        // each of the 3x3 windows holds all four cells (edge windows are
        // clipped in closed form, not walked tap by tap)
        value(&r, &[2.5; 9])
    }),
    ("`softmax(x, 1)` of `[2, 0]`", || {
        let mut g = Graph::new();
        let x = g.input("x", [2, 0]).unwrap();
        let y = nn::softmax(&mut g, x, 1).unwrap();
        let r = both(&g, &[y], &[("x", &Tensor::zeros([2, 0]))]).remove(0);
        format!("an empty result of shape {:?} (as PyTorch)", r.shape())
    }),
    ("`Conv2d::new(0, 2, 3)`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 0, 5, 5]).unwrap();
        err(nn::Conv2d::new(0, 2, 3).build(&mut g, x))
    }),
    ("updates `[(a, b), (b, a)]` (a swap), a = [0], b = [1]: a, b after one run", || {
        let mut g = Graph::new();
        let a = g.param("a", [1], kiln::Init::Constant(0.0)).unwrap();
        let b = g.param("b", [1], kiln::Init::Constant(1.0)).unwrap();
        let s = g.add(a, b).unwrap();
        // every update reads the values of the run, none another's new value
        let r = with_updates(&g, &[s], &[(a, b), (b, a)], &["a", "b"]);
        assert_eq!(r[1..], [vec![1.0], vec![0.0]]);
        format!("a = {:?}, b = {:?}", r[1], r[2])
    }),
    ("updates `[(b, c), (a, stop_gradient(b))]`, a = [0], b = [1], c = [2]: a, b after one run", || {
        let mut g = Graph::new();
        let a = g.param("a", [1], kiln::Init::Constant(0.0)).unwrap();
        let b = g.param("b", [1], kiln::Init::Constant(1.0)).unwrap();
        let c = g.param("c", [1], kiln::Init::Constant(2.0)).unwrap();
        let sb = g.stop_gradient(b).unwrap();
        let s = g.add(a, c).unwrap();
        let r = with_updates(&g, &[s], &[(b, c), (a, sb)], &["a", "b"]);
        assert_eq!(r[1..], [vec![1.0], vec![2.0]]);
        format!("a = {:?}, b = {:?}", r[1], r[2])
    }),
    ("outputs `[w, stop_gradient(w)]` with the update `(w, w + 1)`, w = [1]", || {
        let mut g = Graph::new();
        let w = g.param("w", [1], kiln::Init::Constant(1.0)).unwrap();
        let sw = g.stop_gradient(w).unwrap();
        let w1 = g.add_scalar(w, 1.0).unwrap();
        // a run returns the values it read
        let r = with_updates(&g, &[w, sw], &[(w, w1)], &["w"]);
        assert_eq!(r, [vec![1.0], vec![1.0], vec![2.0]]);
        format!("outputs {:?}, {:?}; w after the run {:?}", r[0], r[1], r[2])
    }),
    ("updates `[(a, a + 1), (a, a · 10)]`", || {
        let mut g = Graph::new();
        let a = g.param("a", [1], kiln::Init::Zeros).unwrap();
        let (x, y) = (g.add_scalar(a, 1.0).unwrap(), g.mul_scalar(a, 10.0).unwrap());
        err(kiln::compile_program(kiln::Program { graph: g.clone(), outputs: [x].to_vec(), updates: [(a, x), (a, y)].to_vec() }, &CompileOptions::default()).map(|_| ()))
    }),
    ("`dropout(x, 0.5, 1)` in training mode on `[NaN, -3, ∞, 2] × 4`: the dropped cells", || {
        let mut g = Graph::new();
        let x = g.input("x", [16]).unwrap();
        let y = g.dropout(x, 0.5, 1).unwrap();
        let xs: Vec<f32> = [f32::NAN, -3.0, f32::INFINITY, 2.0].repeat(4);
        let training = kiln::CompileOptions { training: true, ..Default::default() };
        let mut exe = kiln::compile(&g, &[y], &training).unwrap();
        let out = exe.run(&[("x", &t(&[16], &xs))]).unwrap().remove(0);
        // PyTorch's input · noise: NaN·0 and ∞·0 are NaN, −3·0 is −0.0
        let dropped: Vec<(f32, f32)> = xs
            .iter()
            .zip(out.data())
            .filter(|(&v, &o)| o.to_bits() != (v * 2.0).to_bits() && !(v.is_nan() && o.is_nan()))
            .map(|(&v, &o)| (v, o))
            .collect();
        for &(v, o) in &dropped {
            assert_eq!(o.to_bits(), (v * 0.0).to_bits(), "{v} dropped to {o}");
        }
        let kinds: std::collections::BTreeSet<String> = dropped.iter().map(|&(_, o)| format!("{o:?}")).collect();
        format!("each is x · 0: {}", kinds.into_iter().collect::<Vec<_>>().join(", "))
    }),
    ("`to_text(&g, &[a node of another graph])`", || {
        let mut other = Graph::new();
        let mut far = other.input("a", [1]).unwrap();
        for _ in 0..5 {
            far = other.neg(far).unwrap();
        }
        let mut g = Graph::new();
        let x = g.input("x", [1]).unwrap();
        let text = kiln::graph::dump::to_text(&g, &[x, far]);
        let m = err(kiln::graph::dump::dump(&g, &[far], kiln::DumpFormat::Text));
        format!("`{}`; `dump` gives {m}", text.lines().last().unwrap())
    }),
    ("`CompileOptions { dump_dir: Some(\"\".into()), .. }`", || {
        let mut g = Graph::new();
        let x = g.input("x", [1]).unwrap();
        let o = CompileOptions {
            dump_dir: Some("".into()),
            ..CompileOptions::default()
        };
        err(compile(&g, &[x], &o).map(|_| ()))
    }),
    ("a 30,000-op element-wise chain, compiled", || {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        let mut h = x;
        for _ in 0..30_000 {
            h = g.neg(h).unwrap();
        }
        let r = both(&g, &[h], &[("x", &t(&[2], &[1.5, -0.0]))]).remove(0);
        value(&r, &[1.5, -0.0]);
        "[1.5, -0.0] (it overflowed the stack)".to_string()
    }),
    ("`run` with a wrongly shaped feed for an input the outputs do not need", || {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        g.input("unused", [3]).unwrap();
        let y = g.relu(x).unwrap();
        let mut exe = kiln::compile(&g, &[y], &kiln::CompileOptions::default()).unwrap();
        err(exe.run(&[("x", &Tensor::zeros([2])), ("unused", &Tensor::zeros([2]))]))
    }),
    ("`BatchNorm1d::new(3)` on `[1, 3]`, compiled for training", || {
        let mut g = Graph::new();
        let x = g.input("x", [1, 3]).unwrap();
        let y = kiln::nn::BatchNorm1d::new(3).name("bn").build(&mut g, x).unwrap();
        let training = kiln::CompileOptions { training: true, ..Default::default() };
        err(kiln::compile(&g, &[y], &training))
    }),
    ("`g.update_state(w, v)` with `w` a trainable parameter", || {
        let mut g = Graph::new();
        let w = g.param("w", [2], kiln::Init::Zeros).unwrap();
        let v = g.add_scalar(w, 1.0).unwrap();
        err(g.update_state(w, v))
    }),
    ("`g.train_eval(a, b)` with a `[2]` and b `[3]`", || {
        let mut g = Graph::new();
        let a = g.input("a", [2]).unwrap();
        let b = g.input("b", [3]).unwrap();
        err(g.train_eval(a, b))
    }),
    ("`Embedding::new(5, 2)` on `i64` ids [[1, 5]]", || {
        let mut g = Graph::new();
        let ids = g.input_i64("ids", [1, 2]).unwrap();
        let y = kiln::nn::Embedding::new(5, 2).build(&mut g, ids).unwrap();
        let mut exe = kiln::compile(&g, &[y], &CompileOptions::default()).unwrap();
        err(exe.run(&[("ids", &I64Tensor::from_vec([1, 2], vec![1, 5]).unwrap())]))
    }),
    ("`softmax_cross_entropy` over 3 classes, labels [2, -1]", || {
        let mut g = Graph::new();
        let x = g.input("x", [2, 3]).unwrap();
        let y = g.input_i64("y", [2]).unwrap();
        let l = kiln::nn::softmax_cross_entropy(&mut g, x, y, kiln::nn::Reduction::Mean).unwrap();
        let mut exe = kiln::compile(&g, &[l], &CompileOptions::default()).unwrap();
        err(exe.run(&[("x", &Tensor::zeros([2, 3])), ("y", &I64Tensor::from(vec![2, -1]))]))
    }),
    ("`softmax_cross_entropy` with f32 labels", || {
        let mut g = Graph::new();
        let x = g.input("x", [2, 3]).unwrap();
        let y = g.input("y", [2]).unwrap();
        err(kiln::nn::softmax_cross_entropy(&mut g, x, y, kiln::nn::Reduction::Mean))
    }),
    ("`g.add(ids, ids)` with `ids` an `i64` input", || {
        let mut g = Graph::new();
        let ids = g.input_i64("ids", [2]).unwrap();
        err(g.add(ids, ids))
    }),
    ("a `Tensor` fed to an `i64` input", || {
        let mut g = Graph::new();
        let ids = g.input_i64("ids", [2]).unwrap();
        let y = g.to_f32(ids).unwrap();
        let mut exe = kiln::compile(&g, &[y], &CompileOptions::default()).unwrap();
        err(exe.run(&[("ids", &Tensor::zeros([2]))]))
    }),
    ("`Embedding::new(4, 2).padding_idx(4)`", || {
        let mut g = Graph::new();
        let ids = g.input_i64("ids", [2]).unwrap();
        err(kiln::nn::Embedding::new(4, 2).padding_idx(4).build(&mut g, ids))
    }),
    ("`g.one_hot(y, 1 << 25, None)`", || {
        let mut g = Graph::new();
        let y = g.input_i64("y", [2]).unwrap();
        err(g.one_hot(y, 1 << 25, None))
    }),
    ("`run` with a feed of the wrong shape", || {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        let y = g.relu(x).unwrap();
        err(kiln::compile(&g, &[y], &kiln::CompileOptions::default()).unwrap().run(&[("x", &Tensor::zeros([3]))]))
    }),
];

/// The table as README.md shows it.
fn table() -> String {
    let mut s = String::from("| input | kiln's answer |\n|---|---|\n");
    for (input, answer) in CASES {
        let a = answer().replace('|', "\\|").replace('\n', " ");
        s.push_str(&format!("| {input} | {a} |\n"));
    }
    s
}

#[test]
fn readme_bad_input_table_is_what_kiln_answers() {
    assert!(CASES.len() >= 40, "{} rows", CASES.len());
    let want = table();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&want),
        "README.md's bad-input table differs from what kiln answers; it should read:\n{want}"
    );
}
