//! The main job: train a stacked character-level LSTM language model (or
//! one of another cell, `--cell`) on the
//! bundled corpus (the King James Version, Genesis to Deuteronomy), with a
//! progress bar, sampled text every so often, a held-out validation split
//! reported in bits per character, checkpoints you can resume from, and the
//! loss curves drawn as an SVG.
//!
//! `cargo run --release --example char_lstm [-- --help]`
//!
//! Writes into `--out` (default `out/char_lstm`): `checkpoint.safetensors`
//! (PyTorch names and dtypes, plus the Adam state and the step), `loss.svg`
//! and `loss.csv` (train and validation bits per character), `sample.txt`.
//!
//! It never loses work: everything that can be checked before training is
//! (flags, the corpus, the prompt against the vocabulary, a resumed
//! checkpoint's vocabulary against the corpus), so bad input fails in one
//! line before a step is run and before `--out` is created; a checkpoint is
//! saved every `--checkpoint-every` steps and at the end, before anything
//! else is written; a run that trains no step writes nothing. The tests at
//! the end of this file run it on tiny corpora (`cargo test --example
//! char_lstm`, part of `cargo test`).
//!
//! Across processes (feature `mpi`): `mpirun -np N cargo run --release
//! --features mpi --example char_lstm -- …` — each rank trains on its share
//! of the streams, the gradients are all-reduced every step
//! (`tapegrad::distributed`), rank 0 prints, samples and writes the files.

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tapegrad::checkpoint;
use tapegrad::distributed::{
    check_params_equal, fingerprint, rank_streams, Collective, Timed, WorldDescription,
};
use tapegrad::layers::{
    Cell, GruCell, LayerNormLstmCell, LstmCell, MinGruCell, MinLstmCell, PeepholeLstmCell,
    ProjLstmCell, RnnCell,
};
use tapegrad::models::{CharModel, CharModelConfig, CharStreams, Sampling, Vocab};
use tapegrad::optim::{Adagrad, Adam, LrSchedule, Optimizer, RmsProp, Sgd};
use tapegrad::parallel::DataParallel;
use tapegrad::Tape;

const USAGE: &str = "\
Train a character-level LSTM language model.

