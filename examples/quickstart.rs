use kiln::nn::{self, Layer};
use kiln::{compile, Graph, Tensor};

fn main() -> kiln::Result<()> {
    let mut g = Graph::with_seed(42);
    let x = g.input("x", [4, 1, 28, 28])?;
    let net = nn::Sequential::new()
        .push(nn::Conv2d::new(1, 8, 3).padding(1).name("conv"))
        .push(nn::Relu)
        .push(nn::MaxPool2d::new(2))
        .push(nn::Flatten)
        .push(nn::Linear::new(8 * 14 * 14, 10).name("fc"));
    let logits = net.build(&mut g, x)?; // shape errors surface here, naming the layer
    let probs = nn::softmax(&mut g, logits, -1)?;

    let mut exe = compile(&g, &[probs])?;
    let out = exe.run(&[("x", &Tensor::rand_uniform([4, 1, 28, 28], 0.0, 1.0, 7))])?;
    assert_eq!(out[0].shape(), &[4, 10]);
    println!("{}", kiln::graph::dump::to_text(&g, &[probs]));
    Ok(())
}
