//! `scaled_dot_product_attention`, `MultiheadAttention` and
//! `TransformerEncoderLayer` against values PyTorch 2.15 printed
//! (`tests/data/attention_ref.py`), outputs and gradients, plus their
//! bad inputs and compiled-vs-unrewritten equality.

mod common;
use common::*;
use kiln::nn::{self, Layer, Mask, MhaOptions, Sdpa};
use kiln::{compile, CompileOptions, Feed, Graph, NodeId, OpBuilder, Tensor};

const REF: &str = include_str!("data/attention_ref.txt");

/// The values PyTorch printed for `key` under `// {section}`.
fn reference(section: &str, key: &str) -> Vec<f32> {
    reference_values(REF, section, key)
}

/// Runs `[y, grads of Σ y·r w.r.t. wrt]` with `r` the script's weights of salt `salt`.
fn with_grads(
    g: &mut Graph,
    y: NodeId,
    salt: f64,
    wrt: &[NodeId],
    feeds: &[(&str, &dyn Feed)],
) -> Vec<Tensor> {
    let r = g.constant(fill(g.shape(y).unwrap(), salt)).unwrap();
    let yr = g.mul(y, r).unwrap();
    let loss = g.sum_all(yr).unwrap();
    let mut outs = vec![y];
    outs.extend(g.grad(loss, wrt).unwrap());
    let mut exe = compile(g, &outs, &CompileOptions::default()).unwrap();
    exe.run(feeds).unwrap()
}

#[test]
fn sdpa_matches_pytorch_with_a_mask_causal_and_a_scale() {
    let (q, k, v) = (
        fill(&[2, 3, 4], 0.0),
        fill(&[2, 5, 4], 1.0),
        fill(&[2, 5, 3], 2.0),
    );
    let allow = t(
        &[3, 5],
        &[1., 0., 1., 1., 0., 1., 1., 1., 0., 0., 0., 0., 0., 1., 1.],
    );
    for section in ["mask", "causal", "scale"] {
        let mut g = Graph::new();
        let (qi, ki, vi) = (
            g.input("q", [2, 3, 4]).unwrap(),
            g.input("k", [2, 5, 4]).unwrap(),
            g.input("v", [2, 5, 3]).unwrap(),
        );
        let options = match section {
            "mask" => Sdpa {
                attn_mask: Some(Mask::Allow(g.constant(allow.clone()).unwrap())),
                ..Sdpa::default()
            },
            "causal" => Sdpa {
                is_causal: true,
                ..Sdpa::default()
            },
            _ => Sdpa {
                scale: Some(0.3),
                ..Sdpa::default()
            },
        };
        let y = nn::scaled_dot_product_attention(&mut g, qi, ki, vi, &options).unwrap();
        let out = with_grads(
            &mut g,
            y,
            3.0,
            &[qi, ki, vi],
            &[("q", &q), ("k", &k), ("v", &v)],
        );
        let s = format!("sdpa {section}");
        for (i, key) in ["out", "gq", "gk", "gv"].iter().enumerate() {
            assert_close(out[i].data(), &reference(&s, key), 1e-5);
        }
    }
}

#[test]
fn multihead_attention_matches_pytorch_with_a_key_padding_mask() {
    let mut g = Graph::new();
    let x = g.input("x", [3, 2, 4]).unwrap();
    // key 2 of batch entry 0 is padding
    let pad = g.constant(t(&[2, 3], &[0., 0., 1., 0., 0., 0.])).unwrap();
    let mha = nn::MultiheadAttention::new(4, 2).name("mha");
    let options = MhaOptions {
        key_padding_mask: Some(Mask::Block(pad)),
        need_weights: true,
        ..MhaOptions::default()
    };
    let (y, w) = mha.forward(&mut g, x, x, x, &options).unwrap();
    fill_params(&mut g);
    let w_in_weight = g
        .trainable_params()
        .into_iter()
        .find(|p| p.0 == "mha.in_proj_weight")
        .unwrap()
        .1;
    let out = with_grads(
        &mut g,
        y,
        5.0,
        &[x, w_in_weight],
        &[("x", &fill(&[3, 2, 4], 4.0))],
    );
    assert_close(out[0].data(), &reference("mha", "out"), 1e-5);
    assert_close(out[1].data(), &reference("mha", "gx"), 1e-5);
    assert_close(out[2].data(), &reference("mha", "g_in_proj"), 1e-5);
    let weights = compile(&g, &[w.unwrap()], &CompileOptions::default())
        .unwrap()
        .run(&[("x", &fill(&[3, 2, 4], 4.0))])
        .unwrap();
    assert_eq!(weights[0].shape(), &[2, 3, 3]);
    assert_close(weights[0].data(), &reference("mha", "weights"), 1e-5);
}

