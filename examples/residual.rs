//! A residual block written as a plain Rust type (the README's example),
//! nested in a `Sequential`, trained a few steps on random images, then
//! evaluated with BatchNorm's running statistics.
//!
//! `cargo run --release --example residual`

use kiln::nn::{self, Layer, Reduction};
use kiln::{optim::Sgd, Graph, I64Tensor, NodeId, OpBuilder, Tensor, Trainer};

struct Block {
    conv1: nn::Conv2d,
    bn1: nn::BatchNorm2d,
    conv2: nn::Conv2d,
    bn2: nn::BatchNorm2d,
}

impl Block {
    fn new(channels: usize, name: &str) -> Self {
        let conv = |part: &str| {
            nn::Conv2d::new(channels, channels, 3)
                .padding(1)
                .bias(false)
                .name(&format!("{name}.{part}"))
        };
        let bn = |part: &str| nn::BatchNorm2d::new(channels).name(&format!("{name}.{part}"));
        Block {
            conv1: conv("conv1"),
            bn1: bn("bn1"),
            conv2: conv("conv2"),
            bn2: bn("bn2"),
        }
    }
}

impl Layer for Block {
    fn build(&self, g: &mut Graph, x: NodeId) -> kiln::Result<NodeId> {
        let h = self.conv1.build(g, x)?;
        let h = self.bn1.build(g, h)?;
        let h = g.relu(h)?;
        let h = self.conv2.build(g, h)?;
        let h = self.bn2.build(g, h)?;
        let y = g.add(h, x)?; // the residual connection
        g.relu(y)
    }
}

fn main() -> kiln::Result<()> {
    let mut g = Graph::with_seed(7);
    let x = g.input("x", [8, 1, 12, 12])?;
    let labels = g.input_i64("labels", [8])?;
    let net = nn::Sequential::new()
        .push(nn::Conv2d::new(1, 8, 3).padding(1).name("stem"))
        .push(Block::new(8, "block1"))
        .push(Block::new(8, "block2"))
        .push(nn::GlobalAvgPool2d)
        .push(nn::Flatten)
        .push(nn::Linear::new(8, 4).name("fc"));
    let logits = net.build(&mut g, x)?;
    let loss = nn::softmax_cross_entropy(&mut g, logits, labels, Reduction::Mean)?;
    let mut trainer = Trainer::with_outputs(g, loss, &[logits], Sgd::new(0.1).momentum(0.9))?;
    let images = Tensor::rand_uniform([8, 1, 12, 12], 0.0, 1.0, 1);
    let classes = I64Tensor::from(vec![0, 1, 2, 3, 0, 1, 2, 3]);
    let first = trainer.step(&[("x", &images), ("labels", &classes)])?;
    let mut last = first;
    for _ in 0..30 {
        last = trainer.step(&[("x", &images), ("labels", &classes)])?;
    }
    println!("loss {first:.4} -> {last:.4} after 31 steps");
    for (name, value) in trainer.buffers().iter().take(3) {
        println!("{name}: {:?}", &value.data()[..value.numel().min(4)]);
    }
    let out = trainer.evaluate(&[("x", &images)])?;
    println!(
        "evaluation logits {:?} (running statistics)",
        out[0].shape()
    );
    assert!(last < first);
    Ok(())
}
