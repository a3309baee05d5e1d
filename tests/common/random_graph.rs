//! Random graphs through the compiler, shared by the `graph_ops` fuzz target
//! (`fuzz/`) and the seeded run in `tests/random_graphs.rs`: 1–3 inputs of
//! small random shapes, then up to 12 ops from the public `Graph` builder and
//! the conv/pool layers, operands drawn from earlier nodes (one node may be
//! both operands). Ops that return `Err` are skipped, as are nodes over
//! `MAX_ELEMS` elements. Optionally the gradient of `sum_all(last)` w.r.t.
//! the inputs is added. The graph is compiled with every pass and
//! unrewritten (one thread each), both are run on the same seeded inputs
//! (with NaN, ±0, ±inf sometimes), and their outputs must agree: same
//! shapes, and values equal, both NaN, or within `1e-3 · (1 + |b|)`. The
//! compiled executable is run a second time and must repeat itself. A
//! mismatch panics with the graph's text dump.
use arbitrary::{Result, Unstructured};
use kiln::compile;
use kiln::graph::dump::to_text;
use kiln::graph::order::ancestors_order;
use kiln::nn::{AvgPool2d, Conv, Layer, MaxPool2d};
use kiln::OpBuilder;
use kiln::{CompileOptions, Feed, Graph, I64Tensor, NodeId, PassSelection, Tensor, Window};

/// How many graphs reached the comparison (with how many nodes in all), so
/// a seeded run can show that it tested real graphs.
pub static COMPARED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Graphs counted in [`COMPARED`] whose outputs read the `i64` input.
pub static COMPARED_INDEXED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);
/// Nodes of the graphs counted in [`COMPARED`].
pub static COMPARED_NODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The most elements a node used as an operand (or output) may have.
const MAX_ELEMS: usize = 4096;
/// The most elements any node the outputs depend on may have (layers build
/// intermediate nodes, e.g. unfold, larger than their output).
const MAX_INNER_ELEMS: usize = 1 << 16;

const SPECIALS: [f32; 8] = [
    f32::NAN,
    -0.0,
    0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    1.0,
    -1.0,
    f32::MIN_POSITIVE,
];

fn numel(g: &Graph, id: NodeId) -> usize {
    g.shape(id)
        .map(|s| {
            s.iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .unwrap_or(usize::MAX)
        })
        .unwrap_or(usize::MAX)
}

fn pick(u: &mut Unstructured, pool: &[NodeId]) -> Result<NodeId> {
    Ok(pool[u.choose_index(pool.len())?])
}

fn scalar(u: &mut Unstructured) -> Result<f32> {
    Ok(if u.ratio(1, 3)? {
        *u.choose(&SPECIALS)?
    } else {
        u.int_in_range(-8i8..=8)? as f32 * 0.5
    })
}

fn dims(u: &mut Unstructured, max_rank: usize, max_dim: usize) -> Result<Vec<usize>> {
    let rank = u.int_in_range(0..=max_rank)?;
    (0..rank).map(|_| u.int_in_range(0..=max_dim)).collect()
}

fn axis(u: &mut Unstructured) -> Result<isize> {
    u.int_in_range(-5isize..=4)
}

fn window(u: &mut Unstructured) -> Result<Window> {
    let rank = if u.ratio(1, 16)? {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(1..=2)?
    };
    let mut v = |lo: usize, hi: usize| -> Result<Vec<usize>> {
        (0..rank).map(|_| u.int_in_range(lo..=hi)).collect()
    };
    Ok(Window {
        kernel: v(0, 3)?,
        stride: v(0, 3)?,
        padding: v(0, 2)?,
        dilation: v(0, 2)?,
    })
}