#[test]
fn transformer_encoder_layers_match_pytorch_post_and_pre_norm() {
    for (section, layer, causal) in [
        ("post_relu", nn::TransformerEncoderLayer::new(4, 2), false),
        (
            "pre_gelu",
            nn::TransformerEncoderLayer::new(4, 2)
                .norm_first(true)
                .activation(nn::Activation::Gelu),
            true,
        ),
    ] {
        let layer = layer
            .dim_feedforward(6)
            .dropout(0.0)
            .batch_first(true)
            .name("enc");
        let mut g = Graph::new();
        let x = g.input("x", [2, 3, 4]).unwrap();
        let masks = nn::EncoderMasks {
            is_causal: causal,
            ..nn::EncoderMasks::default()
        };
        let y = layer.forward(&mut g, x, &masks).unwrap();
        fill_params(&mut g);
        let linear1 = g
            .trainable_params()
            .into_iter()
            .find(|p| p.0 == "enc.linear1.weight")
            .unwrap()
            .1;
        let out = with_grads(
            &mut g,
            y,
            7.0,
            &[x, linear1],
            &[("x", &fill(&[2, 3, 4], 6.0))],
        );
        let s = format!("encoder {section}");
        assert_close(out[0].data(), &reference(&s, "out"), 1e-5);
        assert_close(out[1].data(), &reference(&s, "gx"), 1e-5);
        assert_close(out[2].data(), &reference(&s, "g_linear1"), 1e-5);
    }
}

#[test]
fn parameter_names_and_counts_are_pytorchs() {
    let mut g = Graph::new();
    let x = g.input("x", [5, 2, 8]).unwrap();
    nn::TransformerEncoderLayer::new(8, 2)
        .dim_feedforward(16)
        .name("layer")
        .build(&mut g, x)
        .unwrap();
    let names: Vec<(String, Vec<usize>)> = g
        .params()
        .map(|(n, _, t)| (n.to_string(), t.shape().to_vec()))
        .collect();
    let mut want = vec![
        ("layer.self_attn.in_proj_weight", vec![24, 8]),
        ("layer.self_attn.in_proj_bias", vec![24]),
        ("layer.self_attn.out_proj.weight", vec![8, 8]),
        ("layer.self_attn.out_proj.bias", vec![8]),
        ("layer.linear1.weight", vec![16, 8]),
        ("layer.linear1.bias", vec![16]),
        ("layer.linear2.weight", vec![8, 16]),
        ("layer.linear2.bias", vec![8]),
        ("layer.norm1.weight", vec![8]),
        ("layer.norm1.bias", vec![8]),
        ("layer.norm2.weight", vec![8]),
        ("layer.norm2.bias", vec![8]),
    ];
    want.sort();
    let mut got = names.clone();
    got.sort();
    let want: Vec<(String, Vec<usize>)> =
        want.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
    assert_eq!(got, want);
    // sum(p.numel()) of the same PyTorch layer
    let total: usize = names.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(total, 8 * 24 + 24 + 64 + 8 + 128 + 16 + 128 + 8 + 4 * 8);
}

