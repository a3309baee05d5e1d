//! A long chain of element-wise ops compiles (no recursion as deep as the
//! chain, which overflowed the stack: a test thread has 2 MiB) into loops of at
//! most a few dozen ops each, with the unrewritten graph's values.

use kiln::compile;
use kiln::OpBuilder;
use kiln::{CompileOptions, Graph, Tensor};

#[test]
fn a_long_elementwise_chain_fuses_in_pieces_with_the_same_values() {
    let mut g = Graph::new();
    let x = g.input("x", [4]).unwrap();
    let mut h = x;
    for i in 0..30_000 {
        h = match i % 3 {
            0 => g.neg(h),
            1 => g.add_scalar(h, 0.5),
            _ => g.mul_scalar(h, 0.999),
        }
        .unwrap();
    }
    let feeds = Tensor::from_vec([4], vec![1.0, -2.0, f32::NAN, -0.0]).unwrap();
    let mut results = vec![];
    for o in [CompileOptions::default(), CompileOptions::unrewritten()] {
        let o = CompileOptions {
            threads: Some(1),
            ..o
        };
        let mut exe = compile(&g, &[h], &o).unwrap();
        results.push((
            exe.num_steps(),
            exe.run(&[("x", &feeds)]).unwrap().remove(0),
        ));
    }
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&results[0].1), bits(&results[1].1));
    // fused loops of up to ten ops (plus their constants): far fewer steps
    assert!(
        results[0].0 * 5 < results[1].0,
        "{} steps compiled, {} unrewritten",
        results[0].0,
        results[1].0
    );
}
