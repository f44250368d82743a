//! What every rank must agree on before training, and the check that stops
//! every rank with the same clear error when they do not.

use super::Collective;
use crate::error::{Error, ErrorKind, Result};
use crate::{ParamStore, Real};

/// A rank's view of the job as `(key, value)` entries: parameter names
/// with dtype and shape, the vocabulary, the corpus, settings. Ranks that
/// must train together have to hold the same entries; [`compare_worlds`]
/// names the ranks and entries that differ.
///
/// ```
/// use tapegrad::distributed::WorldDescription;
/// use tapegrad::{ParamStore, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// store.insert("decoder.bias", Tensor::zeros(&[72]));
/// let d = WorldDescription::new().params(&store).entry("vocabulary", "72 characters");
/// assert_eq!(d.get("parameter `decoder.bias`"), Some("f32 [72]"));
/// assert_eq!(WorldDescription::from_bytes(&d.to_bytes()), Some(d));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorldDescription {
    entries: Vec<(String, String)>,
}

impl WorldDescription {
    /// An empty description.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry (a later entry with the same key replaces it).
    pub fn entry(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key, value)),
        }
        self
    }

    /// Adds one entry per parameter of `store`: key ``parameter `name` ``,
    /// value dtype and shape, plus the parameter count.
    pub fn params<F: Real>(mut self, store: &ParamStore<F>) -> Self {
        for (_, p) in store.iter() {
            self = self.entry(
                format!("parameter `{}`", p.name),
                format!("{} {:?}", F::NAME, p.value.shape()),
            );
        }
        self.entry("parameters", store.len().to_string())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// A byte form to send to other ranks: each entry as key, value, each
    /// preceded by its length (8 bytes, little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.entries {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    /// The description [`WorldDescription::to_bytes`] made, or `None` if
    /// `bytes` are not such a form (truncated, a length past the end, not
    /// UTF-8).
    ///
    /// ```
    /// use tapegrad::distributed::WorldDescription;
    /// let d = WorldDescription::new().entry("a", "1");
    /// let bytes = d.to_bytes();
    /// assert_eq!(WorldDescription::from_bytes(&bytes), Some(d));
    /// assert_eq!(WorldDescription::from_bytes(&bytes[..bytes.len() - 1]), None);
    /// assert_eq!(WorldDescription::from_bytes(&[]), Some(WorldDescription::new()));
    /// ```
    pub fn from_bytes(mut bytes: &[u8]) -> Option<Self> {
        fn take(bytes: &mut &[u8]) -> Option<String> {
            let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
            let end = usize::try_from(len).ok()?.checked_add(8)?;
            let s = std::str::from_utf8(bytes.get(8..end)?).ok()?.to_string();
            *bytes = &bytes[end..];
            Some(s)
        }
        let mut d = WorldDescription::new();
        while !bytes.is_empty() {
            let k = take(&mut bytes)?;
            d.entries.push((k, take(&mut bytes)?));
        }
        Some(d)
    }
}

/// Compares every rank's description with rank 0's (`worlds[r]` is rank
/// r's): `Ok` if all are equal; otherwise an error naming each rank that
/// differs and, for each of them, the first entries that differ with both
/// values. Every rank computes the same message from the same gathered
/// descriptions.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] if a rank's description differs from
/// rank 0's.
///
/// ```
/// use tapegrad::distributed::{compare_worlds, WorldDescription};
/// let a = WorldDescription::new().entry("parameter `w`", "f32 [4, 3]");
/// let b = WorldDescription::new().entry("parameter `w`", "f32 [4, 2]");
/// assert!(compare_worlds(&[a.clone(), a.clone()]).is_ok());
/// let e = compare_worlds(&[a.clone(), a, b]).unwrap_err();
/// assert!(e.message().contains("rank 2 differs from rank 0"));
/// assert!(e.message().contains("parameter `w`: f32 [4, 3] on rank 0, f32 [4, 2] on rank 2"));
/// ```
pub fn compare_worlds(worlds: &[WorldDescription]) -> Result<()> {
    const SHOWN: usize = 6;
    let Some(reference) = worlds.first() else {
        return Ok(());
    };
    let mut reports = Vec::new();
    for (r, w) in worlds.iter().enumerate().skip(1) {
        let mut diffs = Vec::new();
        for (k, v0) in &reference.entries {
            match w.get(k) {
                Some(v) if v == v0 => {}
                Some(v) => diffs.push(format!("{k}: {v0} on rank 0, {v} on rank {r}")),
                None => diffs.push(format!("{k}: {v0} on rank 0, absent on rank {r}")),
            }
        }
        for (k, v) in &w.entries {
            if reference.get(k).is_none() {
                diffs.push(format!("{k}: absent on rank 0, {v} on rank {r}"));
            }
        }
        if !diffs.is_empty() {
            let more = diffs.len().saturating_sub(SHOWN);
            diffs.truncate(SHOWN);
            let mut line = format!("rank {r} differs from rank 0: {}", diffs.join("; "));
            if more > 0 {
                line.push_str(&format!("; and {more} more"));
            }
            reports.push(line);
        }
    }
    if reports.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidArgument,
        "check_same_world",
        format!(
            "the {} ranks do not describe the same job: {}",
            worlds.len(),
            reports.join(" | ")
        ),
    ))
}

