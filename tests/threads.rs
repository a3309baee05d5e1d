//! Results do not depend on the thread count: every benchmark row's
//! compiled graph, and 20 training steps of the cnn, give the same bits on
//! 1, 2, 3 and 4 threads (work is cut into pieces by size alone, and partial
//! sums are added in a fixed order).

use kiln::tooling::bench::{rows, Prepared};
use kiln::CompileOptions;

/// The bits of every output and parameter after `runs` runs on `threads` threads.
fn bits_after(row: &kiln::tooling::bench::Row, threads: usize, runs: usize) -> Vec<Vec<u32>> {
    let options = CompileOptions {
        threads: Some(threads),
        ..CompileOptions::default()
    };
    let mut p = Prepared::new(row, &options).unwrap();
    assert_eq!(p.exe.threads(), threads);
    for _ in 0..runs {
        p.run().unwrap();
    }
    let mut out: Vec<Vec<u32>> = (0..p.exe.num_outputs())
        .map(|i| {
            p.exe
                .output(i)
                .unwrap()
                .1
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect();
    let names: Vec<String> = p.exe.param_names().map(str::to_string).collect();
    for name in names {
        let data = p.exe.param_data(&name).unwrap();
        out.push(data.iter().map(|v| v.to_bits()).collect());
    }
    out
}

#[test]
fn every_row_and_twenty_cnn_steps_are_bit_identical_on_one_to_four_threads() {
    let mut checked = 0;
    for row in rows() {
        // the training rows apply their parameter updates each run: 20 steps
        let runs = if row.model == "cnn" || row.model == "mlp" {
            20
        } else {
            1
        };
        let want = bits_after(&row, 1, runs);
        for threads in 2..=4 {
            let got = bits_after(&row, threads, runs);
            assert_eq!(want.len(), got.len());
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                let differ = w.iter().zip(g).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ,
                    0,
                    "{}: result {i} differs in {differ} of {} elements on {threads} threads",
                    row.id(),
                    w.len()
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "rows checked: {checked}");
}
