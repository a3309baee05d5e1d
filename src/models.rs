//! Built-in models: the seed benchmark's layer configurations and two small
//! networks. The CLI, benches and tests build them from here.

use crate::error::{KilnError, Result};
use crate::graph::Program;
use crate::graph::{Graph, NodeId};
use crate::nn::{self, Layer};
use crate::ops::OpBuilder;
use crate::optim::Sgd;

/// A built model: its graph, its output and its inputs (name, shape).
pub struct Model {
    /// The graph.
    pub graph: Graph,
    /// The model's output node.
    pub output: NodeId,
    /// The model's inputs.
    pub inputs: Vec<(String, Vec<usize>)>,
}

/// The built-in models: `(name, description)`.
pub const MODELS: &[(&str, &str)] = &[
    ("conv2d", "Conv2d 64→128, 3x3, pad 1, bias on [8,64,32,32]"),
    ("conv1d", "Conv1d 64→128, k3, pad 1, bias on [8,64,256]"),
    ("maxpool2d", "MaxPool2d 2x2, stride 2 on [8,64,32,32]"),
    ("maxpool2d-small", "MaxPool2d 2x2, stride 2 on [4,32,16,16]"),
    ("avgpool2d", "AvgPool2d 2x2, stride 2 on [8,64,32,32]"),
    ("avgpool2d-small", "AvgPool2d 2x2, stride 2 on [4,32,16,16]"),
    ("cnn", "conv 1→16 3x3 pad 1, ReLU, max-pool 2, conv 16→32 3x3 pad 1, ReLU, max-pool 2, flatten, linear 1568→10 on [32,1,28,28]"),
    ("mlp", "linear 784→128, ReLU, linear 128→10 on [32,784]"),
    ("linear", "Linear 1024→1024, bias on [256,1024]"),
];

/// The `cnn` network (input `[N, 1, 28, 28]`, 10 logits).
pub fn cnn() -> nn::Sequential {
    nn::Sequential::new()
        .push(nn::Conv2d::new(1, 16, 3).padding(1).name("conv1"))
        .push(nn::Relu)
        .push(nn::MaxPool2d::new(2).name("pool1"))
        .push(nn::Conv2d::new(16, 32, 3).padding(1).name("conv2"))
        .push(nn::Relu)
        .push(nn::MaxPool2d::new(2).name("pool2"))
        .push(nn::Flatten)
        .push(nn::Linear::new(32 * 7 * 7, 10).name("fc"))
}

/// The `mlp` network (input `[N, 784]`, 10 logits).
pub fn mlp() -> nn::Sequential {
    nn::Sequential::new()
        .push(nn::Linear::new(784, 128).name("fc1"))
        .push(nn::Relu)
        .push(nn::Linear::new(128, 10).name("fc2"))
}

/// Builds built-in model `name` with parameters drawn from `seed`.
pub fn build(name: &str, seed: u64) -> Result<Model> {
    let (shape, layer): (Vec<usize>, Box<dyn Layer>) = match name {
        "conv2d" => (
            vec![8, 64, 32, 32],
            Box::new(nn::Conv2d::new(64, 128, 3).padding(1).name("conv")),
        ),
        "conv1d" => (
            vec![8, 64, 256],
            Box::new(nn::Conv1d::new(64, 128, 3).padding(1).name("conv")),
        ),
        "maxpool2d" => (
            vec![8, 64, 32, 32],
            Box::new(nn::MaxPool2d::new(2).stride(2).name("pool")),
        ),
        "maxpool2d-small" => (
            vec![4, 32, 16, 16],
            Box::new(nn::MaxPool2d::new(2).stride(2).name("pool")),
        ),
        "avgpool2d" => (
            vec![8, 64, 32, 32],
            Box::new(nn::AvgPool2d::new(2).stride(2).name("pool")),
        ),
        "avgpool2d-small" => (
            vec![4, 32, 16, 16],
            Box::new(nn::AvgPool2d::new(2).stride(2).name("pool")),
        ),
        "cnn" => (vec![32, 1, 28, 28], Box::new(cnn())),
        "mlp" => (vec![32, 784], Box::new(mlp())),
        "linear" => (
            vec![256, 1024],
            Box::new(nn::Linear::new(1024, 1024).name("fc")),
        ),
        other => {
            let names: Vec<&str> = MODELS.iter().map(|m| m.0).collect();
            return Err(KilnError::Invalid(format!(
                "unknown model `{other}`; built-in models: {}",
                names.join(", ")
            )));
        }
    };
    let mut graph = Graph::with_seed(seed);
    let x = graph.input("x", shape.clone())?;
    let output = layer.build(&mut graph, x)?;
    Ok(Model {
        graph,
        output,
        inputs: vec![("x".into(), shape)],
    })
}

/// Built-in model `name` as a program for the compiler: its forward output,
/// or with `train` its training graph. For `cnn` and `mlp` that is a whole
/// training step (outputs `[loss]`; softmax cross-entropy against an input
/// `labels`; SGD with lr 0.01 and momentum 0.9 as parameter updates). For the
/// single layers it is the seed benchmark's forward+backward graph: outputs
/// `[y, dx, d(each parameter)]` for a fixed upstream gradient input `grad_y`.
pub fn program(name: &str, seed: u64, train: bool) -> Result<Program> {
    let Model {
        mut graph,
        output,
        inputs,
    } = build(name, seed)?;
    if !train {
        return Ok(Program {
            graph,
            outputs: vec![output],
            updates: vec![],
        });
    }
    if matches!(name, "cnn" | "mlp") {
        let labels = graph.input("labels", [inputs[0].1[0]])?;
        let loss = nn::softmax_cross_entropy(&mut graph, output, labels, nn::Reduction::Mean)?;
        let updates =
            crate::trainer::training_step(&mut graph, loss, &Sgd::new(0.01).momentum(0.9))?;
        return Ok(Program {
            graph,
            outputs: vec![loss],
            updates,
        });
    }
    let gy = graph.input("grad_y", graph.shape(output)?.to_vec())?;
    let prod = graph.mul(output, gy)?;
    let loss = graph.sum_all(prod)?;
    let x = graph
        .inputs()
        .find(|(n, _)| *n == "x")
        .map(|(_, id)| id)
        .expect("every built-in model has input x");
    let mut wrt = vec![x];
    wrt.extend(graph.trainable_params().into_iter().map(|p| p.1));
    let grads = graph.grad(loss, &wrt)?;
    let mut outputs = vec![output];
    outputs.extend(grads);
    Ok(Program {
        graph,
        outputs,
        updates: vec![],
    })
}
