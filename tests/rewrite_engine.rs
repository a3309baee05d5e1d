//! The rewrite engine: patterns (op kinds, captures, operand order, optional
//! reshapes, guards), the manager's checks after each patch, the rewrite
//! budget, bisection, the trace and the declared pass order.

mod common;
use common::Broken;
use kiln::compile::{bisect, first_difference, optimize};
use kiln::ops::{BinaryOp, UnaryOp};
use kiln::ops::{MatMul, Reshape};
use kiln::passes::pattern::{any, op};
use kiln::passes::{all_passes, PassManager, Patch, RewriteLog, Rewriter, Src};
use kiln::OpBuilder;
use kiln::Program;
use kiln::{models, CompileOptions, Graph, NodeId, Op};

fn program(g: Graph, outputs: Vec<NodeId>) -> Program {
    Program {
        graph: g,
        outputs,
        updates: vec![],
    }
}

fn is_add(o: &Op) -> bool {
    matches!(o, Op::Binary(BinaryOp::Add))
}

fn is_relu(o: &Op) -> bool {
    matches!(o, Op::Unary(UnaryOp::Relu))
}

#[test]
fn patterns_match_op_kinds_operand_order_and_bind_captures() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let r = g.relu(x).unwrap();
    let a = g.add(x, r).unwrap(); // relu second
    let b = g.add(r, x).unwrap(); // relu first
    let p = program(g, vec![a, b]);
    let in_order = op(is_add).args([any().bind("x"), op(is_relu).bind("r")]);
    let m = in_order.matches(&p, a).unwrap().expect("add(x, relu(x))");
    assert_eq!((m.node("x"), m.node("r"), m.root), (x, r, a));
    assert_eq!(m.nodes, vec![a, r], "matched ops, root first");
    assert!(in_order.matches(&p, b).unwrap().is_none(), "order matters");
    let either = in_order.clone().any_order();
    let m = either.matches(&p, b).unwrap().expect("commutative match");
    assert_eq!((m.node("x"), m.node("r")), (x, r));
    assert!(op(is_relu).matches(&p, a).unwrap().is_none(), "op kind");
    assert!(
        op(is_add).args([any()]).matches(&p, a).unwrap().is_none(),
        "operand count must match"
    );
}

#[test]
fn a_name_bound_twice_must_bind_one_node() {
    let mut g = Graph::new();
    let x = g.input("x", [4]).unwrap();
    let y = g.input("y", [4]).unwrap();
    let xx = g.mul(x, x).unwrap();
    let xy = g.mul(x, y).unwrap();
    let p = program(g, vec![xx, xy]);
    let square =
        op(|o| matches!(o, Op::Binary(BinaryOp::Mul))).args([any().bind("a"), any().bind("a")]);
    assert!(square.matches(&p, xx).unwrap().is_some());
    assert!(square.matches(&p, xy).unwrap().is_none());
}

#[test]
fn optional_reshapes_and_guards() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let r = g.relu(x).unwrap();
    let flat = g.reshape(r, &[6]).unwrap();
    let e = g.exp(flat).unwrap();
    let e2 = g.exp(r).unwrap();
    let twice = g.neg(x).unwrap();
    let u1 = g.exp(twice).unwrap();
    let u2 = g.sqrt(twice).unwrap();
    let p = program(g, vec![e, e2, u1, u2]);
    let exp_of_relu =
        op(|o| matches!(o, Op::Unary(UnaryOp::Exp))).args([op(is_relu).bind("r").opt_reshape()]);
    let m = exp_of_relu
        .matches(&p, e)
        .unwrap()
        .expect("through the reshape");
    assert_eq!(m.node("r"), r);
    assert_eq!(m.nodes, vec![e, flat, r]);
    assert!(
        exp_of_relu.matches(&p, e2).unwrap().is_some(),
        "or without it"
    );
    // single use: `neg(x)` has two users
    let single = op(|o| matches!(o, Op::Unary(UnaryOp::Exp))).args([any().single_use()]);
    assert!(single.matches(&p, u1).unwrap().is_none());
    assert!(
        single.matches(&p, e2).unwrap().is_none(),
        "relu has two users"
    );
    // same shape: exp(reshape) is [6], its operand's operand [2, 3]
    let same = op(|o| matches!(o, Op::Unary(UnaryOp::Exp)))
        .bind("e")
        .args([any().same_shape_as("e")]);
    assert!(same.matches(&p, e2).unwrap().is_some());
    assert!(same.matches(&p, e).unwrap().is_some(), "reshape is [6] too");
    let reshape_same = op(|o| matches!(o, Op::Reshape(_)))
        .bind("r")
        .args([any().same_shape_as("r")]);
    assert!(
        reshape_same.matches(&p, flat).unwrap().is_none(),
        "[2, 3] vs [6]"
    );
}

