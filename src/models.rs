//! Built-in models: the seed benchmark's layer configurations and two small
//! networks. The CLI, benches and tests build them from here.

use crate::dtype::DType;
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
    ("resnet", "ResNet-8: conv 1→16 + BN + ReLU, three stages of one basic block (16, 32, 64 channels; stride 2 between stages, 1x1 conv + BN shortcuts), global average pool, linear 64→10 on [32,1,28,28]"),
    ("lstm", "LSTM 28→128 over the 28 rows of [32,1,28,28] images, its last hidden state to linear 128→10"),
    ("transformer", "character language model: embedding 65→64 + learned positions, 2 pre-norm causal encoder layers (4 heads, feed-forward 256), final LayerNorm, linear 64→65 on i64 ids [16,64]"),
];

/// The `transformer` model: a character-level language model over a
/// vocabulary of 65 on `i64` ids `[N, 64]` → logits `[N, 64, 65]`: token
/// embeddings plus learned position embeddings (`d_model` 64), two
/// pre-norm encoder layers (4 heads, feed-forward 256, no dropout) with a
/// causal mask, a final LayerNorm and a linear head (GPT's layout).
#[derive(Clone, Debug)]
pub struct CharTransformer {
    vocab: usize,
    d_model: usize,
    context: usize,
}

impl CharTransformer {
    /// The `transformer` model's sizes.
    pub fn new() -> Self {
        CharTransformer {
            vocab: 65,
            d_model: 64,
            context: 64,
        }
    }

    /// The same model over a vocabulary of `vocab` symbols (a corpus's
    /// distinct characters).
    pub fn vocab(mut self, vocab: usize) -> Self {
        self.vocab = vocab;
        self
    }

    /// The number of positions it reads (its input is `[N, context]`).
    pub fn context(&self) -> usize {
        self.context
    }

    /// The number of symbols it reads and predicts.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }
}

impl Default for CharTransformer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for CharTransformer {
    fn build(&self, g: &mut Graph, ids: NodeId) -> Result<NodeId> {
        let tokens = nn::Embedding::new(self.vocab, self.d_model)
            .name("tok_emb")
            .build(g, ids)?;
        let init = crate::graph::Init::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let pos = g.param("pos_emb", [self.context, self.d_model], init)?;
        let x = g.add(tokens, pos)?;
        let layer = nn::TransformerEncoderLayer::new(self.d_model, 4)
            .dim_feedforward(4 * self.d_model)
            .dropout(0.0)
            .batch_first(true)
            .norm_first(true);
        let masks = nn::EncoderMasks {
            is_causal: true,
            ..nn::EncoderMasks::default()
        };
        let h = nn::TransformerEncoder::new(layer, 2)
            .final_norm(true)
            .name("encoder")
            .forward(g, x, &masks)?;
        nn::Linear::new(self.d_model, self.vocab)
            .name("head")
            .build(g, h)
    }
}

/// The element type of built-in model `name`'s input: `i64` token ids for
/// `transformer`, f32 otherwise.
pub fn input_dtype(name: &str) -> DType {
    match name {
        "transformer" => DType::I64,
        _ => DType::F32,
    }
}

/// A sequence classifier on images: the `28` rows of a `[N, 1, 28, 28]`
/// image are the steps of an LSTM (28 → 128), whose last hidden state a
/// linear layer maps to 10 logits (the `lstm` model; PyTorch's
/// `fc(lstm(x.view(N, 28, 28))[1][0][-1])`).
#[derive(Clone, Debug)]
pub struct RowLstm {
    lstm: nn::Lstm,
    fc: nn::Linear,
}

impl RowLstm {
    /// The `lstm` model's layers, named `lstm` and `fc`.
    pub fn new() -> Self {
        RowLstm {
            lstm: nn::Lstm::new(28, 128).name("lstm"),
            fc: nn::Linear::new(128, 10).name("fc"),
        }
    }
}

