//! Data-parallel training across real MPI processes (feature `mpi`): each
//! test starts `mpirun -np 2 --oversubscribe --allow-run-as-root` on this
//! test binary, whose `rank_main` then runs one scenario as one rank, and
//! checks what the job printed and how it ended. Without `mpirun` on the
//! PATH the tests print why and pass without running (CI installs Open MPI
//! first: `scripts/install-mpi.sh`).
//!
//! - `two_ranks_equal_single_process`: 2 ranks × 1 thread, k = 6 Adam
//!   steps with dropout: every parameter equals single-process
//!   `train_step_parallel` with 2 workers (to 1e-12 in f64, 1e-5 in f32;
//!   seen: bit-identical) and 1 rank on the full batch without dropout (to
//!   the same tolerances); the ranks' parameters are bit-identical.
//! - `a_rank_with_another_shape_stops_every_rank`: rank 1 builds a
//!   different hidden size; both ranks report the same error naming rank 1
//!   and the parameter, and the job ends (a hang would hit the test's
//!   timeout).
//! - `a_rank_that_dies_ends_the_job` / `a_rank_that_panics_ends_the_job`:
//!   one rank exits or panics mid-training while the other waits in an
//!   all-reduce; the launcher (or the panic hook's `MPI_Abort`) ends the
//!   job with a failure status instead of a hang.
//! - `a_two_rank_checkpoint_resumes_in_one_process_and_under_mpi`: rank 0's
//!   checkpoint at step 4 continues, in one process and as a new 2-rank
//!   job reading it through rank 0, exactly as the uninterrupted 2-rank
//!   run (to 1e-12, f64).
#![cfg(feature = "mpi")]

#[path = "common/char_ranks.rs"]
mod char_ranks;

use char_ranks::{config, max_diff, max_loss_diff, params, streams, train_ranks, train_single};
use char_ranks::{SEQ, TEXT};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tapegrad::distributed::{check_params_equal, Collective, Mpi, Solo, WorldDescription};
use tapegrad::models::{CharModel, Vocab};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::parallel::DataParallel;
use tapegrad::Real;

const SCENARIO: &str = "TAPEGRAD_MPI_SCENARIO";
const DIR: &str = "TAPEGRAD_MPI_DIR";
/// A job still running after this long is hung (it takes ~1–3 s).
const HANG: Duration = Duration::from_secs(120);

/// What `mpirun` reported.
struct Job {
    success: bool,
    out: String,
}