/// A program `relu(x)` with `x: [2, 3]`, its nodes, and an empty log.
fn small() -> (Program, NodeId, NodeId) {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let r = g.relu(x).unwrap();
    let s = g.sum_all(r).unwrap();
    (program(g, vec![s]), x, r)
}

#[test]
fn the_manager_refuses_broken_patches_naming_rule_and_node() {
    let (mut p, x, r) = small();
    let mut log = RewriteLog::default();
    let mut rw = Rewriter::new(&mut p, &mut log, "test_pass", 1);
    // a replacement of another shape
    let mut patch = Patch::new();
    let flat = patch.add(Op::Reshape(Reshape { shape: vec![6] }), &[x.into()]);
    patch.replace(r, flat);
    let e = rw.apply("bad_shape", &[r], patch).unwrap_err().to_string();
    assert!(
        e.contains("`bad_shape`") && e.contains("test_pass") && e.contains("relu"),
        "{e}"
    );
    // removing a node still read
    let (mut p, _, r) = small();
    let mut rw = Rewriter::new(&mut p, &mut log, "test_pass", 1);
    let mut patch = Patch::new();
    patch.remove(r);
    let e = rw
        .apply("removes_used", &[r], patch)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`removes_used`") && e.contains("still read"),
        "{e}"
    );
    // removing a root
    let (mut p, _, _) = small();
    let out = p.outputs[0];
    let mut rw = Rewriter::new(&mut p, &mut log, "test_pass", 1);
    let mut patch = Patch::new();
    patch.remove(out);
    let e = rw
        .apply("removes_root", &[out], patch)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`removes_root`") && e.contains("root"), "{e}");
    // a new node reading a later one
    let (mut p, _, r) = small();
    let mut rw = Rewriter::new(&mut p, &mut log, "test_pass", 1);
    let mut patch = Patch::new();
    let n = patch.add(Op::Unary(UnaryOp::Neg), &[Src::New(1)]);
    patch.replace(r, n);
    let e = rw
        .apply("forward_ref", &[r], patch)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`forward_ref`"), "{e}");
    assert!(log.firings.is_empty(), "no broken patch is logged");
}

#[test]
fn a_patch_whose_shape_rule_refuses_leaves_the_graph_as_it_was() {
    let (mut p, x, r) = small();
    let before = kiln::graph::dump::to_text(&p.graph, &p.roots());
    let nodes = p.graph.len();
    let mut log = RewriteLog::default();
    let mut rw = Rewriter::new(&mut p, &mut log, "test_pass", 1);
    let mut patch = Patch::new();
    let ok = patch.add(Op::Unary(UnaryOp::Neg), &[x.into()]);
    // [2, 3] · [2, 3] is no matrix product
    let bad = patch.add(
        Op::MatMul(MatMul {
            trans_a: false,
            trans_b: false,
        }),
        &[ok, x.into()],
    );
    patch.replace(r, bad);
    assert!(rw.apply("refused", &[r], patch).unwrap().is_none());
    assert_eq!(p.graph.len(), nodes);
    assert_eq!(kiln::graph::dump::to_text(&p.graph, &p.roots()), before);
    assert!(log.firings.is_empty());
}

