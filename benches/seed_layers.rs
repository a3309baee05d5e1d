//! Forward time of the seed benchmark layers and the CNN on the executor.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::{compile, models, Tensor};

fn seed_forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_unrewritten");
    group.sample_size(10);
    for name in [
        "conv2d",
        "conv1d",
        "maxpool2d",
        "maxpool2d-small",
        "avgpool2d",
        "avgpool2d-small",
        "cnn",
    ] {
        let m = models::build(name, 0).expect("built-in model");
        let mut exe = compile(&m.graph, &[m.output]).expect("compile");
        let (input, shape) = &m.inputs[0];
        let x = Tensor::rand_uniform(shape.clone(), -1.0, 1.0, 1);
        group.bench_function(name, |b| {
            b.iter(|| exe.run(&[(input.as_str(), &x)]).expect("run"))
        });
    }
    group.finish();
}

criterion_group!(benches, seed_forward);
criterion_main!(benches);