#[test]
fn a_fully_masked_query_gives_nan_as_pytorch() {
    let mut g = Graph::new();
    let q = g.input("q", [1, 2, 2]).unwrap();
    let none = g.constant(t(&[2, 2], &[1., 1., 0., 0.])).unwrap();
    let options = Sdpa {
        attn_mask: Some(Mask::Allow(none)),
        ..Sdpa::default()
    };
    let y = nn::scaled_dot_product_attention(&mut g, q, q, q, &options).unwrap();
    let out = eval(&g, y, &[("q", &t(&[1, 2, 2], &[1., 2., 3., 4.]))]);
    assert!(out.data()[..2].iter().all(|v| v.is_finite()));
    assert!(out.data()[2..].iter().all(|v| v.is_nan()), "{out:?}");
}

#[test]
fn bad_attention_inputs_are_errors_naming_what_is_wrong() {
    let mut g = Graph::new();
    let q = g.input("q", [2, 3, 4]).unwrap();
    let k = g.input("k", [2, 5, 3]).unwrap();
    let msg = |r: kiln::Result<NodeId>| r.unwrap_err().to_string();
    let e = msg(nn::scaled_dot_product_attention(
        &mut g,
        q,
        k,
        k,
        &Sdpa::default(),
    ));
    assert!(e.contains("[2, 3, 4]") && e.contains("[2, 5, 3]"), "{e}");
    let m = g.constant(Tensor::zeros([3, 3])).unwrap();
    let both = Sdpa {
        attn_mask: Some(Mask::Add(m)),
        is_causal: true,
        ..Sdpa::default()
    };
    let e = msg(nn::scaled_dot_product_attention(&mut g, q, q, q, &both));
    assert!(e.contains("not both"), "{e}");
    let wide = g.constant(Tensor::zeros([4, 3])).unwrap();
    let bad_mask = Sdpa {
        attn_mask: Some(Mask::Add(wide)),
        ..Sdpa::default()
    };
    let e = msg(nn::scaled_dot_product_attention(&mut g, q, q, q, &bad_mask));
    assert!(e.contains("[2, 3, 3]"), "{e}");
    let e = msg(nn::MultiheadAttention::new(6, 4).build(&mut g, q));
    assert!(
        e.contains("embed_dim 6") && e.contains("num_heads 4"),
        "{e}"
    );
    let e = msg(nn::MultiheadAttention::new(8, 2).build(&mut g, q));
    assert!(e.contains("E = 8"), "{e}");
    let e = msg(nn::TransformerEncoderLayer::new(4, 2)
        .dropout(1.0)
        .build(&mut g, q));
    assert!(e.contains("dropout must be in 0..1"), "{e}");
}

#[test]
fn a_causal_encoder_training_step_compiles_equal_to_unrewritten() {
    let run = |options: CompileOptions| -> Vec<Tensor> {
        let mut g = Graph::with_seed(4);
        let x = g.input("x", [2, 5, 8]).unwrap();
        let enc = nn::TransformerEncoder::new(
            nn::TransformerEncoderLayer::new(8, 2)
                .dim_feedforward(12)
                .batch_first(true)
                .norm_first(true),
            2,
        )
        .final_norm(true)
        .name("enc");
        let masks = nn::EncoderMasks {
            is_causal: true,
            ..nn::EncoderMasks::default()
        };
        let y = enc.forward(&mut g, x, &masks).unwrap();
        let sq = g.mul(y, y).unwrap();
        let loss = g.sum_all(sq).unwrap();
        let params: Vec<NodeId> = g.trainable_params().iter().map(|p| p.1).collect();
        let mut outs = vec![y];
        outs.extend(g.grad(loss, &params).unwrap());
        let training = CompileOptions {
            training: true,
            ..options
        };
        let mut exe = compile(&g, &outs, &training).unwrap();
        exe.run(&[("x", &rand(&[2, 5, 8], 3))]).unwrap()
    };
    let (want, got) = (
        run(CompileOptions::unrewritten()),
        run(CompileOptions::default()),
    );
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_close(g.data(), w.data(), 1e-5);
    }
}

