//! A tensor's elements: a buffer of its own, or a window of a buffer it
//! shares with other tensors (a **view**).
//!
//! Why views live here and nowhere else: the tape stores each node's value
//! as a [`Tensor`](super::Tensor), and ops read values only through
//! `data()`. So a slice along the leading axis, a reshape, the readout's
//! stacked rows or a parameter bound on a tape can read another tensor's
//! buffer instead of copying it, and no op, rule or kernel needs to know:
//! the one seam is this enum.
//!
//! The rules that keep it safe (no `unsafe` anywhere):
//! - A shared buffer is an `Arc<Vec<F>>`, never written while shared.
//!   Writing through [`Storage::as_mut_slice`] writes in place if this is
//!   its only holder, and copies the window first otherwise (copy on
//!   write), so a view never sees its source change.
//! - A view holds its buffer alive: releasing or resetting the source only
//!   drops one holder. The last holder to let go hands the whole buffer back
//!   ([`Storage::take_vec`]), so a tape's pool gets back every buffer it
//!   lent, once.

use std::sync::Arc;

/// The elements of a tensor: owned, or a window `start..start + len` of a
/// shared buffer.
#[derive(Clone)]
pub(crate) enum Storage<F> {
    Owned(Vec<F>),
    Shared {
        buf: Arc<Vec<F>>,
        start: usize,
        len: usize,
    },
}