usage: cargo run --release --example char_lstm -- [options]

  --corpus PATH         text to learn [data/kjv-genesis-deuteronomy.txt]
  --cell NAME           recurrent cell [lstm]: lstm | gru | rnn (tanh) | mingru |
                        minlstm | ln_lstm (layer-normalised) | peephole_lstm |
                        proj_lstm (h projected to hidden/2)
  --hidden N            LSTM hidden size [256]
  --embed N             character embedding size [64]
  --layers N            stacked LSTM layers [2]
  --seq-len N           truncated-BPTT length in characters [64]
  --batch N             parallel streams per step [32]
  --steps N             training steps (total, counting resumed ones) [1200]
  --lr X                peak learning rate, > 0 [0.004]
  --warmup N            linear warm-up steps, then cosine decay to lr/10 [50]
  --optimizer NAME      adam | adamw | sgd | adagrad | rmsprop [adam]
  --clip X              clip the global gradient norm to X (0 = off) [1]
  --dropout P           dropout on embeddings, between and after layers [0]
  --locked-dropout P    AWD-LSTM: one mask per sequence on embeddings, between and after layers [0]
  --weight-drop P       AWD-LSTM: DropConnect on every weight_hh, one mask per step [0]
  --embed-dropout P     AWD-LSTM: drop whole characters' embedding rows [0]
  --seed N              initialisation and dropout seed [1]
  --threads N           GEMM threads (0 = all cores) [1: at this size a second thread measured 4% slower]
  --workers N           data-parallel workers: the streams split into N shards, one tape and
                        thread each, gradients summed (GEMMs one thread per worker) [1]
  --val-fraction X      share of the corpus (its end) held out [0.05]
  --eval-every N        validation loss every N steps [200]
  --sample-every N      print a sample every N steps [400]
  --checkpoint-every N  save a checkpoint every N steps, and always after the last [400]
  --sample-len N        characters per sample [300]
  --prompt TEXT         sample prompt, characters of the corpus [\"And the LORD said unto Moses, \"]
  --temperature X       sampling temperature [0.8]
  --top-k N             sample among the k likeliest characters (0 = all) [10]
  --out DIR             output directory [out/char_lstm]
  --resume PATH         continue from a checkpoint (its sizes and optimizer win)
  --help                this text

Under mpirun (built with --features mpi) the streams are split over the ranks and the
gradients all-reduced every step; rank 0 reads --resume, prints and writes the files.
";

#[derive(Debug, Clone)]
struct Args {
    corpus: PathBuf,
    cell: String,
    hidden: usize,
    embed: usize,
    layers: usize,
    seq_len: usize,
    batch: usize,
    steps: u64,
    lr: f64,
    warmup: u64,
    optimizer: String,
    clip: f64,
    dropout: f64,
    locked_dropout: f64,
    weight_drop: f64,
    embed_dropout: f64,
    seed: u64,
    threads: usize,
    workers: usize,
    val_fraction: f64,
    eval_every: u64,
    sample_every: u64,
    checkpoint_every: u64,
    sample_len: usize,
    prompt: String,
    temperature: f64,
    top_k: usize,
    out: PathBuf,
    resume: Option<PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            corpus: "data/kjv-genesis-deuteronomy.txt".into(),
            cell: "lstm".into(),
            hidden: 256,
            embed: 64,
            layers: 2,
            seq_len: 64,
            batch: 32,
            steps: 1200,
            lr: 4e-3,
            warmup: 50,
            optimizer: "adam".into(),
            clip: 1.0,
            dropout: 0.0,
            locked_dropout: 0.0,
            weight_drop: 0.0,
            embed_dropout: 0.0,
            seed: 1,
            threads: 1,
            workers: 1,
            val_fraction: 0.05,
            eval_every: 200,
            sample_every: 400,
            checkpoint_every: 400,
            sample_len: 300,
            prompt: "And the LORD said unto Moses, ".into(),
            temperature: 0.8,
            top_k: 10,
            out: "out/char_lstm".into(),
            resume: None,
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("{flag}: cannot parse `{v}`"))
    }
    let mut a = Args::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
        match flag.as_str() {
            "--corpus" => a.corpus = v.into(),
            "--cell" => a.cell = v,
            "--hidden" => a.hidden = num(&flag, &v)?,
            "--embed" => a.embed = num(&flag, &v)?,
            "--layers" => a.layers = num(&flag, &v)?,
            "--seq-len" => a.seq_len = num(&flag, &v)?,
            "--batch" => a.batch = num(&flag, &v)?,
            "--steps" => a.steps = num(&flag, &v)?,
            "--lr" => a.lr = num(&flag, &v)?,
            "--warmup" => a.warmup = num(&flag, &v)?,
            "--optimizer" => a.optimizer = v,
            "--clip" => a.clip = num(&flag, &v)?,
            "--dropout" => a.dropout = num(&flag, &v)?,
            "--locked-dropout" => a.locked_dropout = num(&flag, &v)?,
            "--weight-drop" => a.weight_drop = num(&flag, &v)?,
            "--embed-dropout" => a.embed_dropout = num(&flag, &v)?,
            "--seed" => a.seed = num(&flag, &v)?,
            "--threads" => a.threads = num(&flag, &v)?,
            "--workers" => a.workers = num(&flag, &v)?,
            "--val-fraction" => a.val_fraction = num(&flag, &v)?,
            "--eval-every" => a.eval_every = num(&flag, &v)?,
            "--sample-every" => a.sample_every = num(&flag, &v)?,
            "--checkpoint-every" => a.checkpoint_every = num(&flag, &v)?,
            "--sample-len" => a.sample_len = num(&flag, &v)?,
            "--prompt" => a.prompt = v,
            "--temperature" => a.temperature = num(&flag, &v)?,
            "--top-k" => a.top_k = num(&flag, &v)?,
            "--out" => a.out = v.into(),
            "--resume" => a.resume = Some(v.into()),
            _ => return Err(format!("unknown flag {flag} (see --help)")),
        }
    }
    if a.hidden == 0 || a.embed == 0 || a.layers == 0 || a.seq_len == 0 || a.batch == 0 {
        return Err("sizes must be > 0".into());
    }
    if a.workers == 0 || a.workers > a.batch {
        return Err(format!(
            "--workers {} must be between 1 and --batch ({})",
            a.workers, a.batch
        ));
    }
    for (flag, p) in [
        ("--dropout", a.dropout),
        ("--locked-dropout", a.locked_dropout),
        ("--weight-drop", a.weight_drop),
        ("--embed-dropout", a.embed_dropout),
    ] {
        if !(0.0..1.0).contains(&p) {
            return Err(format!("{flag} {p} is not in [0, 1)"));
        }
    }
    if !CELLS.contains(&a.cell.as_str()) {
        return Err(format!(
            "unknown cell `{}` (--cell {})",
            a.cell,
            CELLS.join(" | ")
        ));
    }
    if a.cell == "proj_lstm" && a.hidden < 2 {
        return Err(format!(
            "--cell proj_lstm projects h to --hidden / 2, so --hidden must be at least 2 (got {})",
            a.hidden
        ));
    }
    if !(0.0..0.5).contains(&a.val_fraction) {
        return Err(format!(
            "--val-fraction {} is not in [0, 0.5)",
            a.val_fraction
        ));
    }
    for (name, v) in [
        ("--eval-every", a.eval_every),
        ("--sample-every", a.sample_every),
        ("--checkpoint-every", a.checkpoint_every),
    ] {
        if v == 0 {
            return Err(format!("{name} must be > 0"));
        }
    }
    check_hyper_parameters(&a)?;
    Ok(a)
}

/// The real-valued flags, refused as clearly as `--dropout 1.5` is when
/// out of range (a negative learning rate would train by gradient ascent).
fn check_hyper_parameters(a: &Args) -> Result<(), String> {
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(format!("--lr {} must be a finite number > 0", a.lr));
    }
    if !(a.clip.is_finite() && a.clip >= 0.0) {
        return Err(format!(
            "--clip {} must be a finite number ≥ 0 (0 = off)",
            a.clip
        ));
    }
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        return Err(format!(
            "--temperature {} must be a finite number ≥ 0 (0 = greedy)",
            a.temperature
        ));
    }
    if a.prompt.is_empty() {
        return Err("--prompt must hold at least one character".into());
    }
    Ok(())
}

/// Characters of `text` outside `vocab`, quoted for a message.
fn quoted(chars: &[char]) -> String {
    chars
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The prompt must be sampleable: checked before training, not after.
fn check_prompt(prompt: &str, vocab: &Vocab) -> Result<(), String> {
    let missing = vocab.missing(prompt);
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "--prompt {prompt:?}: {} not in the model's vocabulary ({} characters of the corpus); \
         choose a prompt made of the corpus's characters",
        match missing.len() {
            1 => format!("character {} is", quoted(&missing)),
            _ => format!("characters {} are", quoted(&missing)),
        },
        vocab.len()
    ))
}