/// The ops of `outs` of `g` after the compiler's passes.
fn compiled_ops(g: &Graph, outs: &[NodeId]) -> Vec<kiln::Op> {
    let program = kiln::Program {
        graph: g.clone(),
        outputs: outs.to_vec(),
        updates: vec![],
    };
    let (p, _) = kiln::compile::optimize(program, &CompileOptions::default()).unwrap();
    (p.live_nodes().into_iter())
        .map(|n| p.graph.node(n).unwrap().op.clone())
        .collect()
}

/// The bits of every value.
fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// An evaluation graph's attention core (product, scale, masks of every
/// kind, softmax, product) is one `attention` op whose result is the
/// unfused graph's, NaN, −∞ and fully masked rows included, for several
/// heads, a causal mask, boolean masks holding NaN and a float mask with −∞
/// and NaN: bit for bit up to 128 query rows (one block), and within GEMM
/// rounding for more (whose blocks' products may round apart from the
/// whole product's).
#[test]
fn an_evaluation_graphs_attention_core_is_one_op_equal_to_the_unfused_graph() {
    let cases: [(&str, [usize; 4], usize); 5] = [
        ("causal", [2, 3, 5, 4], 5),
        ("masks", [1, 2, 6, 3], 7),
        ("long", [1, 1, 200, 4], 9),
        ("block", [1, 1, 128, 4], 9),
        ("mha", [3, 2, 4, 6], 4),
    ];
    for (name, [n, h, l, e], s) in cases {
        let mut g = Graph::new();
        let q = g.input("q", [n, h, l, e]).unwrap();
        let k = g.input("k", [n, h, s, e]).unwrap();
        let v = g.input("v", [n, h, s, 3]).unwrap();
        let mut data = vec![rand(&[n, h, l, e], 1), rand(&[n, h, s, e], 2)];
        data.push(rand(&[n, h, s, 3], 3));
        // a NaN query value and a NaN key value
        data[0].data_mut()[1] = f32::NAN;
        data[1].data_mut()[2 * e] = f32::NAN;
        let y = match name {
            "causal" | "long" | "block" => {
                let o = Sdpa {
                    is_causal: true,
                    ..Sdpa::default()
                };
                nn::scaled_dot_product_attention(&mut g, q, k, v, &o).unwrap()
            }
            "masks" => {
                // allow (with a NaN entry, which allows), then add −∞ / NaN
                let allow: Vec<f32> = (0..l * s)
                    .map(|i| match i % 5 {
                        0 => 0.0,
                        1 => f32::NAN,
                        _ => 1.0,
                    })
                    .collect();
                let mut add: Vec<f32> = (0..s).map(|i| i as f32 * 0.1).collect();
                add[3] = f32::NEG_INFINITY;
                add[5] = f32::NAN;
                let allow = g
                    .constant(Tensor::from_vec([l, s], allow).unwrap())
                    .unwrap();
                let add = g
                    .constant(Tensor::from_vec([1, 1, 1, s], add).unwrap())
                    .unwrap();
                let o = Sdpa {
                    attn_mask: Some(Mask::Allow(allow)),
                    scale: Some(0.7),
                    ..Sdpa::default()
                };
                let y = nn::scaled_dot_product_attention(&mut g, q, k, v, &o).unwrap();
                // and a second core over the same inputs with an additive mask
                let o = Sdpa {
                    attn_mask: Some(Mask::Add(add)),
                    ..Sdpa::default()
                };
                let y2 = nn::scaled_dot_product_attention(&mut g, q, k, v, &o).unwrap();
                g.add(y, y2).unwrap()
            }
            _ => {
                // a key padding mask (blocks: one row of keys fully blocked)
                let block: Vec<f32> = (0..n * s).map(|i| f32::from(i % 4 == 1 || i < s)).collect();
                let block = g
                    .constant(Tensor::from_vec([n, 1, 1, s], block).unwrap())
                    .unwrap();
                let o = Sdpa {
                    attn_mask: Some(Mask::Block(block)),
                    ..Sdpa::default()
                };
                nn::scaled_dot_product_attention(&mut g, q, k, v, &o).unwrap()
            }
        };
        let ops = compiled_ops(&g, &[y]);
        let cores = ops
            .iter()
            .filter(|o| matches!(o, kiln::Op::Attention(_)))
            .count();
        assert_eq!(
            cores,
            1 + usize::from(name == "masks"),
            "case {name}: {ops:?}"
        );
        assert!(
            !ops.iter().any(|o| matches!(o, kiln::Op::Softmax(_))),
            "{name}"
        );
        let feeds = [("q", &data[0]), ("k", &data[1]), ("v", &data[2])];
        let feeds: Vec<(&str, &dyn Feed)> =
            feeds.iter().map(|(n, t)| (*n, *t as &dyn Feed)).collect();
        let run =
            |options: CompileOptions| compile(&g, &[y], &options).unwrap().run(&feeds).unwrap();
        let (want, got) = (
            run(CompileOptions::unrewritten()),
            run(CompileOptions::default()),
        );
        assert!(
            want[0].data().iter().any(|v| v.is_nan()),
            "case {name} has NaN rows"
        );
        match name {
            "long" => {
                let nan = |t: &Tensor| t.data().iter().map(|v| v.is_nan()).collect::<Vec<_>>();
                assert_eq!(nan(&got[0]), nan(&want[0]));
                let finite = |t: &Tensor| {
                    (t.data().iter())
                        .map(|v| if v.is_nan() { 0.0 } else { *v })
                        .collect::<Vec<_>>()
                };
                assert_close(&finite(&got[0]), &finite(&want[0]), 1e-6);
            }
            _ => assert_eq!(bits(&got[0]), bits(&want[0]), "case {name}"),
        }
    }
}