impl Default for RowLstm {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for RowLstm {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let n = g.shape(x)?.first().copied().unwrap_or(0);
        let rows = g.reshape(x, &[n as isize, 28, 28])?;
        let h_n = self.lstm.forward(g, rows, None)?.h_n; // [1, N, 128]
        let last = g.reshape(h_n, &[n as isize, 128])?;
        self.fc.build(g, last)
    }
}

/// A ResNet basic block (`torchvision.models.resnet.BasicBlock`):
/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, both convolutions
/// 3x3 without bias, the first with `stride`; the shortcut is `x` itself,
/// or a 1x1 convolution with `stride` and a BatchNorm where the shape
/// changes. Input `[N, in, H, W]`, output `[N, out, ⌈H/stride⌉, ⌈W/stride⌉]`.
pub struct BasicBlock {
    conv1: nn::Conv2d,
    bn1: nn::BatchNorm2d,
    conv2: nn::Conv2d,
    bn2: nn::BatchNorm2d,
    shortcut: Option<nn::Sequential>,
}

impl BasicBlock {
    /// `in_channels → out_channels`, the first convolution with `stride`;
    /// parameters named `{name}.conv1.weight`, `{name}.bn1.running_mean`, ...
    pub fn new(in_channels: usize, out_channels: usize, stride: usize, name: &str) -> Self {
        let conv = |i, s, part: &str| {
            nn::Conv2d::new(i, out_channels, 3)
                .stride(s)
                .padding(1)
                .bias(false)
                .name(&format!("{name}.{part}"))
        };
        let bn = |part: &str| nn::BatchNorm2d::new(out_channels).name(&format!("{name}.{part}"));
        let shortcut = (stride != 1 || in_channels != out_channels).then(|| {
            nn::Sequential::new()
                .push(
                    nn::Conv2d::new(in_channels, out_channels, 1)
                        .stride(stride)
                        .bias(false)
                        .name(&format!("{name}.downsample.0")),
                )
                .push(bn("downsample.1"))
        });
        BasicBlock {
            conv1: conv(in_channels, stride, "conv1"),
            bn1: bn("bn1"),
            conv2: conv(out_channels, 1, "conv2"),
            bn2: bn("bn2"),
            shortcut,
        }
    }
}

impl Layer for BasicBlock {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let h = self.conv1.build(g, x)?;
        let h = self.bn1.build(g, h)?;
        let h = g.relu(h)?;
        let h = self.conv2.build(g, h)?;
        let h = self.bn2.build(g, h)?;
        let s = match &self.shortcut {
            Some(downsample) => downsample.build(g, x)?,
            None => x,
        };
        let y = g.add(h, s)?;
        g.relu(y)
    }
}

/// A ResNet for `[N, 1, 28, 28]` images and 10 classes, in the CIFAR
/// ResNet's shape (He et al. 2016, §4.2): a 3x3 convolution to 16 channels
/// with BatchNorm and ReLU, three stages of `blocks` [`BasicBlock`]s with
/// 16, 32 and 64 channels (the 2nd and 3rd starting with stride 2), global
/// average pooling and a linear layer. `blocks` 1 is ResNet-8, 3 ResNet-20.
pub fn resnet(blocks: usize) -> nn::Sequential {
    let mut net = nn::Sequential::new()
        .push(
            nn::Conv2d::new(1, 16, 3)
                .padding(1)
                .bias(false)
                .name("conv1"),
        )
        .push(nn::BatchNorm2d::new(16).name("bn1"))
        .push(nn::Relu);
    let mut channels = 16;
    for (stage, width) in [16, 32, 64].into_iter().enumerate() {
        for b in 0..blocks {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let name = format!("layer{}.{b}", stage + 1);
            net = net.push(BasicBlock::new(channels, width, stride, &name));
            channels = width;
        }
    }
    net.push(nn::GlobalAvgPool2d)
        .push(nn::Flatten)
        .push(nn::Linear::new(64, 10).name("fc"))
}

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