/// A random `D`-d convolution layer (channels from `x` when it fits) on `x`.
fn conv<const D: usize>(
    u: &mut Unstructured,
    g: &mut Graph,
    x: NodeId,
    xs: &[usize],
) -> Result<kiln::Result<NodeId>> {
    let cin = if xs.len() == D + 2 && xs[1] > 0 {
        xs[1]
    } else {
        u.int_in_range(1..=3)?
    };
    let groups = u.int_in_range(1..=cin)?;
    let cout = groups * u.int_in_range(1..=2)?;
    Ok(Conv::<D>::new(cin, cout, 1)
        .kernel(arr(u, 1, 3)?)
        .strides(arr(u, 0, 2)?)
        .paddings(arr(u, 0, 2)?)
        .dilation(u.int_in_range(1..=2)?)
        .groups(groups)
        .bias(u.arbitrary()?)
        .build(g, x))
}

fn arr<const D: usize>(u: &mut Unstructured, lo: usize, hi: usize) -> Result<[usize; D]> {
    let mut a = [0; D];
    for x in &mut a {
        *x = u.int_in_range(lo..=hi)?;
    }
    Ok(a)
}

/// One op on nodes of `pool`; `Ok(None)` when the builder said `Err`.
fn one_op(
    u: &mut Unstructured,
    g: &mut Graph,
    pool: &[NodeId],
    ids: Option<NodeId>,
) -> Result<Option<NodeId>> {
    let x = pick(u, pool)?;
    let xs = g.shape(x).expect("pool node").to_vec();
    if let Some(ids) = ids.filter(|_| u.ratio(1, 5).unwrap_or(false)) {
        let r = if u.arbitrary()? {
            g.gather(x, ids, axis(u)?)
        } else {
            let ignore = [None, Some(-100), Some(1)][u.int_in_range(0..=2usize)?];
            g.one_hot(ids, u.int_in_range(1..=4)?, ignore)
        };
        return Ok(r.ok());
    }
    let r = match u.int_in_range(0u8..=54)? {
        0 => g.neg(x),
        1 => g.exp(x),
        2 => g.log(x),
        3 => g.sqrt(x),
        4 => g.recip(x),
        5 => g.relu(x),
        6 => g.sigmoid(x),
        7 => g.tanh(x),
        8 => g.abs(x),
        k @ 9..=20 => {
            let y = pick(u, pool)?;
            match k {
                9 => g.add(x, y),
                10 => g.sub(x, y),
                11 => g.mul(x, y),
                12 => g.div(x, y),
                13 => g.maximum(x, y),
                14 => g.minimum(x, y),
                15 => g.eq(x, y),
                16 => g.ne(x, y),
                17 => g.lt(x, y),
                18 => g.le(x, y),
                19 => g.gt(x, y),
                _ => g.ge(x, y),
            }
        }
        21 => {
            let (a, b) = (pick(u, pool)?, pick(u, pool)?);
            g.select(x, a, b)
        }
        k @ 22..=24 => {
            let n = u.int_in_range(0..=xs.len() + 1)?;
            let axes = (0..n).map(|_| axis(u)).collect::<Result<Vec<_>>>()?;
            let keep = u.arbitrary()?;
            match k {
                22 => g.sum(x, &axes, keep),
                23 => g.mean(x, &axes, keep),
                _ => g.max(x, &axes, keep),
            }
        }
        25 => g.sum_all(x),
        26 => g.first_max_mask(x, axis(u)?),
        27 => {
            let shape: Vec<isize> = match u.int_in_range(0u8..=3)? {
                0 => vec![-1],
                1 => {
                    let mut s: Vec<isize> = xs.iter().map(|&d| d as isize).collect();
                    let at = u.int_in_range(0..=s.len())?;
                    s.insert(at, 1);
                    s
                }
                2 => {
                    let mut s: Vec<isize> = xs.iter().map(|&d| d as isize).collect();
                    if s.len() >= 2 {
                        let at = u.int_in_range(0..=s.len() - 2)?;
                        let merged = s[at] * s[at + 1];
                        s.splice(at..at + 2, [merged]);
                    }
                    s
                }
                _ => {
                    let n = u.int_in_range(0..=4)?;
                    (0..n)
                        .map(|_| u.int_in_range(-2isize..=6))
                        .collect::<Result<_>>()?
                }
            };
            g.reshape(x, &shape)
        }
        28 => {
            let mut perm: Vec<usize> = (0..xs.len()).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, u.int_in_range(0..=i)?);
            }
            if u.ratio(1, 16)? {
                perm = dims(u, 5, 5)?;
            }
            g.transpose(x, &perm)
        }
        29 => {
            let mut shape = Vec::new();
            for _ in 0..u.int_in_range(0..=1usize)? {
                shape.push(u.int_in_range(0..=4)?);
            }
            for &d in &xs {
                shape.push(if d == 1 && u.arbitrary()? {
                    u.int_in_range(0..=5)?
                } else {
                    d
                });
            }
            if u.ratio(1, 16)? {
                shape = dims(u, 5, 5)?;
            }
            g.broadcast_to(x, &shape)
        }
        30 => {
            let ax = axis(u)?;
            let (start, end, step) = (
                u.int_in_range(0..=6)?,
                u.int_in_range(0..=6)?,
                u.int_in_range(0..=3)?,
            );
            g.slice(x, ax, start, end, step)
        }
        31 => {
            let n = if u.ratio(1, 16)? {
                u.int_in_range(0..=5)?
            } else {
                xs.len()
            };
            let pads = (0..n)
                .map(|_| Ok((u.int_in_range(0..=2)?, u.int_in_range(0..=2)?)))
                .collect::<Result<Vec<_>>>()?;
            g.pad(x, &pads, scalar(u)?)
        }
        k @ 32..=33 => {
            let mut xs = vec![x];
            for _ in 0..u.int_in_range(0..=2)? {
                xs.push(pick(u, pool)?);
            }
            let ax = axis(u)?;
            if k == 32 {
                g.concat(&xs, ax)
            } else {
                g.stack(&xs, ax)
            }
        }
        34 => g.unfold(x, window(u)?),
        35 => {
            let w = window(u)?;
            let n = u.int_in_range(0..=3)?;
            let spatial = (0..n)
                .map(|_| u.int_in_range(0..=6))
                .collect::<Result<Vec<_>>>()?;
            g.fold(x, w, &spatial)
        }
        36 => {
            let y = pick(u, pool)?;
            g.matmul(x, y)
        }
        37 => {
            let y = pick(u, pool)?;
            let (ta, tb) = (u.arbitrary()?, u.arbitrary()?);
            g.matmul_t(x, y, ta, tb)
        }
        38 => conv::<1>(u, g, x, &xs)?,
        39 => conv::<2>(u, g, x, &xs)?,
        40 => {
            let mut p = MaxPool2d::new(1)
                .kernel(arr(u, 0, 3)?)
                .paddings(arr(u, 0, 2)?)
                .dilation(u.int_in_range(0..=2)?)
                .ceil_mode(u.arbitrary()?);
            if u.arbitrary()? {
                p = p.strides(arr(u, 0, 3)?);
            }
            p.build(g, x)
        }
        41 => {
            let mut p = AvgPool2d::new(1)
                .kernel(arr(u, 0, 3)?)
                .paddings(arr(u, 0, 2)?)
                .ceil_mode(u.arbitrary()?)
                .count_include_pad(u.arbitrary()?);
            if u.arbitrary()? {
                p = p.strides(arr(u, 0, 3)?);
            }
            p.build(g, x)
        }
        42 => {
            let c = scalar(u)?;
            if u.arbitrary()? {
                g.add_scalar(x, c)
            } else {
                g.mul_scalar(x, c)
            }
        }
        43 => g.stop_gradient(x),
        44 => g.erf(x),
        45 => g.gelu(x),
        46 => g.gelu_tanh(x),
        47 => g.silu(x),
        48 => {
            // a mode switch between two nodes of x's shape
            let same: Vec<NodeId> = pool
                .iter()
                .copied()
                .filter(|&n| g.shape(n).is_ok_and(|s| s == xs))
                .collect();
            let y = pick(u, &same)?;
            g.train_eval(x, y)
        }
        49 if u.arbitrary()? => g.log_softmax(x, axis(u)?),
        49 => g.softmax(x, axis(u)?),
        50 => {
            let y = pick(u, pool)?;
            let rank = xs.len().max(1);
            g.softmax_backward(x, y, u.int_in_range(0..=rank)?, u.arbitrary()?)
        }
        51 => {
            let eps = [1e-5, 0.0, 1.0][u.int_in_range(0..=2usize)?];
            match u.int_in_range(0..=2u8)? {
                // per channel of [N, C, *], as BatchNorm in training
                0 => g.add_op(
                    kiln::Op::Normalize(kiln::ops::Normalize {
                        eps,
                        channels: true,
                    }),
                    &[x],
                ),
                1 => g.add_op(kiln::Op::ChannelMoments(kiln::ops::ChannelMoments), &[x]),
                _ => g.normalize(x, eps),
            }
        }
        52 => {
            let y = pick(u, pool)?;
            let eps = [1e-5, 0.0][u.int_in_range(0..=1usize)?];
            let channels = u.arbitrary()?;
            let op = kiln::ops::NormalizeBackward { eps, channels };
            g.add_op(kiln::Op::NormalizeBackward(op), &[x, y])
        }
        53 => {
            // self-attention over x (evaluation graphs fuse its core)
            use kiln::nn::{scaled_dot_product_attention, Mask, Sdpa};
            let mask = match u.int_in_range(0..=3u8)? {
                0 => None,
                1 => Some(Mask::Allow(pick(u, pool)?)),
                2 => Some(Mask::Block(pick(u, pool)?)),
                _ => Some(Mask::Add(pick(u, pool)?)),
            };
            // a float mask broadcast along the keys gets the sum of a
            // softmax gradient's row, 0 in exact arithmetic: pure rounding,
            // which no tolerance on the result can compare
            if let (Some(Mask::Add(m)), Some(&keys)) =
                (mask, xs.len().checked_sub(2).and_then(|i| xs.get(i)))
            {
                if g.shape(m).expect("pool node").last() != Some(&keys) {
                    return Ok(None);
                }
            }
            let options = Sdpa {
                attn_mask: mask,
                is_causal: mask.is_none() && u.arbitrary()?,
                scale: u.arbitrary::<bool>()?.then_some(0.5),
                ..Sdpa::default()
            };
            scaled_dot_product_attention(g, x, x, x, &options)
        }
        _ => {
            let slope = [0.01, 0.0, -0.5, 1.0, f32::NAN][u.int_in_range(0..=4usize)?];
            g.leaky_relu(x, slope)
        }
    };
    Ok(r.ok())
}

