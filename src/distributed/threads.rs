//! [`ThreadGroup`]: ranks as threads of one process, to run and test
//! multi-rank code without an MPI launcher.

use super::Collective;
use std::sync::{Arc, Barrier, Mutex, PoisonError};

/// What one rank deposits for a collective.
#[derive(Debug, Clone)]
enum Payload {
    Empty,
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<u8>),
}

#[derive(Debug)]
struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Payload>>,
}

/// One rank of a group of threads in one process ([`ThreadGroup::new`]
/// makes a handle per rank; move each into its own thread). Its
/// collectives meet at a barrier and combine the deposits **in rank
/// order** (`((g₀ + g₁) + g₂) + …`), so with two ranks a sum is exactly
/// `g₀ + g₁`, what an MPI all-reduce of two ranks computes.
///
/// Meant for tests and experiments: a rank thread that panics leaves the
/// others waiting at the next collective (the MPI launcher's job of
/// killing the rest has no counterpart here).
///
/// ```
/// use tapegrad::distributed::{Collective, ThreadGroup};
/// let sums: Vec<Vec<f64>> = std::thread::scope(|s| {
///     let handles: Vec<_> = ThreadGroup::new(3)
///         .into_iter()
///         .map(|g| s.spawn(move || {
///             let mut buf = vec![g.rank() as f64, 1.0];
///             g.sum_f64(&mut buf);
///             buf
///         }))
///         .collect();
///     handles.into_iter().map(|h| h.join().unwrap()).collect()
/// });
/// assert!(sums.iter().all(|b| b == &[3.0, 3.0])); // 0 + 1 + 2, 1 + 1 + 1
/// ```
#[derive(Debug, Clone)]
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// Handles for ranks `0..size`, in rank order.
    ///
    /// # Panics
    /// If `size` is 0.
    ///
    /// ```
    /// let g = tapegrad::distributed::ThreadGroup::new(2);
    /// assert_eq!(g.len(), 2);
    /// ```
    #[track_caller]
    pub fn new(size: usize) -> Vec<ThreadGroup> {
        if size == 0 {
            crate::error::fail(crate::Error::new(
                crate::ErrorKind::InvalidArgument,
                "ThreadGroup::new",
                "a group needs at least one rank",
            ));
        }
        let shared = Arc::new(Shared {
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Payload::Empty; size]),
        });
        (0..size)
            .map(|rank| ThreadGroup {
                rank,
                size,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    /// Deposits `mine`, waits for every rank, returns every deposit in rank
    /// order, and waits again so no rank deposits the next one early.
    fn exchange(&self, mine: Payload) -> Vec<Payload> {
        let lock = || {
            self.shared
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        lock()[self.rank] = mine;
        self.shared.barrier.wait();
        let all = lock().clone();
        self.shared.barrier.wait();
        all
    }
}

/// `acc += x`, elementwise, for each deposit after the first, in order.
macro_rules! sum_in_rank_order {
    ($all:expr, $variant:ident, $buf:expr) => {{
        let mut acc: Option<Vec<_>> = None;
        for p in $all {
            let Payload::$variant(x) = p else {
                panic!("tapegrad: ThreadGroup: the ranks called different collectives");
            };
            match acc.as_mut() {
                None => acc = Some(x),
                Some(a) => {
                    assert_eq!(
                        a.len(),
                        x.len(),
                        "tapegrad: ThreadGroup: buffers of different lengths"
                    );
                    a.iter_mut().zip(&x).for_each(|(a, b)| *a += *b);
                }
            }
        }
        $buf.copy_from_slice(&acc.expect("a group has at least one rank"));
    }};
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_f32(&self, buf: &mut [f32]) {
        let all = self.exchange(Payload::F32(buf.to_vec()));
        sum_in_rank_order!(all, F32, buf);
    }

    fn sum_f64(&self, buf: &mut [f64]) {
        let all = self.exchange(Payload::F64(buf.to_vec()));
        sum_in_rank_order!(all, F64, buf);
    }

    fn broadcast_f64(&self, buf: &mut [f64]) {
        let all = self.exchange(Payload::F64(buf.to_vec()));
        match &all[0] {
            Payload::F64(root) if root.len() == buf.len() => buf.copy_from_slice(root),
            _ => panic!("tapegrad: ThreadGroup: broadcast_f64 of buffers of different lengths"),
        }
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.exchange(Payload::Bytes(bytes.to_vec()))
            .into_iter()
            .map(|p| match p {
                Payload::Bytes(b) => b,
                _ => panic!("tapegrad: ThreadGroup: the ranks called different collectives"),
            })
            .collect()
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let mut all = self.all_gather_bytes(bytes);
        *bytes = std::mem::take(&mut all[0]);
    }
}