/// The image classifiers `kiln train --model` trains on `[N, 1, 28, 28]`
/// images of 10 classes: `(name, description)`.
pub const CLASSIFIERS: &[(&str, &str)] = &[
    ("cnn", "the cnn model"),
    ("mlp", "flatten, then the mlp model"),
    ("resnet", "ResNet-8: resnet(1)"),
    ("resnet20", "ResNet-20: resnet(3)"),
    ("lstm", "an LSTM over the image rows: RowLstm"),
];

/// Classifier `name` of [`CLASSIFIERS`]; `Err` listing them otherwise.
pub fn classifier(name: &str) -> Result<nn::Sequential> {
    Ok(match name {
        "cnn" => cnn(),
        "mlp" => nn::Sequential::new().push(nn::Flatten).push(mlp()),
        "resnet" => resnet(1),
        "resnet20" => resnet(3),
        "lstm" => nn::Sequential::new().push(RowLstm::new()),
        other => {
            let names: Vec<&str> = CLASSIFIERS.iter().map(|m| m.0).collect();
            return Err(KilnError::Invalid(format!(
                "unknown classifier `{other}`; kiln train trains: {}",
                names.join(", ")
            )));
        }
    })
}

/// Builds built-in model `name` with parameters drawn from `seed`.
pub fn build(name: &str, seed: u64) -> Result<Model> {
    let (shape, layer) = layer(name)?;
    let mut graph = Graph::with_seed(seed);
    let x = match input_dtype(name) {
        DType::I64 => graph.input_i64("x", shape.clone())?,
        DType::F32 => graph.input("x", shape.clone())?,
    };
    let output = layer.build(&mut graph, x)?;
    Ok(Model {
        graph,
        output,
        inputs: vec![("x".into(), shape)],
    })
}

/// Built-in model `name` as a layer, with its input shape; `Err` listing the models otherwise.
pub fn layer(name: &str) -> Result<(Vec<usize>, Box<dyn Layer>)> {
    Ok(match name {
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
        "resnet" => (vec![32, 1, 28, 28], Box::new(resnet(1))),
        "lstm" => (vec![32, 1, 28, 28], Box::new(RowLstm::new())),
        "transformer" => (vec![16, 64], Box::new(CharTransformer::new())),
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
    })
}

/// Built-in model `name` as a program for the compiler: its forward output,
/// or with `train` its training graph. For `cnn`, `mlp`, `resnet`, `lstm` and
/// `transformer` (labels: the next character at each position) that is a whole
/// training step (outputs `[loss]`; softmax cross-entropy against an input
/// `labels`; SGD with lr 0.01 and momentum 0.9 as parameter updates). For the
/// single layers it is the seed benchmark's forward+backward graph: outputs
/// `[y, dx, d(each parameter)]` for a fixed upstream gradient input `grad_y`.
pub fn program(name: &str, seed: u64, train: bool) -> Result<Program> {
    let Model {
        mut graph, output, ..
    } = build(name, seed)?;
    if !train {
        return Ok(Program {
            graph,
            outputs: vec![output],
            updates: vec![],
        });
    }
    // a whole training step: cross-entropy of `[rows, classes]` logits
    // against one i64 label per row, SGD with momentum
    let logits = match name {
        // next-character prediction: one label per position
        "transformer" => {
            let s = graph.shape(output)?.to_vec();
            graph.reshape(output, &[(s[0] * s[1]) as isize, s[2] as isize])?
        }
        "cnn" | "mlp" | "resnet" | "lstm" => output,
        _ => return layer_gradients(graph, output),
    };
    let rows = graph.shape(logits)?[0];
    let labels = graph.input_i64("labels", [rows])?;
    let loss = nn::softmax_cross_entropy(&mut graph, logits, labels, nn::Reduction::Mean)?;
    let updates = crate::trainer::training_step(&mut graph, loss, &Sgd::new(0.01).momentum(0.9))?;
    Ok(Program {
        graph,
        outputs: vec![loss],
        updates,
    })
}

/// A single layer's forward+backward program: outputs `[y, dx, d(each
/// parameter)]` for a fixed upstream gradient input `grad_y`.
fn layer_gradients(mut graph: Graph, output: NodeId) -> Result<Program> {
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