impl<F: Copy> Storage<F> {
    /// The elements.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[F] {
        match self {
            Storage::Owned(v) => v,
            Storage::Shared { buf, start, len } => &buf[*start..*start + *len],
        }
    }

    /// The number of elements held (0 once taken).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Storage::Owned(v) => v.len(),
            Storage::Shared { len, .. } => *len,
        }
    }

    /// Whether this is a window of a shared buffer.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Storage::Shared { .. })
    }

    /// The elements, writable: in place if this is the buffer's only
    /// holder, else from a copy of the window first (copy on write; the
    /// copy stays shareable). So a parameter a tape still holds is copied
    /// once by an optimizer update, and updated in place once the tape
    /// has let go.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [F] {
        if let Storage::Shared { buf, start, len } = self {
            if Arc::get_mut(buf).is_none() {
                *buf = Arc::new(buf[*start..*start + *len].to_vec());
                *start = 0;
            }
        }
        match self {
            Storage::Owned(v) => v,
            Storage::Shared { buf, start, len } => {
                let v = Arc::get_mut(buf).expect("the only holder (made so above)");
                &mut v[*start..*start + *len]
            }
        }
    }

    /// Takes the elements out, leaving nothing. A shared buffer's last
    /// holder gets the whole buffer (for a pool to reuse), any other holder
    /// an empty vector (the buffer lives on in the others).
    pub(crate) fn take_vec(&mut self) -> Vec<F> {
        match std::mem::replace(self, Storage::Owned(Vec::new())) {
            Storage::Owned(v) => v,
            Storage::Shared { buf, .. } => Arc::try_unwrap(buf).unwrap_or_default(),
        }
    }

    /// The elements as an owned vector: the buffer itself if owned, or if
    /// this is the only holder of a window that is all of it; a copy
    /// otherwise.
    pub(crate) fn into_vec(self) -> Vec<F> {
        match self {
            Storage::Owned(v) => v,
            Storage::Shared { buf, start, len } => {
                if start == 0 && len == buf.len() {
                    Arc::try_unwrap(buf).unwrap_or_else(|b| b.as_ref().clone())
                } else {
                    buf[start..start + len].to_vec()
                }
            }
        }
    }

    /// Makes the buffer shareable: moves it behind an `Arc`, no copy. An
    /// empty (taken) buffer stays as it is.
    pub(crate) fn share(&mut self) {
        if let Storage::Owned(v) = self {
            if !v.is_empty() {
                let len = v.len();
                *self = Storage::Shared {
                    buf: Arc::new(std::mem::take(v)),
                    start: 0,
                    len,
                };
            }
        }
    }

    /// A view of this shared window's elements `at..at + len`, or `None`
    /// if the buffer is not shared (see [`Storage::share`]).
    ///
    /// # Panics
    /// If the window is out of range (the callers check shapes first).
    pub(crate) fn window(&self, at: usize, len: usize) -> Option<Storage<F>> {
        let Storage::Shared { buf, start, len: n } = self else {
            return None;
        };
        assert!(at + len <= *n, "view {at}..{} of {n} elements", at + len);
        Some(Storage::Shared {
            buf: Arc::clone(buf),
            start: start + at,
            len,
        })
    }

    /// If `parts` are adjacent windows of one shared buffer, in order, the
    /// window they cover together (a concat that needs no copy).
    pub(crate) fn joined(parts: &[&Storage<F>]) -> Option<Storage<F>> {
        let Some(Storage::Shared { buf, start, .. }) = parts.first() else {
            return None;
        };
        let mut end = *start;
        for p in parts {
            match p {
                Storage::Shared {
                    buf: b,
                    start: s,
                    len,
                } if Arc::ptr_eq(b, buf) && *s == end => end += len,
                _ => return None,
            }
        }
        Some(Storage::Shared {
            buf: Arc::clone(buf),
            start: *start,
            len: end - start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Storage;

    #[test]
    fn a_view_reads_its_window_and_outlives_its_source() {
        let mut src = Storage::Owned((0..10).map(f64::from).collect());
        assert!(src.window(0, 1).is_none(), "not shared yet");
        src.share();
        let v = src.window(3, 4).unwrap();
        assert_eq!(v.as_slice(), &[3.0, 4.0, 5.0, 6.0]);
        assert_eq!(src.take_vec(), Vec::<f64>::new(), "the view still holds it");
        let mut v = v;
        assert_eq!(
            v.take_vec().len(),
            10,
            "the last holder gets the whole buffer"
        );
    }

    #[test]
    fn writing_a_shared_window_copies_and_never_changes_the_others() {
        let mut src = Storage::Owned(vec![1.0f32, 2.0, 3.0]);
        src.share();
        let mut v = src.window(1, 2).unwrap();
        v.as_mut_slice()[0] = 9.0;
        assert_eq!(v.as_slice(), &[9.0, 3.0]);
        assert_eq!(src.as_slice(), &[1.0, 2.0, 3.0]);
        // The only holder writes in place, and stays shareable.
        drop(v);
        let before = src.as_slice().as_ptr();
        src.as_mut_slice()[2] = 4.0;
        assert_eq!(src.as_slice().as_ptr(), before);
        assert!(src.is_shared());
    }

    #[test]
    fn adjacent_windows_join_into_one_view() {
        let mut src = Storage::Owned((0..6).map(f64::from).collect());
        src.share();
        let view = |at| src.window(at, 2).unwrap();
        let (a, b, c) = (view(0), view(2), view(4));
        let all = Storage::joined(&[&a, &b, &c]).expect("adjacent");
        assert_eq!(all.as_slice(), src.as_slice());
        assert!(Storage::joined(&[&a, &c]).is_none(), "a gap");
        assert!(Storage::joined(&[&b, &a]).is_none(), "out of order");
        let own = Storage::Owned(vec![0.0; 2]);
        assert!(Storage::joined(&[&a, &own]).is_none(), "not shared");
    }

    #[test]
    fn into_vec_copies_only_what_it_must() {
        let mut src = Storage::Owned(vec![1.0f64, 2.0, 3.0]);
        src.share();
        let v = src.window(0, 2).unwrap();
        assert_eq!(v.into_vec(), vec![1.0, 2.0]);
        let w = src.window(0, 3).unwrap();
        drop(src);
        assert_eq!(w.into_vec(), vec![1.0, 2.0, 3.0]);
    }
}
