use kiln::nn::{self, Layer, Reduction};
use kiln::{optim::Sgd, Graph, I64Tensor, Tensor, Trainer};

fn main() -> kiln::Result<()> {
    let mut g = Graph::with_seed(42);
    let x = g.input("x", [4, 1, 28, 28])?;
    let labels = g.input_i64("labels", [4])?;
    let net = nn::Sequential::new()
        .push(nn::Conv2d::new(1, 8, 3).padding(1).name("conv"))
        .push(nn::Relu)
        .push(nn::MaxPool2d::new(2))
        .push(nn::Flatten)
        .push(nn::Linear::new(8 * 14 * 14, 10).name("fc"));
    let logits = net.build(&mut g, x)?; // shape errors surface here, naming the layer
    let loss = nn::softmax_cross_entropy(&mut g, logits, labels, Reduction::Mean)?;
    // derives the backward graph, adds the optimiser, compiles once
    let mut trainer = Trainer::with_outputs(g, loss, &[logits], Sgd::new(0.05).momentum(0.9))?;
    let (images, classes) = (
        Tensor::rand_uniform([4, 1, 28, 28], 0.0, 1.0, 7),
        I64Tensor::from(vec![3, 1, 4, 1]),
    );
    let first = trainer.step(&[("x", &images), ("labels", &classes)])?;
    for _ in 0..20 {
        trainer.step(&[("x", &images), ("labels", &classes)])?;
    }
    let last = trainer.step(&[("x", &images), ("labels", &classes)])?;
    assert!(last < first);
    let out = trainer.evaluate(&[("x", &images)])?; // forward only, dropout off
    assert_eq!(out[0].shape(), &[4, 10]);
    Ok(())
}
