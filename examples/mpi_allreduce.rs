//! Times the gradient all-reduce alone: the sum across the ranks of a flat
//! `f32` buffer the size of the main job's gradients (879,176 elements,
//! 3.5 MB) and of one ten times larger, after a barrier (so no rank's
//! waiting for another is counted), as `CharModel::train_step_distributed`
//! does it every step.
//!
//! `cargo build --release --features mpi --example mpi_allreduce`, then
//! `mpirun -np 2 target/release/examples/mpi_allreduce [ELEMENTS…]`.

use std::time::Instant;
use tapegrad::distributed::{all_reduce_sum, Collective, Mpi};

fn main() {
    let world = match Mpi::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("mpi_allreduce: {e}");
            std::process::exit(1);
        }
    };
    let sizes: Vec<usize> = {
        let given: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if given.is_empty() {
            vec![879_176, 8_791_760]
        } else {
            given
        }
    };
    for n in sizes {
        let mut buf = vec![world.rank() as f32 + 1.0; n];
        let reps = (200_000_000 / n.max(1)).clamp(5, 100);
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            world.sum_f64(&mut [0.0]); // a barrier: every rank is here
            let t0 = Instant::now();
            all_reduce_sum(&world, &mut buf);
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[reps / 2];
        let bytes = 4.0 * n as f64;
        if world.rank() == 0 {
            println!(
                "{} ranks, {n} f32 ({:.1} MB): median {:.2} ms over {reps} all-reduces (min {:.2} ms), \
                 {:.2} GB/s of algorithm bandwidth 2·(N−1)/N·bytes/time",
                world.size(),
                bytes / 1e6,
                1e3 * median,
                1e3 * times[0],
                2.0 * (world.size() as f64 - 1.0) / world.size() as f64 * bytes / median / 1e9
            );
        }
    }
}
