//! The seed benchmark rows (see `kiln::tooling::bench::rows`): every layer's forward
//! and forward+backward graph and the `cnn` training step, each compiled and
//! unrewritten, on the executor's default threads (env `KILN_THREADS`).

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::tooling::bench::{rows, Prepared};
use kiln::CompileOptions;

fn seed_rows(c: &mut Criterion) {
    for row in rows() {
        let mut group = c.benchmark_group(row.id());
        group.sample_size(10);
        for (name, options) in [
            ("compiled", CompileOptions::default()),
            ("unrewritten", CompileOptions::unrewritten()),
        ] {
            let mut p = Prepared::new(&row, &options).expect("built-in rows compile");
            group.bench_function(name, |b| b.iter(|| p.run().expect("run")));
        }
        group.finish();
    }
}

criterion_group!(benches, seed_rows);
criterion_main!(benches);