/// Runs `scenario` on 2 ranks under `mpirun` with `dir` (removed
/// afterwards) for its files, or `None` (with the reason printed) if there
/// is no `mpirun`.
fn mpirun(scenario: &str, dir: &std::path::Path) -> Option<Job> {
    if Command::new("mpirun").arg("--version").output().is_err() {
        println!("skipped: no `mpirun` on the PATH (run scripts/install-mpi.sh)");
        return None;
    }
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut child = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", "--allow-run-as-root"])
        .args(["-x", SCENARIO, "-x", DIR])
        .arg(&exe)
        .args([
            "rank_main",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO, scenario)
        .env(DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun starts");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > HANG {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the job `{scenario}` hung for {HANG:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "--- `{scenario}`: {status} after {:.1?}\n{out}---",
        started.elapsed()
    );
    std::fs::remove_dir_all(dir).unwrap();
    Some(Job {
        success: status.success(),
        out,
    })
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tapegrad-mpi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn two_ranks_equal_single_process() {
    let dir = temp_dir("equal");
    let Some(job) = mpirun("equal", &dir) else {
        return;
    };
    assert!(job.success, "{}", job.out);
    for dtype in ["f64", "f32"] {
        assert!(
            job.out.contains(&format!("equal {dtype}: ok")),
            "{}",
            job.out
        );
    }
}

#[test]
fn a_rank_with_another_shape_stops_every_rank() {
    let dir = temp_dir("mismatch");
    let Some(job) = mpirun("mismatch", &dir) else {
        return;
    };
    let needles = [
        "rank 1 differs from rank 0: sizes: embed 8, hidden 16, layers 2, dropout 0.0 on rank 0, embed 8, hidden 12, layers 2, dropout 0.0 on rank 1",
        "parameter `lstm.weight_ih_l0`: f64 [64, 8] on rank 0, f64 [48, 8] on rank 1",
    ];
    for rank in 0..2 {
        let tag = format!("rank {rank} stopped: ");
        let line = job
            .out
            .lines()
            .find_map(|l| l.find(&tag).map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("rank {rank} reported nothing:\n{}", job.out));
        for needle in needles {
            assert!(line.contains(needle), "{line}");
        }
    }
    assert!(!job.out.contains("trained"), "{}", job.out);
}

#[test]
fn a_rank_that_dies_ends_the_job() {
    let dir = temp_dir("die");
    let Some(job) = mpirun("die", &dir) else {
        return;
    };
    assert!(!job.success, "{}", job.out);
    assert!(job.out.contains("rank 1 exits at step 2"), "{}", job.out);
    assert!(!job.out.contains("rank 0 finished"), "{}", job.out);
}

#[test]
fn a_rank_that_panics_ends_the_job() {
    let dir = temp_dir("panic");
    let Some(job) = mpirun("panic", &dir) else {
        return;
    };
    assert!(!job.success, "{}", job.out);
    assert!(
        job.out
            .contains("rank 1 of 2: aborting the MPI job after a panic"),
        "{}",
        job.out
    );
    assert!(job.out.contains("rank 1 panics at step 2"), "{}", job.out);
    assert!(!job.out.contains("rank 0 finished"), "{}", job.out);
}

#[test]
fn a_two_rank_checkpoint_resumes_in_one_process_and_under_mpi() {
    let dir = temp_dir("resume");
    let Some(job) = mpirun("resume", &dir) else {
        return;
    };
    assert!(job.success, "{}", job.out);
    assert!(job.out.contains("resume in one process: ok"), "{}", job.out);
    assert!(job.out.contains("resume under mpi: ok"), "{}", job.out);
}

/// One rank of the job the tests above start; ignored in a normal run
/// (it needs `mpirun` and a scenario).
#[test]
#[ignore = "runs as one MPI rank, started by the other tests under mpirun"]
fn rank_main() {
    let scenario = std::env::var(SCENARIO).expect("started by mpirun with a scenario");
    let world = Mpi::init().unwrap();
    assert_eq!(world.size(), 2);
    match scenario.as_str() {
        "equal" => {
            equal::<f64>(&world, 1e-12);
            equal::<f32>(&world, 1e-5);
        }
        "mismatch" => {
            let cfg = if world.rank() == 1 {
                config().hidden_size(12)
            } else {
                config()
            };
            let mut m = CharModel::<f64>::new(Vocab::from_text(TEXT), cfg, 1);
            match m.join_world(&world, WorldDescription::new()) {
                Ok(()) => println!("rank {} trained", world.rank()),
                Err(e) => {
                    // one write, so the ranks' lines do not interleave
                    let line = format!("rank {} stopped: {e}\n", world.rank());
                    print!("{line}");
                }
            }
        }
        "die" | "panic" => {
            let mut m = CharModel::<f64>::new(Vocab::from_text(TEXT), config(), 1);
            let mut opt = Adam::new(1e-3);
            let s = streams(m.vocab());
            let mut dp = DataParallel::new(1);
            let mut state = m.zero_state(2);
            for k in 0..1000 {
                if world.rank() == 1 && k == 2 {
                    if scenario == "die" {
                        println!("rank 1 exits at step 2");
                        std::process::exit(3);
                    }
                    panic!("rank 1 panics at step 2");
                }
                let b = s.batch(k, SEQ);
                m.train_step_distributed(&world, &mut dp, &mut opt, &b, &mut state, None, 0)
                    .unwrap();
            }
            println!("rank {} finished", world.rank());
        }
        "resume" => resume(&world),
        other => panic!("unknown scenario {other}"),
    }
}

fn equal<F: Real>(world: &Mpi, tol: f64) {
    const K: usize = 6;
    let init = CharModel::<F>::new(Vocab::from_text(TEXT), config().dropout(0.1), 5);
    let mut m = init.clone();
    m.join_world(world, WorldDescription::new()).unwrap();
    let losses = train_ranks(world, &mut m, &mut Adam::new(3e-3), 0..K);
    check_params_equal(world, m.store()).unwrap();

    let mut plain = CharModel::<F>::new(Vocab::from_text(TEXT), config(), 5);
    let mut one = plain.clone();
    train_ranks(world, &mut plain, &mut Adam::new(3e-3), 0..K);
    if world.rank() != 0 {
        return;
    }
    let mut two_workers = init.clone();
    let single = train_single(&mut two_workers, &mut Adam::new(3e-3), 2, 0..K);
    let d_workers = max_diff(&params(&m), &params(&two_workers));
    let d_loss = max_loss_diff(&losses, &single);
    train_ranks(&Solo, &mut one, &mut Adam::new(3e-3), 0..K);
    let d_one = max_diff(&params(&plain), &params(&one));
    println!(
        "{}: 2 MPI ranks vs 2 workers: max |Δθ| = {d_workers:e}, |Δloss| = {d_loss:e}; vs 1 rank on the full batch: {d_one:e}",
        F::NAME
    );
    assert!(d_workers <= tol && d_loss <= tol && d_one <= tol);
    assert!(max_diff(&params(&init), &params(&m)) > 1e3 * tol);
    println!("equal {}: ok", F::NAME);
}

fn resume(world: &Mpi) {
    let dir = std::path::PathBuf::from(std::env::var(DIR).unwrap());
    let path = dir.join("checkpoint.safetensors");
    let init = CharModel::<f64>::new(Vocab::from_text(TEXT), config(), 9);
    let mut m = init.clone();
    m.join_world(world, WorldDescription::new()).unwrap();
    let mut opt = Adam::new(3e-3);
    train_ranks(world, &mut m, &mut opt, 0..4);
    if world.rank() == 0 {
        m.save(&path, Some(&opt), 4, &Default::default()).unwrap();
    }
    let losses = train_ranks(world, &mut m, &mut opt, 4..8);

    // A new 2-rank job resuming from the file, read by rank 0 only.
    let mut bytes = if world.rank() == 0 {
        std::fs::read(&path).unwrap()
    } else {
        Vec::new()
    };
    world.broadcast_bytes(&mut bytes);
    let mut opt2 = Adam::new(0.5);
    let (mut again, info) = CharModel::<f64>::from_bytes(&bytes, Some(&mut opt2)).unwrap();
    assert_eq!(info.step, 4);
    again.join_world(world, WorldDescription::new()).unwrap();
    let losses2 = train_ranks(world, &mut again, &mut opt2, 4..8);
    let d_mpi = max_diff(&params(&m), &params(&again));
    assert!(
        d_mpi <= 1e-12 && max_loss_diff(&losses, &losses2) <= 1e-12,
        "{d_mpi}"
    );
    if world.rank() == 0 {
        println!("resume under mpi: ok (max |Δθ| = {d_mpi:e})");
        let mut opt1 = Adam::new(0.5);
        let (mut single, _) = CharModel::<f64>::load(&path, Some(&mut opt1)).unwrap();
        assert_eq!((opt1.steps(), opt1.lr()), (4, 3e-3));
        let losses1 = train_single(&mut single, &mut opt1, 2, 4..8);
        let d = max_diff(&params(&m), &params(&single));
        assert!(
            d <= 1e-12 && max_loss_diff(&losses, &losses1) <= 1e-12,
            "{d}"
        );
        println!("resume in one process: ok (max |Δθ| = {d:e})");
    }
}
