//! Node labels from caller-opened scopes (`lstm.l1/t=37/forget_gate`).
//!
//! Scopes form a tree of frames; a node stores the id of the frame that was
//! open when it was recorded (a `u32` copy, nothing formatted). The path
//! string is only built when someone prints it — a listing, a DOT file or
//! an error message — so labelling every gate of every step costs one small
//! `Vec` push per opened scope, never a `format!` per op.

use std::borrow::Cow;

/// One part of a label path.
#[derive(Debug, Clone)]
enum Part {
    Root,
    Name(Cow<'static, str>),
    /// `name=index`, formatted lazily (time steps, layers).
    Indexed(&'static str, usize),
}

#[derive(Debug, Clone)]
struct Frame {
    parent: u32,
    part: Part,
}

/// The scope tree of one tape and the frame currently open.
#[derive(Debug, Clone)]
pub(crate) struct Scopes {
    frames: Vec<Frame>,
    pub(crate) current: u32,
}

impl Default for Scopes {
    fn default() -> Self {
        Scopes {
            frames: vec![Frame {
                parent: 0,
                part: Part::Root,
            }],
            current: 0,
        }
    }
}

impl Scopes {
    /// Opens a named child of the current frame; returns the previous frame.
    pub(crate) fn push_name(&mut self, name: Cow<'static, str>) -> u32 {
        self.push(Part::Name(name))
    }

    /// Opens `name=index` under the current frame; returns the previous frame.
    pub(crate) fn push_indexed(&mut self, name: &'static str, index: usize) -> u32 {
        self.push(Part::Indexed(name, index))
    }

    fn push(&mut self, part: Part) -> u32 {
        let prev = self.current;
        self.frames.push(Frame { parent: prev, part });
        self.current = (self.frames.len() - 1) as u32;
        prev
    }

    /// The full path of frame `id`, parts joined by `/` (empty for the root).
    pub(crate) fn path(&self, mut id: u32) -> String {
        let mut parts = Vec::new();
        while id != 0 {
            let Some(frame) = self.frames.get(id as usize) else {
                break;
            };
            match &frame.part {
                Part::Root => {}
                Part::Name(n) => parts.push(n.to_string()),
                Part::Indexed(n, i) => parts.push(format!("{n}={i}")),
            }
            id = frame.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Forgets every frame (tape reset).
    pub(crate) fn clear(&mut self) {
        self.frames.truncate(1);
        self.current = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_with_slashes() {
        let mut s = Scopes::default();
        let root = s.push_name("lstm.l1".into());
        let l = s.current;
        s.push_indexed("t", 37);
        s.push_name("forget_gate".into());
        assert_eq!(s.path(s.current), "lstm.l1/t=37/forget_gate");
        assert_eq!(s.path(l), "lstm.l1");
        assert_eq!(s.path(root), "");
    }
}
