//! Builds a 3-step vanilla RNN from tape primitives, prints its tape,
//! writes the unrolled graph as Graphviz DOT, and prints the gradients that
//! one reverse sweep (BPTT) returns.
//!
//! `cargo run --release --example unrolled_rnn [-- out/rnn.dot]`

use tapegrad::{ParamStore, Reduction, Tape, Tensor};

fn main() {
    let (input, hidden, output, steps) = (3, 4, 2, 3);
    let mut store = ParamStore::<f64>::new();
    let u = store.insert(
        "U",
        Tensor::uniform(&[hidden, input], -0.5, 0.5, 1).unwrap(),
    );
    let w = store.insert(
        "W",
        Tensor::uniform(&[hidden, hidden], -0.5, 0.5, 2).unwrap(),
    );
    let b = store.insert("b", Tensor::zeros(&[hidden]));
    let v = store.insert(
        "V",
        Tensor::uniform(&[output, hidden], -0.5, 0.5, 3).unwrap(),
    );
    let c = store.insert("c", Tensor::zeros(&[output]));

    let tape = Tape::new();
    let (u_, w_, b_, v_, c_) = (
        tape.param(&store, u),
        tape.param(&store, w),
        tape.param(&store, b),
        tape.param(&store, v),
        tape.param(&store, c),
    );
    let mut h = tape.constant(Tensor::zeros(&[1, hidden]));
    let mut loss = tape.scalar(0.0);
    let mut hs = Vec::new();
    for t in 0..steps {
        let _s = tape.scope("rnn");
        let _t = tape.scope_at("t", t + 1);
        let x = tape.constant(Tensor::randn(&[1, input], 100 + t as u64));
        // h(t) = tanh(U x(t) + W h(t−1) + b),  o(t) = V h(t) + c
        h = (x.matmul_t(u_) + h.matmul_t(w_) + b_).tanh().retain_grad();
        hs.push(h);
        let o = h.matmul_t(v_) + c_;
        loss = loss + o.cross_entropy(&[t % output], Reduction::Sum);
    }
    println!("{}", tape.listing());

    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "out/rnn.dot".into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).expect("create output directory");
    }
    std::fs::write(&path, tape.to_dot()).expect("write DOT file");
    println!("wrote the unrolled graph to {path} (render: dot -Tsvg {path} -o rnn.svg)\n");

    let grads = loss.backward();
    println!("loss = {:.6}", loss.item());
    for (key, g) in grads.params() {
        println!("dL/d{:<2} = {:?}", store.name(key), g);
    }
    for (t, h) in hs.iter().enumerate() {
        println!("‖dL/dh({})‖ = {:.6}", t + 1, grads.wrt(*h).norm());
    }
}