/// A resumed model must be able to read the corpus: say how the
/// checkpoint's vocabulary and the corpus's differ.
fn check_resume_vocab(path: &Path, model: &Vocab, text: &str) -> Result<(), String> {
    let missing = model.missing(text);
    if missing.is_empty() {
        return Ok(());
    }
    let corpus = Vocab::from_text(text);
    let unused = corpus.missing(&model.as_string());
    let mut msg = format!(
        "--resume {}: the checkpoint's vocabulary ({} characters) differs from the corpus's ({} \
         characters): the corpus has {} that the checkpoint lacks",
        path.display(),
        model.len(),
        corpus.len(),
        quoted(&missing)
    );
    if !unused.is_empty() {
        msg.push_str(&format!(
            ", and the checkpoint has {} that the corpus lacks",
            quoted(&unused)
        ));
    }
    msg.push_str("; resume on the corpus the checkpoint was trained on (--corpus)");
    Err(msg)
}

fn make_optimizer(kind: &str, lr: f64) -> Result<Box<dyn Optimizer<f32>>, String> {
    Ok(match kind {
        "adam" => Box::new(Adam::new(lr)),
        "adamw" => Box::new(Adam::adamw(lr, 0.01)),
        "sgd" => Box::new(Sgd::new(lr).momentum(0.9)),
        "adagrad" => Box::new(Adagrad::new(lr)),
        "rmsprop" => Box::new(RmsProp::new(lr)),
        other => return Err(format!("unknown optimizer `{other}` (see --help)")),
    })
}

/// Loss curves in bits per character: (step, bpc) points.
#[derive(Debug, Default, Clone)]
struct Curves {
    train: Vec<(u64, f64)>,
    val: Vec<(u64, f64)>,
}