#[test]
fn an_applied_patch_is_logged_and_checked() {
    let (mut p, x, r) = small();
    let mut log = RewriteLog::default();
    let mut rw = Rewriter::new(&mut p, &mut log, "test_pass", 3);
    let mut patch = Patch::new();
    let n = patch.add(Op::Unary(UnaryOp::Abs), &[x.into()]);
    patch.replace(r, n);
    let new = rw.apply("relu_to_abs", &[r, x], patch).unwrap().unwrap();
    assert_eq!(new.len(), 1);
    assert!(p.graph.node(r).is_err(), "the replaced node is gone");
    assert_eq!(p.graph.operands(p.outputs[0]), new);
    let f = &log.firings[0];
    assert_eq!(
        (f.index, f.pass, f.rule, f.round),
        (1, "test_pass", "relu_to_abs", 3)
    );
    assert_eq!(f.matched, vec!["n1:relu", "n0:input"]);
    assert_eq!(f.changes, vec!["n1:relu -> n3:abs"]);
}

#[test]
fn the_pipeline_order_each_pass_declares_is_checked() {
    let named = |n: &str| all_passes().into_iter().find(|p| p.name() == n).unwrap();
    let wrong = PassManager::from_passes(vec![named("permute"), named("matmul_transpose")]);
    let (mut p, _, _) = small();
    let e = wrong.run(&mut p).unwrap_err().to_string();
    assert!(
        e.contains("`permute` must run after `matmul_transpose`"),
        "{e}"
    );
    let wrong = PassManager::from_passes(vec![named("const_fold"), named("avg_pool")]);
    let e = wrong.run(&mut p).unwrap_err().to_string();
    assert!(e.contains("`const_fold` must run after `avg_pool`"), "{e}");
    // the full pipeline keeps every declared order
    PassManager::from_passes(all_passes()).run(&mut p).unwrap();
}

/// The cnn training step with a budget of `n` rewrites.
fn cnn_after(n: Option<usize>) -> (Program, kiln::passes::PassReport) {
    let options = CompileOptions {
        stop_after: n,
        verify: false,
        dump_dir: None,
        ..CompileOptions::default()
    };
    optimize(models::program("cnn", 0, true).unwrap(), &options).unwrap()
}

#[test]
fn the_trace_lists_every_rewrite_and_the_rules_that_never_fired() {
    let (_, report) = cnn_after(None);
    let log = &report.log;
    // every pass counts its patches (dce one per sweep, however many nodes it removes)
    let patches: usize = report.rewrites.iter().map(|r| r.1).sum();
    assert_eq!(log.firings.len(), patches);
    assert_eq!(log.applied(), patches);
    assert!(!log.stopped);
    for (i, f) in log.firings.iter().enumerate() {
        assert_eq!(f.index, i + 1);
    }
    for rule in [
        "kernel_grad",
        "input_grad",
        "unfold_matmul",
        "activation_into_conv",
    ] {
        assert!(log.firings.iter().any(|f| f.rule == rule), "{rule} fired");
    }
    let table = log.rules_table();
    let idle = table.lines().last().unwrap();
    assert!(
        idle.starts_with("never fired:") && idle.contains("avg_pool"),
        "{table}"
    );
    assert!(!idle.contains("kernel_grad"), "{table}");
}

#[test]
fn every_prefix_of_the_cnn_training_rewrites_computes_the_same() {
    let unrewritten = models::program("cnn", 0, true).unwrap();
    let total = cnn_after(None).1.log.applied();
    assert!(total > 30, "{total}");
    let options = CompileOptions::default();
    for n in (0..=total).step_by(3).chain([total - 1]) {
        let (p, report) = cnn_after(Some(n));
        assert_eq!(report.log.applied(), n);
        assert_eq!(
            report.log.stopped,
            n < total,
            "the budget refused a rewrite"
        );
        let diff = first_difference(&unrewritten, &p, &options).unwrap();
        assert_eq!(diff, None, "after {n} rewrites");
    }
}