/// Seeded input values: uniform in [-2, 2], with specials mixed in when `specials`.
fn values(shape: &[usize], seed: u64, specials: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed | 1;
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if specials && s % 5 == 0 {
                SPECIALS[(s >> 8) as usize % SPECIALS.len()]
            } else {
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            }
        })
        .collect();
    Tensor::from_vec(shape.to_vec(), data).expect("input tensor")
}

fn close(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-3 * (1.0 + b.abs())
}

/// Panics, with the graph dump, at the first difference of `got` from `want`.
fn compare(
    what: &str,
    g: &Graph,
    outs: &[NodeId],
    feeds: &[(&str, &dyn Feed)],
    got: &[Tensor],
    want: &[Tensor],
) {
    // the graph and its inputs' values: enough to rebuild the failing case
    let dump = || format!("{}inputs: {feeds:?}", to_text(g, outs));
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} outputs vs {}\n{}",
        got.len(),
        want.len(),
        dump()
    );
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            a.shape(),
            b.shape(),
            "{what}: output {i} has shape {:?} vs {:?}\n{}",
            a.shape(),
            b.shape(),
            dump()
        );
        if let Some(j) = (0..a.numel()).find(|&j| !close(a.data()[j], b.data()[j])) {
            panic!(
                "{what}: output {i} differs at flat index {j}: {} vs {}\n{}",
                a.data()[j],
                b.data()[j],
                dump()
            );
        }
    }
}