impl Curves {
    fn encode(points: &[(u64, f64)]) -> String {
        points
            .iter()
            .map(|(s, v)| format!("{s}:{v:.5}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn decode(s: &str) -> Vec<(u64, f64)> {
        s.split(',')
            .filter_map(|p| {
                let (a, b) = p.split_once(':')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect()
    }

    fn to_metadata(&self, meta: &mut BTreeMap<String, String>) {
        meta.insert("char_lstm.train_bpc".into(), Self::encode(&self.train));
        meta.insert("char_lstm.val_bpc".into(), Self::encode(&self.val));
    }

    fn from_metadata(meta: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| meta.get(k).map(|s| Self::decode(s)).unwrap_or_default();
        Curves {
            train: get("char_lstm.train_bpc"),
            val: get("char_lstm.val_bpc"),
        }
    }

    fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut s = String::from("split,step,bits_per_char\n");
        for (name, pts) in [("train", &self.train), ("val", &self.val)] {
            for (step, v) in pts {
                s.push_str(&format!("{name},{step},{v:.5}\n"));
            }
        }
        std::fs::write(path, s)
    }

    fn plot(
        &self,
        path: &Path,
        title: &str,
        train_label: &str,
        val_label: &str,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let all = self.train.iter().chain(&self.val);
        let max_step = all.clone().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
        let hi = all.clone().map(|p| p.1).fold(0.0, f64::max).min(8.0) * 1.05;
        let lo = all.map(|p| p.1).fold(f64::INFINITY, f64::min).min(hi) * 0.95;
        let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..max_step, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("training step")
            .y_desc("bits per character")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()?;
        let blue = RGBColor(31, 119, 180);
        let red = RGBColor(214, 39, 40);
        chart
            .draw_series(LineSeries::new(
                self.train.iter().map(|&(s, v)| (s as f64, v.min(hi))),
                blue.stroke_width(2),
            ))?
            .label(train_label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                self.val.iter().map(|&(s, v)| (s as f64, v.min(hi))),
                red.stroke_width(2),
            ))?
            .label(val_label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
        chart.draw_series(
            self.val
                .iter()
                .map(|&(s, v)| Circle::new((s as f64, v.min(hi)), 3, red.filled())),
        )?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// Prints above the progress bar, or plainly when there is no bar (output
/// not a terminal).
fn say(pb: &ProgressBar, line: &str) {
    if pb.is_hidden() {
        println!("{line}");
    } else {
        pb.println(line);
    }
}

/// The processes training together: an MPI job with the `mpi` feature, this
/// process alone without it.
#[cfg(feature = "mpi")]
type World = Timed<tapegrad::distributed::Mpi>;
#[cfg(not(feature = "mpi"))]
type World = Timed<tapegrad::distributed::Solo>;

fn start_world() -> Result<World, tapegrad::Error> {
    #[cfg(feature = "mpi")]
    return Ok(Timed::new(tapegrad::distributed::Mpi::init()?));
    #[cfg(not(feature = "mpi"))]
    Ok(Timed::new(tapegrad::distributed::Solo))
}

/// Prints `e` to stderr naming this rank, in one write so the ranks' lines
/// do not interleave.
fn say_rank(world: &World, e: &dyn std::fmt::Display) {
    let line = format!(
        "char_lstm (rank {} of {}): {e}\n",
        world.rank(),
        world.size()
    );
    eprint!("{line}");
}

/// Reports `e` and ends the process — and, in a job of several ranks, the
/// whole job (`MPI_Abort`), since the others may be waiting for this one.
fn fail(world: &World, e: &dyn std::fmt::Display, code: i32) -> ! {
    if world.size() > 1 {
        say_rank(world, e);
        #[cfg(feature = "mpi")]
        world.inner().abort(code);
    } else {
        eprintln!("char_lstm: {e}");
    }
    std::process::exit(code);
}

/// An error every rank of the job has met at the same point (a mismatch
/// found by comparing all ranks, a non-finite reduced gradient): the ranks
/// can end together without aborting the job.
#[derive(Debug)]
struct Everywhere(tapegrad::Error);

impl std::fmt::Display for Everywhere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Everywhere {}

/// `path`'s bytes, read by rank 0 and sent to every rank (so the ranks need
/// not share a file system).
fn read_on_root<C: Collective>(world: &Timed<C>, path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    if world.rank() == 0 {
        bytes =
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    }
    world.broadcast_bytes(&mut bytes);
    Ok(bytes)
}

fn main() {
    let world = match start_world() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("char_lstm: {e}");
            std::process::exit(1);
        }
    };
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => fail(&world, &e, 2),
    };
    if let Err(e) = run(&args, &world) {
        if e.downcast_ref::<Everywhere>().is_some() && world.size() > 1 {
            // Every rank stops here: finalise together, no abort needed.
            say_rank(&world, &e);
            // With `--features mpi` dropping the world finalises MPI on
            // every rank; without it the world is a plain value.
            #[allow(clippy::drop_non_drop)]
            drop(world);
            std::process::exit(1);
        }
        fail(&world, &e, 1);
    }
}

/// What a run wrote: nothing is claimed that was not written.
#[derive(Debug, Default)]
struct Report {
    /// Training steps run by this invocation.
    trained: u64,
    /// The checkpoint, if this run saved one (and the step it holds).
    checkpoint: Option<(PathBuf, u64)>,
    /// Every other file written.
    written: Vec<PathBuf>,
}

/// The cells `--cell` names, in `--help`'s order.
const CELLS: [&str; 8] = [
    "lstm",
    "gru",
    "rnn",
    "mingru",
    "minlstm",
    "ln_lstm",
    "peephole_lstm",
    "proj_lstm",
];

/// The run with the cell `--cell` names: one arm per cell.
fn run<C: Collective>(args: &Args, world: &Timed<C>) -> Result<Report, Box<dyn std::error::Error>> {
    match args.cell.as_str() {
        "lstm" => train(LstmCell, args, world),
        "gru" => train(GruCell, args, world),
        "rnn" => train(RnnCell, args, world),
        "mingru" => train(MinGruCell::parallel(), args, world),
        "minlstm" => train(MinLstmCell::parallel(), args, world),
        "ln_lstm" => train(LayerNormLstmCell::default(), args, world),
        "peephole_lstm" => train(PeepholeLstmCell, args, world),
        "proj_lstm" => train(ProjLstmCell::new(args.hidden / 2), args, world),
        other => Err(format!("unknown cell `{other}` (--cell {})", CELLS.join(" | ")).into()),
    }
}

fn train<K: Cell + Clone, C: Collective>(
    cell: K,
    args: &Args,
    world: &Timed<C>,
) -> Result<Report, Box<dyn std::error::Error>> {
    let root = world.rank() == 0;
    tapegrad::set_num_threads(args.threads);
    let text = std::fs::read_to_string(&args.corpus)
        .map_err(|e| format!("cannot read corpus `{}`: {e}", args.corpus.display()))?;
    if text.is_empty() {
        return Err(format!("corpus `{}` is empty", args.corpus.display()).into());
    }
    let ckpt_path = args.out.join("checkpoint.safetensors");
    // `--out` is created just before the first file goes into it, so a run
    // refused before training leaves nothing behind.
    let make_out = || {
        std::fs::create_dir_all(&args.out)
            .map_err(|e| format!("cannot create `{}`: {e}", args.out.display()))
    };
    let mut report = Report::default();

    // The model, the optimizer and the curves: fresh, or from a checkpoint.
    let (mut model, mut opt, start, mut curves) = match &args.resume {
        Some(path) => {
            let bytes = read_on_root(world, path)?;
            let in_file = |e: tapegrad::Error| format!("`{}`: {e}", path.display());
            let info = checkpoint::inspect(&bytes).map_err(in_file)?;
            let kind = info.optimizer.clone().ok_or_else(|| {
                format!("`{}` holds no optimizer state to resume", path.display())
            })?;
            let mut opt = make_optimizer(&kind, args.lr)?;
            let (model, info) =
                CharModel::<f32, K>::from_bytes_with(cell.clone(), &bytes, Some(opt.as_mut()))
                    .map_err(in_file)?;
            check_resume_vocab(path, model.vocab(), &text)?;
            if root {
                println!(
                    "resumed from {} at step {} ({kind}, {:?})",
                    path.display(),
                    info.step,
                    model.config()
                );
            }
            let curves = Curves::from_metadata(&info.metadata);
            (model, opt, info.step, curves)
        }
        None => {
            let cfg = CharModelConfig::default()
                .embed_size(args.embed)
                .hidden_size(args.hidden)
                .layers(args.layers)
                .dropout(args.dropout)
                .awd(args.locked_dropout, args.weight_drop, args.embed_dropout);
            let model =
                CharModel::<f32, K>::try_with_cell(cell, Vocab::from_text(&text), cfg, args.seed)
                    .map_err(|e| format!("corpus `{}`: {}", args.corpus.display(), e.message()))?;
            (
                model,
                make_optimizer(&args.optimizer, args.lr)?,
                0,
                Curves::default(),
            )
        }
    };
    check_prompt(&args.prompt, model.vocab())?;
    let ids = model.vocab().encode(&text)?;
    let n_val = (ids.len() as f64 * args.val_fraction) as usize;
    let (train_ids, val_ids) = ids.split_at(ids.len() - n_val);
    let train = CharStreams::new(train_ids, args.batch).map_err(|e| {
        format!(
            "corpus `{}` ({} characters, {} for training) is too short for --batch {}: {}",
            args.corpus.display(),
            ids.len(),
            train_ids.len(),
            args.batch,
            e.message()
        )
    })?;
    let val = (n_val > 0)
        .then(|| CharStreams::new(val_ids, 16.min(n_val / 2).max(1)))
        .transpose()?;
    let chunks = train.chunks(args.seq_len) as u64;
    // This rank's streams (all of them in a single process).
    if world.size() > args.batch {
        return Err(format!(
            "{} ranks for --batch {}: every rank needs a stream",
            world.size(),
            args.batch
        )
        .into());
    }
    let mine = rank_streams(args.batch, world.rank(), world.size());
    if args.workers > mine.len() {
        return Err(format!(
            "--workers {} exceeds this rank's {} streams",
            args.workers,
            mine.len()
        )
        .into());
    }
    let settings = format!(
        "batch {}, seq-len {}, steps {}, start {start}, lr {}, warmup {}, optimizer {}, clip {}, seed {}, val-fraction {}",
        args.batch, args.seq_len, args.steps, args.lr, args.warmup, opt.kind(), args.clip, args.seed, args.val_fraction
    );
    let corpus_bytes: Vec<u8> = ids.iter().flat_map(|&i| (i as u32).to_le_bytes()).collect();
    model
        .join_world(
            world,
            WorldDescription::new()
                .entry(
                    "corpus",
                    format!(
                        "{} characters, fingerprint {:016x}",
                        ids.len(),
                        fingerprint(&corpus_bytes)
                    ),
                )
                .entry("settings", settings),
        )
        .map_err(Everywhere)?;
    let cfg = *model.config();
    if root {
        println!(
            "corpus {}: {} characters, vocabulary {}, train {} / validation {} characters",
            args.corpus.display(),
            ids.len(),
            model.vocab().len(),
            train_ids.len(),
            n_val
        );
        println!(
        "model: Embedding({}, {}) → {}({} layers × {}) → Linear({}, {}): {} parameters; {} × {} characters per step, \
         {chunks} steps per epoch; {} lr {} (warm-up {}, cosine to lr/10), clip {}; GEMM threads: {}; workers: {}",
        model.vocab().len(),
        cfg.embed_size,
        model.cell_name(),
        cfg.num_layers,
        cfg.hidden_size,
        model.recurrent().spec().output_size,
        model.vocab().len(),
        model.store().num_elements(),
        args.batch,
        args.seq_len,
        opt.kind(),
        args.lr,
        args.warmup,
        args.clip,
        tapegrad::num_threads(),
        args.workers
    );
        if world.size() > 1 {
            println!("ranks: {} (streams {:?} on rank 0)", world.size(), mine);
        }
    }
    let schedule = LrSchedule::Warmup {
        steps: args.warmup,
        then: Box::new(LrSchedule::Cosine {
            lr: args.lr,
            min_lr: args.lr / 10.0,
            total_steps: args.steps.saturating_sub(args.warmup),
        }),
    };
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
    };
    let bpc = |nats: f64| nats / std::f64::consts::LN_2;
    let evaluate = |model: &CharModel<f32, K>| {
        val.as_ref()
            .map(|v| bpc(model.evaluate_distributed(world, v, 128)))
    };
    let save = |model: &CharModel<f32, K>,
                opt: &dyn Optimizer<f32>,
                step: u64,
                curves: &Curves,
                report: &mut Report|
     -> Result<(), Box<dyn std::error::Error>> {
        make_out()?;
        let mut meta = BTreeMap::new();
        curves.to_metadata(&mut meta);
        model.save(&ckpt_path, Some(opt), step, &meta)?;
        report.checkpoint = Some((ckpt_path.clone(), step));
        Ok(())
    };

    if start >= args.steps {
        // Nothing to train: nothing is written, so no output of an earlier
        // run in `--out` is replaced by one of a run that made nothing.
        let v = evaluate(&model);
        if root {
            println!(
                "nothing to train: the model is at step {start} and --steps is {}; nothing written",
                args.steps
            );
            if let Some(v) = v {
                println!("validation: {v:.3} bits per character");
            }
            let sample = model.sample(&args.prompt, args.sample_len, &sampling)?;
            println!("--- sample (not saved) ---\n{}{sample}\n---", args.prompt);
        }
        return Ok(report);
    }

    let pb = if root {
        ProgressBar::new(args.steps)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30.cyan/blue}] step {pos}/{len} {msg} (eta {eta})",
        )?
        .progress_chars("=> "),
    );
    pb.set_position(start);
    let mut tape = Tape::new();
    let mut dp = (args.workers > 1 || world.size() > 1).then(|| DataParallel::new(args.workers));
    let mut state = model.zero_state(mine.len());
    let mut smooth: Option<f64> = None;
    let (mut window_loss, mut window_steps) = (0.0, 0u64);
    let log_every = (args.eval_every / 4).max(1);
    let started = Instant::now();
    let mut train_secs = 0.0;
    let mut comm_secs = 0.0;
    let mut train_chars = 0usize;
    let mut recent = (Instant::now(), 0usize);
    let mut rate = 0.0;
    for step in start..args.steps {
        let k = step % chunks;
        if k == 0 || step == start {
            state = model.zero_state(mine.len());
        }
        schedule.apply(opt.as_mut(), step);
        let batch = train.batch(k as usize, args.seq_len);
        let t0 = Instant::now();
        let comm0 = world.seconds();
        let (clip, seed) = (
            (args.clip > 0.0).then_some(args.clip),
            args.seed.wrapping_mul(1_000_003).wrapping_add(step),
        );
        let stats = match dp.as_mut() {
            Some(dp) if world.size() > 1 => model
                .train_step_distributed(world, dp, opt.as_mut(), &batch, &mut state, clip, seed)
                .map_err(Everywhere)?,
            Some(dp) => {
                model.train_step_parallel(dp, opt.as_mut(), &batch, &mut state, clip, seed)?
            }
            None => model.train_step(&mut tape, opt.as_mut(), &batch, &mut state, clip, seed)?,
        };
        train_secs += t0.elapsed().as_secs_f64();
        comm_secs += world.seconds() - comm0;
        train_chars += batch.targets.len();
        recent.1 += batch.targets.len();
        let s = smooth.map_or(stats.loss, |s| 0.95 * s + 0.05 * stats.loss);
        smooth = Some(s);
        window_loss += stats.loss;
        window_steps += 1;
        let done = step + 1;
        if recent.0.elapsed().as_secs_f64() > 2.0 {
            rate = recent.1 as f64 / recent.0.elapsed().as_secs_f64();
            recent = (Instant::now(), 0);
        }
        pb.set_position(done);
        pb.set_message(format!(
            "loss {:.3} smoothed {:.3} ({:.2} bpc) {:.0} chars/s",
            stats.loss,
            s,
            bpc(s),
            if rate > 0.0 {
                rate
            } else {
                train_chars as f64 / train_secs
            }
        ));
        if done % log_every == 0 || done == args.steps {
            curves
                .train
                .push((done, bpc(window_loss / window_steps as f64)));
            (window_loss, window_steps) = (0.0, 0);
        }
        if done % args.eval_every == 0 || done == args.steps {
            if let Some(v) = evaluate(&model) {
                curves.val.push((done, v));
                if root {
                    say(
                        &pb,
                        &format!(
                            "step {done:>5}: train {:.3} bpc (smoothed), validation {v:.3} bpc, lr {:.2e}, {:.0} chars/s",
                            bpc(s),
                            opt.lr(),
                            train_chars as f64 / train_secs
                        ),
                    );
                }
            }
        }
        // The checkpoint first: nothing after it can lose the steps.
        if done % args.checkpoint_every == 0 || done == args.steps {
            // Every rank must hold the same parameters; rank 0 writes them.
            check_params_equal(world, model.store()).map_err(Everywhere)?;
            if root {
                save(&model, opt.as_ref(), done, &curves, &mut report)?;
            }
        }
        if root && (done % args.sample_every == 0 || done == args.steps) {
            let sample = model.sample(&args.prompt, args.sample_len, &sampling)?;
            say(
                &pb,
                &format!(
                    "--- sample at step {done} (temperature {}, top-k {}) ---\n{}{sample}\n---",
                    args.temperature, args.top_k, args.prompt
                ),
            );
        }
    }
    pb.finish_and_clear();
    if !root {
        report.trained = args.steps.saturating_sub(start);
        return Ok(report);
    }

    let total = started.elapsed().as_secs_f64();
    let trained = args.steps.saturating_sub(start);
    report.trained = trained;
    println!(
        "trained {trained} steps in {total:.1} s ({:.1} s in training steps, {:.0} characters/s)",
        train_secs,
        train_chars as f64 / train_secs.max(1e-9)
    );
    if world.size() > 1 && trained > 0 {
        println!(
            "all-reduce on rank 0: {:.2} ms per step, {:.1}% of the training steps' time",
            1e3 * comm_secs / trained as f64,
            100.0 * comm_secs / train_secs.max(1e-9)
        );
    }
    if let Some(&(_, v)) = curves.val.last() {
        println!("final validation: {v:.3} bits per character");
    }
    if let Some((path, step)) = &report.checkpoint {
        println!("checkpoint: {} (step {step})", path.display());
    }
    let sample = model.sample(&args.prompt, args.sample_len, &sampling)?;
    let sample_path = args.out.join("sample.txt");
    std::fs::write(&sample_path, format!("{}{sample}\n", args.prompt))?;
    report.written.push(sample_path);
    curves.write_csv(&args.out.join("loss.csv"))?;
    report.written.push(args.out.join("loss.csv"));
    let title = format!(
        "char_lstm: {}-layer {}({}), {} steps of {}×{} characters",
        cfg.num_layers,
        model.cell_name(),
        cfg.hidden_size,
        args.steps,
        args.batch,
        args.seq_len
    );
    let fig = args.out.join("loss.svg");
    let train_label = format!("train (mean over every {log_every} steps)");
    let val_label = format!(
        "validation (last {:.0}% of the corpus, held out)",
        100.0 * args.val_fraction
    );
    curves.plot(&fig, &title, &train_label, &val_label)?;
    report.written.push(fig.clone());
    println!(
        "wrote {}, {} and {}",
        fig.display(),
        args.out.join("loss.csv").display(),
        args.out.join("sample.txt").display()
    );
    Ok(report)
}

