//! Threads: which types cross threads (checked at compile time), and
//! data-parallel training — one tape per thread over batch shards, gradients
//! summed — gives the serial gradients.

use tapegrad::layers::{Linear, Lstm, RecurrentConfig};
use tapegrad::{Error, Grads, ParamKey, ParamStore, Reduction, Tape, Tensor};

const fn send<T: Send>() {}
const fn sync<T: Sync>() {}

// Values, parameters, gradients and errors can be shared or moved freely; a
// tape can be moved to another thread but not shared (it records through a
// RefCell: one tape per thread).
const _: () = {
    send::<Tensor<f32>>();
    sync::<Tensor<f32>>();
    send::<ParamStore<f64>>();
    sync::<ParamStore<f64>>();
    send::<ParamKey>();
    sync::<ParamKey>();
    send::<Grads<f32>>();
    sync::<Grads<f32>>();
    send::<Error>();
    sync::<Error>();
    send::<Tape<f64>>();
    send::<Lstm>();
    sync::<Lstm>();
};

#[test]
fn data_parallel_gradients_equal_serial_gradients() {
    let (t, b, i, h, o) = (6, 8, 3, 5, 4);
    let mut store = ParamStore::<f64>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(i, h).layers(2), 3);
    let head = Linear::new(&mut store, "decoder", h, o, true, 4);
    let x = Tensor::<f64>::randn(&[t, b, i], 5);
    let targets: Vec<usize> = (0..t * b).map(|k| (k * 5 + 1) % o).collect();

    // The summed loss over a shard of the batch (columns lo..hi of x).
    let shard_grads = |lo: usize, hi: usize| -> Vec<(ParamKey, Tensor<f64>)> {
        let n = hi - lo;
        let mut xs = Vec::with_capacity(t * n * i);
        let mut ys = Vec::with_capacity(t * n);
        for step in 0..t {
            xs.extend_from_slice(&x.data()[(step * b + lo) * i..(step * b + hi) * i]);
            ys.extend_from_slice(&targets[step * b + lo..step * b + hi]);
        }
        let tape = Tape::new();
        let xv = tape.constant(Tensor::from_vec(xs, &[t, n, i]).unwrap());
        let out = lstm.forward(&tape, &store, xv, None);
        let logits = head.forward(&tape, &store, out.stacked_rows());
        let grads = logits.cross_entropy(&ys, Reduction::Sum).backward();
        grads.params().map(|(k, g)| (k, g.clone())).collect()
    };

    let serial = shard_grads(0, b);
    let parallel: Vec<Vec<(ParamKey, Tensor<f64>)>> = std::thread::scope(|s| {
        let shards = [(0, 3), (3, 8)];
        let handles: Vec<_> = shards
            .iter()
            .map(|&(lo, hi)| s.spawn(move || shard_grads(lo, hi)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(serial.len(), store.len());
    for (key, want) in &serial {
        let mut sum = Tensor::zeros(want.shape());
        for shard in &parallel {
            let (_, g) = shard
                .iter()
                .find(|(k, _)| k == key)
                .expect("every shard has every gradient");
            for (s, v) in sum.data_mut().iter_mut().zip(g.data()) {
                *s += v;
            }
        }
        let err = sum.max_abs_diff(want);
        assert!(
            err <= 1e-12,
            "{}: shards differ from the serial gradient by {err:e}",
            store.name(*key)
        );
    }
}
