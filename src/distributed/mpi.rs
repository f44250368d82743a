//! [`Mpi`]: the [`Collective`] of an MPI job (feature `mpi`), over the
//! system's MPI library through the `mpi` crate.

use super::Collective;
use crate::error::{Error, ErrorKind, Result};
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence, Root};
use mpi::Count;

/// Elements per MPI call: MPI counts are C `int`s, so longer buffers go in
/// pieces of this many.
const CHUNK: usize = 1 << 30;

/// The world communicator of an MPI job: start the program under a
/// launcher (`mpirun -np 2 program …`) and every process gets one, with
/// its rank and the job's size. Started without a launcher it is a group
/// of one (MPI's singleton start).
///
/// Dropping it finalises MPI (a collective: every rank must get there).
/// Any error that only some ranks see must end the job with
/// [`Mpi::abort`] instead, or the other ranks would wait forever in their
/// next collective; [`Mpi::init`] installs a panic hook that does so for
/// panics. A rank killed from outside makes the launcher end the others.
///
/// MPI calls are made from the thread that called [`Mpi::init`] only
/// (thread level `MPI_THREAD_FUNNELED`); worker threads
/// ([`DataParallel`](crate::DataParallel)) never call MPI.
///
/// ```no_run
/// // Run as: mpirun -np 2 target/release/examples/char_lstm (or any program doing this)
/// use tapegrad::distributed::{Collective, Mpi};
/// let world = Mpi::init()?;
/// let mut g = vec![world.rank() as f32 + 1.0; 4];
/// world.sum_f32(&mut g);
/// let n = world.size() as f32;
/// assert_eq!(g[0], n * (n + 1.0) / 2.0);
/// # Ok::<(), tapegrad::Error>(())
/// ```
pub struct Mpi {
    // Dropped last: finalises MPI.
    _universe: Universe,
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl Mpi {
    /// Initialises MPI (thread level funneled) and installs a panic hook
    /// that prints the panic, naming the rank, and then aborts the whole
    /// job (`MPI_Abort`) so no rank is left waiting.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if MPI was already initialised in
    /// this process, or if the library cannot give the funneled thread
    /// level.
    pub fn init() -> Result<Self> {
        let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "Mpi::init",
                    "MPI is already initialised in this process",
                )
            })?;
        let world = universe.world();
        let rank = usize::try_from(world.rank()).expect("an MPI rank is ≥ 0");
        let size = usize::try_from(world.size()).expect("an MPI size is ≥ 1");
        if level < mpi::Threading::Funneled {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "Mpi::init",
                format!("the MPI library offers thread level {level:?}; worker threads need at least Funneled"),
            ));
        }
        if size > 1 {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                eprintln!("rank {rank} of {size}: aborting the MPI job after a panic:");
                previous(info);
                SimpleCommunicator::world().abort(101);
            }));
        }
        Ok(Mpi {
            _universe: universe,
            world,
            rank,
            size,
        })
    }

    /// Ends every rank of the job now (`MPI_Abort` on the world) with exit
    /// status `code`: the way out of an error only this rank has seen.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// `MPI_Wtime`: seconds since an arbitrary moment, for timing
    /// collectives.
    pub fn time(&self) -> f64 {
        mpi::time()
    }

    fn all_reduce_sum<T: Equivalence + Copy>(&self, buf: &mut [T]) {
        for piece in buf.chunks_mut(CHUNK) {
            let send = piece.to_vec();
            self.world
                .all_reduce_into(&send[..], piece, mpi::collective::SystemOperation::sum());
        }
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_f32(&self, buf: &mut [f32]) {
        self.all_reduce_sum(buf);
    }

    fn sum_f64(&self, buf: &mut [f64]) {
        self.all_reduce_sum(buf);
    }

    fn broadcast_f64(&self, buf: &mut [f64]) {
        let root = self.world.process_at_rank(0);
        for piece in buf.chunks_mut(CHUNK) {
            root.broadcast_into(piece);
        }
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let len = Count::try_from(bytes.len())
            .expect("tapegrad: Mpi::all_gather_bytes: more than 2³¹ bytes from one rank");
        let mut counts: Vec<Count> = vec![0; self.size];
        self.world.all_gather_into(&len, &mut counts[..]);
        let displs: Vec<Count> = counts
            .iter()
            .scan(0, |acc, &n| {
                let at = *acc;
                *acc += n;
                Some(at)
            })
            .collect();
        let total: usize = counts.iter().map(|&n| n as usize).sum();
        let mut all = vec![0u8; total];
        {
            let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(bytes, &mut partition);
        }
        let mut out = Vec::with_capacity(self.size);
        let mut at = 0;
        for &n in &counts {
            out.push(all[at..at + n as usize].to_vec());
            at += n as usize;
        }
        out
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let len = usize::try_from(len).expect("a length that fits in memory");
        bytes.resize(len, 0);
        for piece in bytes.chunks_mut(CHUNK) {
            root.broadcast_into(piece);
        }
    }
}