/// The main job's guarantees, run in-process on tiny corpora and models
/// (milliseconds each): bad input fails before training and before `--out`
/// exists, and a run writes — and claims — only what it made.
#[cfg(test)]
mod tests {
    use super::*;

    /// The main job in this process alone.
    fn run_solo(args: &Args) -> Result<Report, Box<dyn std::error::Error>> {
        run(args, &Timed::new(tapegrad::distributed::Solo))
    }

    /// A fresh directory under the system temp dir for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tapegrad-char-lstm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Tiny sizes, so a step takes well under a millisecond.
    fn tiny(dir: &Path, corpus: &str) -> Args {
        let path = dir.join("corpus.txt");
        std::fs::write(&path, corpus).unwrap();
        Args {
            corpus: path,
            hidden: 8,
            embed: 4,
            layers: 1,
            seq_len: 8,
            batch: 2,
            steps: 4,
            warmup: 1,
            eval_every: 2,
            sample_every: 2,
            checkpoint_every: 2,
            sample_len: 5,
            prompt: "the ".into(),
            out: dir.join("out"),
            ..Args::default()
        }
    }

    const TEXT: &str = "the cat sat on the mat and the rat ran to the hat. ";

    fn parse(flags: &[&str]) -> Result<Args, String> {
        parse_args(flags.iter().map(|s| s.to_string()))
    }