/// A training graph keeps the unfused core: its weights are the softmax
/// gradient's operand.
#[test]
fn a_training_graphs_attention_core_stays_unfused() {
    let mut g = Graph::new();
    let q = g.input("q", [2, 3, 4]).unwrap();
    let o = Sdpa {
        is_causal: true,
        ..Sdpa::default()
    };
    let y = nn::scaled_dot_product_attention(&mut g, q, q, q, &o).unwrap();
    let loss = g.sum_all(y).unwrap();
    let dq = g.grad(loss, &[q]).unwrap()[0];
    let ops = compiled_ops(&g, &[y, dq]);
    assert!(
        !ops.iter().any(|o| matches!(o, kiln::Op::Attention(_))),
        "{ops:?}"
    );
}

/// The fused core's shape rule names the operands that do not fit.
#[test]
fn bad_attention_core_operands_are_errors() {
    use kiln::ops::{Attention, ScoreMask};
    let mut g = Graph::new();
    let q = g.input("q", [2, 3, 4]).unwrap();
    let k = g.input("k", [2, 5, 4]).unwrap();
    let v = g.input("v", [1, 5, 2]).unwrap();
    let m = g.input("m", [4, 5]).unwrap();
    let core = |masks: Vec<ScoreMask>| kiln::Op::Attention(Attention { scale: None, masks });
    let msg = |r: kiln::Result<NodeId>| r.unwrap_err().to_string();
    let e = msg(g.add_op(core(vec![]), &[q, k, v]));
    assert!(
        e.contains("attention") && e.contains("[1, 5, 2]") && e.contains("same B"),
        "{e}"
    );
    let e = msg(g.add_op(core(vec![ScoreMask::Add]), &[q, k, k, m]));
    assert!(
        e.contains("mask 0 [4, 5]") && e.contains("[2, 3, 5]"),
        "{e}"
    );
    let e = msg(g.add_op(core(vec![]), &[q, k]));
    assert!(e.contains("takes at least 3 operands, got 2"), "{e}");
    let e = msg(g.add_op(core(vec![]), &[q, k, k, m]));
    assert!(e.contains("0 mask kinds for 1 mask operands"), "{e}");
}
