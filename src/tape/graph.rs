//! Seeing the graph: a readable listing of the tape and a Graphviz DOT
//! export, both in push (= topological) order. A bound parameter shows as
//! `param` followed by its name in the store (`param lstm.weight_hh_l0`).

use super::{Inner, Node, Tape};
use crate::ops::Op;
use crate::Real;
use std::borrow::Cow;
use std::fmt::{self, Write};

impl<F: Real> Tape<F> {
    /// A listing, one node a line: id, label, op (a parameter's with its
    /// name in the store), output shape, inputs, and `*` for nodes that
    /// require a gradient.
    ///
    /// ```
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f32>::new();
    /// let w = store.insert("lstm.weight_hh_l0", Tensor::ones(&[2]));
    /// let tape = Tape::<f32>::new();
    /// let x = tape.var(Tensor::ones(&[2]));
    /// let _y = { let _s = tape.scope("act"); (x * tape.param(&store, w)).tanh() };
    /// let text = tape.listing();
    /// assert!(text.contains("%1"));
    /// assert!(text.contains("param lstm.weight_hh_l0"));
    /// assert!(text.contains("act"));
    /// assert!(text.contains("tanh"));
    /// ```
    pub fn listing(&self) -> String {
        let inner = self.inner.borrow();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tape #{} (use {}): {} nodes, {}",
            self.id(),
            self.generation(),
            inner.nodes.len(),
            F::NAME
        );
        for (i, n) in inner.nodes.iter().enumerate() {
            let label = inner.scopes.path(n.label);
            let inputs: Vec<String> = n.inputs.iter().map(|j| format!("%{j}")).collect();
            let _ = writeln!(
                out,
                "%{i:<5}{} {:<28} {:<26} {:<16} ({})",
                if n.requires_grad { '*' } else { ' ' },
                if label.is_empty() { "-".into() } else { label },
                op_name(&inner, n),
                format!("{:?}", n.value.shape()),
                inputs.join(", ")
            );
        }
        out
    }

    /// The graph in Graphviz DOT: a box per node (label path, op, shape),
    /// an edge per input, leaves that require gradients highlighted.
    /// Render with `dot -Tsvg graph.dot -o graph.svg`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f32>::new();
    /// let x = tape.var(Tensor::ones(&[2]));
    /// let _ = x.tanh();
    /// let dot = tape.to_dot();
    /// assert!(dot.starts_with("digraph tape"));
    /// assert!(dot.contains("n0 -> n1"));
    /// ```
    pub fn to_dot(&self) -> String {
        let inner = self.inner.borrow();
        let mut out = String::from("digraph tape {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
        for (i, n) in inner.nodes.iter().enumerate() {
            let label = inner.scopes.path(n.label);
            let style = match (n.inputs.is_empty(), n.requires_grad) {
                (true, true) => ", style=filled, fillcolor=\"#ffe8a8\"",
                (true, false) => ", style=filled, fillcolor=\"#e8e8e8\"",
                _ => "",
            };
            let _ = writeln!(
                out,
                "  n{i} [label=\"%{i} {}\\n{}\\n{:?}\"{style}];",
                escape(&label),
                escape(&op_name(&inner, n)),
                n.value.shape()
            );
            for j in &n.inputs {
                let _ = writeln!(out, "  n{j} -> n{i};");
            }
        }
        out.push_str("}\n");
        out
    }
}

/// The op's name; a parameter's followed by its name in the store.
fn op_name<F: Real>(inner: &Inner<F>, n: &Node<F>) -> Cow<'static, str> {
    match &n.op {
        Op::Param(key) => match inner.param_names.get(key) {
            Some(name) => format!("param {name}").into(),
            None => n.op.name(),
        },
        op => op.name(),
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl<F: Real> fmt::Display for Tape<F> {
    /// Same as [`Tape::listing`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.listing())
    }
}