#[test]
fn bisection_finds_the_first_rewrite_that_changes_results() {
    let mut g = Graph::new();
    let x = g.input("x", [8]).unwrap();
    let a = g.exp(x).unwrap();
    let b = g.reshape(a, &[8]).unwrap(); // removed by `algebraic`, harmlessly
    let y = g.relu(b).unwrap();
    let p = program(g, vec![y]);
    let named = |n: &str| all_passes().into_iter().find(|p| p.name() == n).unwrap();
    let mut pipeline = PassManager::from_passes(vec![named("algebraic"), Box::new(Broken)]);
    let found = bisect(&p, &mut pipeline, &CompileOptions::default()).unwrap();
    assert_eq!(found.total, 2);
    let (firing, what) = found.first_bad.expect("the negation changes results");
    assert_eq!((firing.index, firing.rule), (2, "relu_to_neg"));
    assert!(what.contains("result 0 changed"), "{what}");
    assert_eq!(pipeline.budget(), None, "the budget is left as it was");
    let mut good = PassManager::from_passes(vec![named("algebraic")]);
    let found = bisect(&p, &mut good, &CompileOptions::default()).unwrap();
    assert_eq!((found.total, found.first_bad.is_none()), (1, true));
}

/// `x → a = neg(x) → b = exp(a) → c = relu(b) → d = sum(c)`.
fn chain() -> (Program, [NodeId; 5]) {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let a = g.neg(x).unwrap();
    let b = g.exp(a).unwrap();
    let c = g.relu(b).unwrap();
    let d = g.sum_all(c).unwrap();
    (program(g, vec![d]), [x, a, b, c, d])
}

/// A malformed patch is an `Err` naming its rule, and the program is left
/// exactly as it was (same dump, same values).
#[test]
fn a_malformed_patch_leaves_the_program_as_it_was() {
    type MakePatch = fn(&[NodeId; 5]) -> Patch;
    let cases: Vec<(&str, MakePatch)> = vec![
        ("past_new", |n| {
            let mut p = Patch::new();
            p.replace(n[3], Src::New(5));
            p
        }),
        ("cycle_old", |n| Patch::replacing(n[1], n[3])),
        ("cycle_new", |n| {
            let mut p = Patch::new();
            let k = p.add(Op::Unary(UnaryOp::Neg), &[n[3].into()]);
            p.replace(n[1], k);
            p
        }),
        ("reads_replaced", |n| {
            let mut p = Patch::new();
            let k = p.add(Op::Unary(UnaryOp::Neg), &[n[3].into()]);
            p.replace(n[3], k);
            p
        }),
        ("valid_then_bad_shape", |n| {
            let mut p = Patch::new();
            let k = p.add(Op::Unary(UnaryOp::Abs), &[n[2].into()]);
            p.replace(n[3], k);
            let flat = p.add(Op::Reshape(Reshape { shape: vec![1] }), &[n[4].into()]);
            p.replace(n[2], flat);
            p
        }),
        ("twice", |n| {
            let mut p = Patch::new();
            let k = p.add(Op::Unary(UnaryOp::Abs), &[n[2].into()]);
            p.replace(n[3], k);
            p.replace(n[3], n[2]);
            p
        }),
        ("itself", |n| Patch::replacing(n[3], n[3])),
        ("input", |n| Patch::replacing(n[0], n[1])),
        ("remove_input", |n| {
            let mut p = Patch::new();
            p.remove(n[0]);
            p
        }),
        ("remove_read", |n| {
            let mut p = Patch::new();
            let k = p.add(Op::Unary(UnaryOp::Abs), &[n[2].into()]);
            p.replace(n[3], k);
            p.remove(n[2]);
            p
        }),
    ];
    for (rule, make) in cases {
        let (mut p, n) = chain();
        let before = p.clone();
        let text = kiln::graph::dump::to_text(&p.graph, &p.roots());
        let mut log = RewriteLog::default();
        let e = Rewriter::new(&mut p, &mut log, "test_pass", 1)
            .apply(rule, &[n[3]], make(&n))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("`{rule}`")) && e.contains("test_pass"),
            "{rule}: {e}"
        );
        assert_eq!(
            kiln::graph::dump::to_text(&p.graph, &p.roots()),
            text,
            "{rule}"
        );
        assert_eq!(p.graph.len(), before.graph.len(), "{rule}");
        let same = first_difference(&before, &p, &CompileOptions::default()).unwrap();
        assert_eq!(same, None, "{rule}");
        assert!(log.firings.is_empty(), "{rule}");
    }
}

