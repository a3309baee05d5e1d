//! The page `kiln dump --html` writes (`kiln::compile::html::report`).
#![cfg(feature = "html")]

use kiln::compile::html::report;
use kiln::{CompileOptions, Graph, OpBuilder, Program};

/// The fill layout-rs writes for a node the stage's pass created.
const NEW_FILL: &str = "fill=\"#ffd54fff\"";

fn program() -> Program {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let t = g.transpose(x, &[1, 0]).unwrap(); // `permute` rewrites it
    let r = g.relu(t).unwrap();
    let e = g.exp(r).unwrap(); // `fuse_elementwise` fuses relu and exp
    Program {
        graph: g,
        outputs: vec![e],
        updates: vec![],
    }
}

#[test]
fn the_page_steps_through_every_pass_that_rewrote() {
    let page = report(&program(), &CompileOptions::default(), "a <small> & graph").unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("<title>a &lt;small&gt; &amp; graph</title>"));
    // one section and one drawing per stage: the input, then each pass that rewrote
    let stages: Vec<&str> = page.split("<section").skip(1).collect();
    assert_eq!(stages.len(), page.matches("<svg").count());
    let names = ["input", "permute (round 1)", "fuse_elementwise (round 1)"];
    for name in names {
        assert!(
            page.contains(&format!(". {name}</button>")),
            "{name} missing"
        );
    }
    // the input has nothing new; a pass's stage highlights what it made
    assert!(!stages[0].contains(NEW_FILL));
    let stage = |pass: &str| {
        let key = format!(" data-pass=\"{pass}\"");
        *stages.iter().find(|s| s.starts_with(&key)).unwrap()
    };
    let permute = stage("permute");
    assert_eq!(
        permute.matches(NEW_FILL).count(),
        1,
        "one new node: the permute"
    );
    assert!(
        permute.contains("%1 permute"),
        "the new node is drawn with its op"
    );
    let fused = stage("fuse_elementwise");
    assert_eq!(
        fused.matches(NEW_FILL).count(),
        1,
        "one new node: the fused loop"
    );
    assert!(fused.contains("fused(%1) {expr=exp(relu(%0))}"), "{fused}");
    assert!(permute.contains("<code>transpose_to_permute</code>"));
    // every rule of the pipeline is in the table, the ones that never fired marked
    assert!(page.contains("<td>conv_kernel_grad</td>"));
    assert!(page.contains("class=\"never\""));
}

#[test]
fn the_page_for_the_unrewritten_graph_has_the_input_alone() {
    let page = report(&program(), &CompileOptions::unrewritten(), "none").unwrap();
    assert_eq!(page.matches("<section").count(), 1);
    assert!(page.contains("0 rewrites in"));
}

/// The drawings share one page: no XML declarations inside it, each
/// drawing's ids (arrow markers) its own, and the same drawings on every run.
#[test]
fn the_drawings_sit_in_one_page_and_the_page_is_the_same_every_time() {
    let opts = CompileOptions::default();
    let page = report(&program(), &opts, "t").unwrap();
    assert!(!page.contains("<?xml"));
    let ids: Vec<&str> = page
        .split("id=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "an id is defined twice");
    let stages = page.matches("<section").count();
    for k in 0..stages {
        let own = format!("url(#s{k}-endarrow)");
        let section = page.split("<section").nth(k + 1).unwrap();
        let refs = section.matches("url(#").count();
        assert!(
            refs > 0 && section.matches(&own).count() == refs,
            "stage {k}"
        );
    }
    // layout-rs keeps its styles in a hash map: the page sorts them, so the
    // drawings are the same every time (the rule table's times are not)
    let drawings = |p: &str| p[..p.find("<aside>").unwrap()].to_string();
    for _ in 0..3 {
        let again = report(&program(), &opts, "t").unwrap();
        assert!(drawings(&again) == drawings(&page), "the drawings changed");
    }
}

/// With a rewrite budget the page says it stopped.
#[test]
fn the_page_says_when_the_rewrite_budget_stopped_the_passes() {
    let opts = CompileOptions {
        stop_after: Some(1),
        ..CompileOptions::default()
    };
    let page = report(&program(), &opts, "t").unwrap();
    assert!(
        page.contains("1 rewrites in 1 round(s), then stopped"),
        "{page}"
    );
}