    #[test]
    fn a_prompt_outside_the_vocabulary_is_refused_before_training() {
        let dir = scratch("prompt");
        let mut args = tiny(&dir, &TEXT.repeat(4));
        args.prompt = "Quoth the raven".into();
        let err = run_solo(&args).unwrap_err().to_string();
        assert!(err.contains("--prompt"), "{err}");
        assert!(err.contains("'Q', 'u', 'v'"), "{err}");
        assert!(!args.out.exists(), "nothing may be written: {err}");
    }

    #[test]
    fn the_checkpoint_is_saved_periodically_and_before_the_outputs() {
        let dir = scratch("periodic");
        let mut args = tiny(&dir, &TEXT.repeat(4));
        args.steps = 5;
        let report = run_solo(&args).unwrap();
        let ckpt = args.out.join("checkpoint.safetensors");
        assert_eq!(report.trained, 5);
        assert_eq!(report.checkpoint, Some((ckpt.clone(), 5)));
        assert_eq!(checkpoint::inspect_file(&ckpt).unwrap().step, 5);
        for f in ["sample.txt", "loss.csv", "loss.svg"] {
            assert!(report.written.contains(&args.out.join(f)), "{f}");
        }
        // stopped at step 3 by --steps: the step-2 checkpoint is there
        let dir = scratch("periodic-2");
        let mut args = tiny(&dir, &TEXT.repeat(4));
        args.steps = 3;
        args.checkpoint_every = 2;
        run_solo(&args).unwrap();
        args.steps = 2;
        args.out = dir.join("out-2");
        let report = run_solo(&args).unwrap();
        assert_eq!(report.checkpoint.map(|c| c.1), Some(2));
    }