/// An id of a removed node is refused before the patch adds anything (the
/// graph would hand it to the patch's first new node, which the stale id
/// would then silently read).
#[test]
fn a_stale_id_is_refused() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let ghost = g.exp(x).unwrap();
    let r = g.relu(x).unwrap();
    let s = g.sum_all(r).unwrap();
    let mut p = program(g, vec![s]);
    let mut log = RewriteLog::default();
    let mut rw = Rewriter::new(&mut p, &mut log, "test_pass", 1);
    let mut dead = Patch::new();
    dead.remove(ghost);
    assert!(rw.apply("dce", &[], dead).unwrap().is_some());
    let mut patch = Patch::new();
    let abs = patch.add(Op::Unary(UnaryOp::Abs), &[x.into()]);
    let neg = patch.add(Op::Unary(UnaryOp::Neg), &[ghost.into()]);
    patch.replace(r, neg);
    let _ = abs;
    let e = rw.apply("stale", &[r], patch).unwrap_err().to_string();
    assert!(
        e.contains("`stale`") && e.contains("not part of this graph"),
        "{e}"
    );
    assert_eq!(p.graph.len(), 3, "x, relu, sum: nothing was added");
}

/// `args` and `any_order` apply to an `any()` (any node with such operands)
/// and to the node inside an optional reshape.
#[test]
fn combinators_apply_where_they_are_written() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let r = g.relu(x).unwrap();
    let n = g.neg(x).unwrap();
    let er = g.exp(r).unwrap();
    let en = g.exp(n).unwrap();
    let p = program(g, vec![er, en]);
    let over_relu = any().args([op(is_relu)]);
    assert!(over_relu.matches(&p, er).unwrap().is_some());
    assert!(over_relu.matches(&p, en).unwrap().is_none());
    let exp = |o: &Op| matches!(o, Op::Unary(UnaryOp::Exp));
    let inner = op(exp).opt_reshape().args([op(is_relu)]);
    assert!(inner.matches(&p, er).unwrap().is_some());
    assert!(inner.matches(&p, en).unwrap().is_none());
}

#[test]
fn first_difference_counts_results() {
    let (p, n) = chain();
    let mut two = p.clone();
    two.outputs.push(n[2]);
    let what = first_difference(&p, &two, &CompileOptions::default()).unwrap();
    assert_eq!(what.as_deref(), Some("1 results before, 2 after"));
}

/// The budget stops the pipeline only when it refuses a rewrite: a budget
/// of exactly all rewrites reaches the fixpoint.
#[test]
fn a_budget_of_every_rewrite_is_no_stop() {
    let total = cnn_after(None).1.log.applied();
    let (_, at_total) = cnn_after(Some(total));
    assert!(!at_total.log.stopped);
    assert_eq!(at_total.log.applied(), total);
    let (_, short) = cnn_after(Some(total - 1));
    assert!(short.log.stopped);
    let (mut p, _) = chain();
    let e = PassManager::from_passes(all_passes())
        .max_iterations(0)
        .run(&mut p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one iteration"), "{e}");
}
