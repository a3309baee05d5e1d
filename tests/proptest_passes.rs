//! Property test: random small graphs of generic ops compute the same values
//! compiled (all passes) as unrewritten, within `1e-4 · (1 + |x|)`.
//! The recipes favour the patterns the passes rewrite: transposes feeding
//! matmuls, reshape chains, identity constants, duplicate subexpressions and
//! ops on constants.

mod common;
use common::*;
use kiln::compile;
use kiln::OpBuilder;
use kiln::{CompileOptions, Graph, NodeId, Tensor};
use proptest::prelude::*;

/// Builds a graph from a recipe; steps whose shapes do not fit are skipped.
fn build(dims: &[usize], steps: &[(u8, u8, u8, u8)]) -> (Graph, Vec<NodeId>) {
    let mut g = Graph::new();
    let x = g.input("x", dims.to_vec()).unwrap();
    let y = g.input("y", dims.to_vec()).unwrap();
    let mut nodes = vec![x, y];
    for &(kind, a, b, c) in steps {
        let n = nodes[a as usize % nodes.len()];
        let m = nodes[b as usize % nodes.len()];
        let rank = g.shape(n).unwrap().len();
        let swap_last2 = |g: &mut Graph, v: NodeId| {
            let r = g.shape(v)?.len();
            let mut perm: Vec<usize> = (0..r).collect();
            if r >= 2 {
                perm.swap(r - 2, r - 1);
            }
            g.transpose(v, &perm)
        };
        let made = match kind % 12 {
            0 => match c % 6 {
                0 => g.neg(n),
                1 => g.tanh(n),
                2 => g.relu(n),
                3 => g.sigmoid(n),
                4 => g.abs(n),
                _ => g.tanh(n).and_then(|t| g.exp(t)),
            },
            1 => match c % 5 {
                0 => g.add(n, m),
                1 => g.sub(n, m),
                2 => g.mul(n, m),
                3 => g.maximum(n, m),
                _ => g.minimum(n, m),
            },
            2 => {
                if c % 2 == 0 {
                    g.mul_scalar(n, 1.0)
                } else {
                    g.add_scalar(n, 0.0)
                }
            }
            3 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.rotate_left(c as usize % rank.max(1));
                g.transpose(n, &perm).and_then(|t| {
                    if c % 3 == 0 {
                        swap_last2(&mut g, t)
                    } else {
                        Ok(t)
                    }
                })
            }
            4 => g.reshape(n, &[-1]).and_then(|f| {
                let dims: Vec<isize> = g.shape(n)?.iter().map(|&d| d as isize).collect();
                g.reshape(f, &dims)
            }),
            5 => {
                let rev: Vec<isize> = g
                    .shape(n)
                    .unwrap()
                    .iter()
                    .rev()
                    .map(|&d| d as isize)
                    .collect();
                g.reshape(n, &rev)
            }
            6 => g.sum(n, &[(c as usize % rank.max(1)) as isize], c % 2 == 0),
            7 => g.max(n, &[(c as usize % rank.max(1)) as isize], c % 2 == 1),
            8 => swap_last2(&mut g, m).and_then(|mt| g.matmul(n, mt)),
            9 => swap_last2(&mut g, n).and_then(|nt| g.matmul(nt, m)),
            10 => {
                let (e1, e2) = (g.exp(n), g.exp(n));
                e1.and_then(|e1| e2.and_then(|e2| g.add(e1, e2)))
            }
            _ => {
                let f = g.fill(&[1], 2.0).unwrap();
                let folded = g.mul_scalar(f, 0.5).unwrap();
                g.mul(n, folded)
            }
        };
        if let Ok(id) = made {
            nodes.push(id);
        }
    }
    let last = *nodes.last().unwrap();
    let mid = nodes[nodes.len() / 2];
    (g, vec![last, mid])
}

fn run(
    g: &Graph,
    outputs: &[NodeId],
    options: &CompileOptions,
    x: &Tensor,
    y: &Tensor,
) -> Vec<Tensor> {
    compile(g, outputs, options)
        .unwrap()
        .run(&[("x", x), ("y", y)])
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn compiled_equals_unrewritten(
        dims in prop::collection::vec(1usize..4, 2..=3),
        steps in prop::collection::vec((0u8..12, any::<u8>(), any::<u8>(), any::<u8>()), 1..14),
    ) {
        let (g, outputs) = build(&dims, &steps);
        let (x, y) = (rand(&dims, 1), rand(&dims, 2));
        let all = CompileOptions { verify: true, ..CompileOptions::default() };
        let compiled = run(&g, &outputs, &all, &x, &y);
        let plain = run(&g, &outputs, &CompileOptions::unrewritten(), &x, &y);
        for (c, p) in compiled.iter().zip(&plain) {
            prop_assert_eq!(c.shape(), p.shape());
            for (a, b) in c.data().iter().zip(p.data()) {
                prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()) || (a.is_nan() && b.is_nan()) || a == b, "{} vs {}", a, b);
            }
        }
    }
}