/// Builds one random graph from `u`, compiles it with every pass and
/// unrewritten (both for training or both for evaluation), runs both and panics (with the graph's dump) if they differ.
pub fn check(u: &mut Unstructured) -> Result<()> {
    let mut g = Graph::with_seed(u.arbitrary()?);
    let mut pool = Vec::new();
    let mut inputs = Vec::new();
    for i in 0..u.int_in_range(1..=3)? {
        let shape = dims(u, 4, 5)?;
        let id = g
            .input(&format!("x{i}"), shape.clone())
            .expect("input node");
        pool.push(id);
        inputs.push((format!("x{i}"), shape, id));
    }
    // an i64 input read by gather and one_hot, its values in 0..=2 (and
    // sometimes −100): out of range for some ops, when both runs must refuse
    let ids = if u.arbitrary()? {
        let shape = dims(u, 2, 3)?;
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|_| Ok([0, 1, 0, 1, 2, -100][u.int_in_range(0..=5usize)?]))
            .collect::<Result<Vec<i64>>>()?;
        let id = g.input_i64("ids", shape.clone()).expect("input node");
        Some((id, I64Tensor::from_vec(shape, values).expect("sized")))
    } else {
        None
    };
    for _ in 0..u.int_in_range(0..=12)? {
        if let Some(id) = one_op(u, &mut g, &pool, ids.as_ref().map(|i| i.0))? {
            if numel(&g, id) <= MAX_ELEMS {
                pool.push(id);
            }
        }
    }
    let last = *pool.last().expect("an input");
    let mut outs = vec![last];
    if u.arbitrary()? {
        let wrt: Vec<NodeId> = inputs.iter().map(|i| i.2).collect();
        if let Ok(loss) = g.sum_all(last) {
            if let Ok(grads) = g.grad(loss, &wrt) {
                outs.push(loss);
                outs.extend(grads);
            }
        }
    }
    if u.arbitrary()? {
        outs.push(pick(u, &pool)?);
    }
    if ancestors_order(&g, &outs)
        .into_iter()
        .any(|n| numel(&g, n) > MAX_INNER_ELEMS)
    {
        return Ok(());
    }

    let all = CompileOptions {
        threads: Some(1),
        training: u.arbitrary()?,
        verify: false,
        dump_dir: None,
        ..CompileOptions::default()
    };
    let none = CompileOptions {
        passes: PassSelection::None,
        ..all.clone()
    };
    let compiled = compile(&g, &outs, &all);
    let plain = compile(&g, &outs, &none);
    let (mut compiled, mut plain) = match (compiled, plain) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(_), Err(_)) => return Ok(()),
        (c, p) => panic!(
            "compiles with all passes: {:?}; unrewritten: {:?}\n{}",
            c.err(),
            p.err(),
            to_text(&g, &outs)
        ),
    };

    let seed: u64 = u.arbitrary()?;
    let specials: bool = u.arbitrary()?;
    let feeds: Vec<(String, Tensor)> = inputs
        .iter()
        .enumerate()
        .map(|(i, (name, shape, _))| {
            (
                name.clone(),
                values(shape, seed.wrapping_add(i as u64), specials),
            )
        })
        .collect();
    let mut feeds: Vec<(&str, &dyn Feed)> = feeds
        .iter()
        .map(|(n, t)| (n.as_str(), t as &dyn Feed))
        .collect();
    if let Some((_, values)) = &ids {
        feeds.push(("ids", values));
    }
    let got = compiled.run(&feeds);
    let want = plain.run(&feeds);
    let (got, want) = match (got, want) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(_), Err(_)) => return Ok(()),
        (a, b) => panic!(
            "runs with all passes: {:?}; unrewritten: {:?}\n{}",
            a.err(),
            b.err(),
            to_text(&g, &outs)
        ),
    };
    compare("all passes vs unrewritten", &g, &outs, &feeds, &got, &want);
    COMPARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    COMPARED_NODES.fetch_add(g.len(), std::sync::atomic::Ordering::Relaxed);
    if let Some((id, _)) = &ids {
        if ancestors_order(&g, &outs).contains(id) {
            COMPARED_INDEXED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let again = compiled
        .run(&feeds)
        .expect("a second run of the compiled graph");
    compare(
        "second compiled run vs first",
        &g,
        &outs,
        &feeds,
        &again,
        &got,
    );
    Ok(())
}
