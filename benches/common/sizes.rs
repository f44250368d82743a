//! The S/M/L sizes every recurrent benchmark runs (`benches/bptt.rs`,
//! `benches/custom_cell.rs`), in one place so their rows compare.

/// A benchmark configuration: batch, input, hidden and output widths, steps.
#[derive(Clone, Copy)]
pub struct Config {
    pub name: &'static str,
    pub b: usize,
    pub i: usize,
    pub h: usize,
    pub o: usize,
    pub t: usize,
}

pub const CONFIGS: [Config; 3] = [
    Config {
        name: "S",
        b: 1,
        i: 64,
        h: 100,
        o: 64,
        t: 25,
    },
    Config {
        name: "M",
        b: 32,
        i: 64,
        h: 128,
        o: 64,
        t: 50,
    },
    Config {
        name: "L",
        b: 64,
        i: 256,
        h: 512,
        o: 256,
        t: 100,
    },
];