/// Gathers every rank's `mine` to every rank and compares them
/// ([`compare_worlds`]). A collective: every rank must call it. Every rank
/// returns the same result, so all of them stop together on a mismatch
/// instead of some waiting forever for the others.
///
/// # Errors
/// As [`compare_worlds`]; [`ErrorKind::Format`] if a rank sent bytes that
/// are not a description.
///
/// ```
/// use tapegrad::distributed::{check_same_world, Solo, WorldDescription};
/// let d = WorldDescription::new().entry("corpus", "660 KB");
/// assert!(check_same_world(&Solo, &d).is_ok());
/// ```
pub fn check_same_world<C: Collective + ?Sized>(comm: &C, mine: &WorldDescription) -> Result<()> {
    let all = comm.all_gather_bytes(&mine.to_bytes());
    let worlds = all
        .iter()
        .enumerate()
        .map(|(r, b)| {
            WorldDescription::from_bytes(b).ok_or_else(|| {
                Error::new(
                    ErrorKind::Format,
                    "check_same_world",
                    format!(
                        "rank {r} sent {} bytes that are not a world description",
                        b.len()
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    compare_worlds(&worlds)
}

/// A 64-bit FNV-1a hash of `bytes`: a cheap fingerprint to compare large
/// things (a corpus, the parameters' bits) across ranks. Not
/// cryptographic.
///
/// ```
/// use tapegrad::distributed::fingerprint;
/// assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
/// assert_ne!(fingerprint(b"ab"), fingerprint(b"ba"));
/// ```
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The [`fingerprint`] of every parameter's name, shape and value bits, in
/// store order: equal on two ranks exactly when their parameters are equal
/// bit for bit (up to hash collisions).
///
/// ```
/// use tapegrad::distributed::params_fingerprint;
/// use tapegrad::{ParamStore, Tensor};
/// let mut a = ParamStore::<f64>::new();
/// let w = a.insert("w", Tensor::scalar(1.0));
/// let before = params_fingerprint(&a);
/// a.get_mut(w).data_mut()[0] = 1.0 + f64::EPSILON;
/// assert_ne!(params_fingerprint(&a), before);
/// ```
pub fn params_fingerprint<F: Real>(store: &ParamStore<F>) -> u64 {
    let mut bytes = Vec::with_capacity(store.num_elements() * 8);
    for (_, p) in store.iter() {
        bytes.extend_from_slice(p.name.as_bytes());
        for &d in p.value.shape() {
            bytes.extend_from_slice(&(d as u64).to_le_bytes());
        }
        for x in p.value.data() {
            bytes.extend_from_slice(&x.to_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
        }
    }
    fingerprint(&bytes)
}

/// Checks that every rank holds the same parameters, bit for bit, by
/// comparing their [`params_fingerprint`]s: the ranks of a data-parallel
/// job apply the same update to the same numbers, so a difference means a
/// fault (a rank that missed a step, an all-reduce that did not give every
/// rank the same sum). A collective; every rank returns the same result.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] naming the ranks whose parameters differ
/// from rank 0's.
///
/// ```
/// use tapegrad::distributed::{check_params_equal, Solo};
/// use tapegrad::{ParamStore, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// store.insert("w", Tensor::ones(&[3]));
/// assert!(check_params_equal(&Solo, &store).is_ok());
/// ```
pub fn check_params_equal<F: Real, C: Collective + ?Sized>(
    comm: &C,
    store: &ParamStore<F>,
) -> Result<()> {
    let all = comm.all_gather_bytes(&params_fingerprint(store).to_le_bytes());
    let differ: Vec<String> = all
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, b)| **b != all[0])
        .map(|(r, _)| r.to_string())
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidArgument,
        "check_params_equal",
        format!(
            "the parameters of rank{} {} differ from rank 0's: the ranks have diverged",
            if differ.len() == 1 { "" } else { "s" },
            differ.join(", ")
        ),
    ))
}