    #[test]
    fn steps_zero_overwrites_nothing_and_claims_no_checkpoint() {
        let dir = scratch("steps0");
        let args = Args {
            steps: 0,
            ..tiny(&dir, &TEXT.repeat(4))
        };
        std::fs::create_dir_all(&args.out).unwrap();
        for f in ["loss.svg", "loss.csv", "sample.txt"] {
            std::fs::write(args.out.join(f), "an earlier run's output").unwrap();
        }
        let report = run_solo(&args).unwrap();
        assert_eq!(report.trained, 0);
        assert_eq!(report.checkpoint, None);
        assert!(report.written.is_empty());
        for f in ["loss.svg", "loss.csv", "sample.txt"] {
            let kept = std::fs::read_to_string(args.out.join(f)).unwrap();
            assert_eq!(kept, "an earlier run's output", "{f} was overwritten");
        }
        assert!(!args.out.join("checkpoint.safetensors").exists());
        // resuming at or past --steps writes nothing either
        let trained = Args {
            steps: 2,
            out: dir.join("trained"),
            ..args.clone()
        };
        run_solo(&trained).unwrap();
        let again = Args {
            resume: Some(trained.out.join("checkpoint.safetensors")),
            out: dir.join("again"),
            ..trained.clone()
        };
        let report = run_solo(&again).unwrap();
        assert!(report.checkpoint.is_none() && report.written.is_empty());
        assert!(!again.out.exists());
    }

