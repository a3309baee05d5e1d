use kiln::kernels::conv::{conv_forward, conv_input_grad, conv_kernel_grad, ConvDims};
use kiln::kernels::im2col::Geom;
use kiln::kernels::par;
use std::time::Instant;
fn main() {
    let what = std::env::args().nth(1).unwrap_or("fwd".into());
    let n = 2;
    let geom = Geom {
        kernel: [3, 3],
        stride: [1, 1],
        pad: [1, 1],
        dilation: [1, 1],
        h: 32,
        w: 32,
    };
    let d = ConvDims {
        n,
        cin: 64,
        cout: 128,
        groups: 1,
        geom,
    };
    let x: Vec<f32> = (0..n * 64 * 1024).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..128 * 576).map(|i| (i % 5) as f32 * 0.1).collect();
    let b = vec![0.5f32; 128];
    let mut y = vec![0f32; n * 128 * 1024];
    let mut dw = vec![0f32; w.len()];
    let mut dx = vec![0f32; x.len()];
    let gy = y.clone();
    let mut times = Vec::new();
    par::sequential(|| {
        for _ in 0..300 {
            let t = Instant::now();
            match what.as_str() {
                "fwd" => conv_forward(&d, &x, &w, Some(&b), &mut y, &|_| {}),
                "kg" => conv_kernel_grad(&d, &x, &gy, &mut dw),
                _ => conv_input_grad(&d, &w, &gy, &mut dx),
            }
            times.push(t.elapsed().as_secs_f64());
        }
    });
    times.sort_by(|a, b| a.total_cmp(b));
    let flop = 2.0 * (n * 128 * 576 * 1024) as f64;
    println!(
        "{what}: median {:.0} us {:.1} GFLOP/s, best {:.1}",
        times[150] * 1e6,
        flop / times[150] / 1e9,
        flop / times[0] / 1e9
    );
}
