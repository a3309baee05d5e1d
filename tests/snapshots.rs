//! Snapshot tests of graph dumps. The dumps are deterministic by construction,
//! so these snapshots change only when the graph a layer emits changes.

use kiln::graph::dump::dump;
use kiln::{models, DumpFormat};

#[test]
fn seed_conv2d_layer_graph_text() {
    // Conv2D of SEED_BENCHMARK.md: [8,64,32,32] → 128 channels, 3x3, pad 1, bias.
    let m = models::build("conv2d", 0).unwrap();
    insta::assert_snapshot!(
        "conv2d_seed_layer",
        dump(&m.graph, &[m.output], DumpFormat::Text).unwrap()
    );
}

#[test]
fn seed_layer_graphs_text() {
    for name in ["conv1d", "maxpool2d", "avgpool2d", "cnn"] {
        let m = models::build(name, 0).unwrap();
        insta::assert_snapshot!(
            format!("{name}_graph"),
            dump(&m.graph, &[m.output], DumpFormat::Text).unwrap()
        );
    }
}

#[test]
fn dumps_are_identical_across_builds_and_seeds_change_only_values() {
    for format in [DumpFormat::Text, DumpFormat::Dot, DumpFormat::Json] {
        let a = models::build("cnn", 1).unwrap();
        let b = models::build("cnn", 1).unwrap();
        let da = dump(&a.graph, &[a.output], format).unwrap();
        assert_eq!(da, dump(&b.graph, &[b.output], format).unwrap());
        let c = models::build("cnn", 2).unwrap();
        assert_eq!(
            da,
            dump(&c.graph, &[c.output], format).unwrap(),
            "parameter values are not part of a dump"
        );
    }
}

#[test]
fn json_dump_parses_and_lists_every_node() {
    let m = models::build("cnn", 0).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&dump(&m.graph, &[m.output], DumpFormat::Json).unwrap()).unwrap();
    let nodes = j["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), m.graph.len());
    assert_eq!(j["outputs"], serde_json::json!([nodes.len() - 1]));
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["id"], i);
        assert!(
            n["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k.as_u64().unwrap() < i as u64),
            "operands come first"
        );
    }
    let dot = dump(&m.graph, &[m.output], DumpFormat::Dot).unwrap();
    assert!(dot.starts_with("digraph kiln {") && dot.trim_end().ends_with('}'));
    assert_eq!(
        dot.matches(" -> ").count(),
        nodes
            .iter()
            .map(|n| n["inputs"].as_array().unwrap().len())
            .sum::<usize>()
    );
}

#[test]
fn cnn_training_step_graph_text() {
    // forward, backward and SGD-with-momentum update of the built-in cnn at batch 32
    let trainer = kiln::tooling::classify::classifier_trainer(
        &models::cnn(),
        32,
        [1, 28, 28],
        0,
        kiln::optim::Sgd::new(0.01).momentum(0.9),
    )
    .unwrap();
    let text = dump(trainer.graph(), &[trainer.loss()], DumpFormat::Text).unwrap();
    insta::assert_snapshot!("cnn_training_step", text);
}

#[test]
fn graphs_after_the_pipeline() {
    // each seed layer's forward+backward graph and the cnn's training step, after every pass
    for name in ["conv2d", "conv1d", "maxpool2d", "avgpool2d", "cnn"] {
        let program = models::program(name, 0, true).unwrap();
        let (after, _) =
            kiln::compile::optimize(program, &kiln::CompileOptions::default()).unwrap();
        insta::assert_snapshot!(
            format!("{name}_train_final"),
            dump(&after.graph, &after.roots(), DumpFormat::Text).unwrap()
        );
    }
}