    #[test]
    fn an_empty_corpus_is_one_clear_error_and_leaves_no_output_directory() {
        let dir = scratch("empty");
        let args = tiny(&dir, "");
        let err = run_solo(&args).unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains("corpus.txt"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(!args.out.exists());
        // too short for the batch: also a clear error, nothing created
        let args = Args {
            batch: 32,
            prompt: "a".into(),
            ..tiny(&dir, "abc")
        };
        let err = run_solo(&args).unwrap_err().to_string();
        assert!(err.contains("--batch 32"), "{err}");
        assert!(!args.out.exists());
    }

    #[test]
    fn out_of_range_hyper_parameters_are_refused() {
        for (flags, needle) in [
            (&["--lr", "-1"][..], "--lr -1 must be"),
            (&["--lr", "0"], "--lr 0 must be"),
            (&["--lr", "NaN"], "--lr NaN must be"),
            (&["--clip", "-1"], "--clip -1 must be"),
            (&["--temperature", "-0.5"], "--temperature -0.5 must be"),
            (&["--prompt", ""], "--prompt must"),
            (&["--dropout", "1.5"], "--dropout 1.5 is not in [0, 1)"),
            (&["--weight-drop", "1"], "--weight-drop 1 is not in [0, 1)"),
            (
                &["--locked-dropout", "-0.1"],
                "--locked-dropout -0.1 is not in [0, 1)",
            ),
            (
                &["--embed-dropout", "2"],
                "--embed-dropout 2 is not in [0, 1)",
            ),
            (
                &["--cell", "proj_lstm", "--hidden", "1"],
                "--hidden must be at least 2 (got 1)",
            ),
        ] {
            let err = parse(flags).unwrap_err();
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
        let ok = parse(&["--lr", "0.01", "--clip", "0", "--temperature", "0"]).unwrap();
        assert_eq!((ok.lr, ok.clip, ok.temperature), (0.01, 0.0, 0.0));
    }

    #[test]
    fn the_cell_flag_takes_each_cell_and_refuses_others() {
        assert_eq!(parse(&[]).unwrap().cell, "lstm");
        for cell in CELLS {
            assert_eq!(parse(&["--cell", cell]).unwrap().cell, cell);
        }
        let err = parse(&["--cell", "transformer"]).unwrap_err();
        assert!(
            err.contains("unknown cell `transformer`") && err.contains("mingru"),
            "{err}"
        );
    }

    #[test]
    fn every_cell_trains_a_tiny_model_and_saves_it_under_its_name() {
        for cell in CELLS {
            let dir = scratch(&format!("cell-{cell}"));
            let args = Args {
                cell: cell.into(),
                ..tiny(&dir, &TEXT.repeat(4))
            };
            let report = run_solo(&args).unwrap();
            assert_eq!(report.trained, 4, "{cell}");
            let ckpt = args.out.join("checkpoint.safetensors");
            let info = checkpoint::inspect_file(&ckpt).unwrap();
            assert_eq!(info.metadata["char_model.cell"], cell);
            assert!(
                info.tensors
                    .iter()
                    .any(|t| t.name == format!("{cell}.weight_ih_l0")),
                "{cell}"
            );
        }
    }

    #[test]
    fn the_awd_regularisers_train_and_are_kept_in_the_checkpoint() {
        let dir = scratch("awd");
        let flags = [
            "--locked-dropout",
            "0.3",
            "--weight-drop",
            "0.5",
            "--embed-dropout",
            "0.1",
        ];
        let parsed = parse(&flags).unwrap();
        assert_eq!(
            (
                parsed.locked_dropout,
                parsed.weight_drop,
                parsed.embed_dropout
            ),
            (0.3, 0.5, 0.1)
        );
        let args = Args {
            locked_dropout: 0.3,
            weight_drop: 0.5,
            embed_dropout: 0.1,
            ..tiny(&dir, &TEXT.repeat(4))
        };
        assert_eq!(run_solo(&args).unwrap().trained, 4);
        let (model, _) =
            CharModel::<f32>::load(args.out.join("checkpoint.safetensors"), None).unwrap();
        let c = model.config();
        assert_eq!(
            (c.locked_dropout, c.weight_drop, c.embed_dropout),
            (0.3, 0.5, 0.1)
        );
    }

    #[test]
    fn resuming_with_another_cell_is_refused_by_name() {
        let dir = scratch("resume-cell");
        let first = Args {
            cell: "gru".into(),
            ..tiny(&dir, &TEXT.repeat(4))
        };
        run_solo(&first).unwrap();
        let resumed = Args {
            resume: Some(first.out.join("checkpoint.safetensors")),
            steps: 6,
            out: dir.join("resumed"),
            ..tiny(&dir, &TEXT.repeat(4))
        };
        let err = run_solo(&resumed).unwrap_err().to_string();
        assert!(
            err.contains("cell `gru`") && err.contains("`lstm`") && err.contains("--cell gru"),
            "{err}"
        );
        assert!(!resumed.out.exists());
        // with the checkpoint's cell it resumes
        let again = Args {
            cell: "gru".into(),
            ..resumed.clone()
        };
        assert_eq!(run_solo(&again).unwrap().trained, 2);
    }

    #[test]
    fn resuming_on_another_corpus_names_the_vocabulary_difference() {
        let dir = scratch("resume");
        let first = tiny(&dir, &TEXT.repeat(4));
        run_solo(&first).unwrap();
        let other = "Go to the cat, God said. ".repeat(8);
        let resumed = Args {
            resume: Some(first.out.join("checkpoint.safetensors")),
            steps: 6,
            out: dir.join("resumed"),
            ..tiny(&dir, &other)
        };
        let err = run_solo(&resumed).unwrap_err().to_string();
        assert!(err.contains("--resume"), "{err}");
        assert!(
            err.contains("the checkpoint's vocabulary")
                && err.contains("differs from the corpus's"),
            "{err}"
        );
        // in the corpus, not in the checkpoint; and the other way round
        assert!(
            err.contains("the corpus has ',', 'G', 'i' that the checkpoint lacks"),
            "{err}"
        );
        assert!(
            err.contains("the checkpoint has 'm', 'n', 'r' that the corpus lacks"),
            "{err}"
        );
        assert!(!resumed.out.exists());
    }
}
