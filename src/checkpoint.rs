//! Checkpoints: a [`ParamStore`], optionally an optimizer's state, the
//! training step and free-form metadata, in one
//! [safetensors](https://github.com/huggingface/safetensors) file.
//!
//! ## The file
//!
//! - Every parameter is a tensor under its PyTorch `state_dict` name
//!   (`encoder.weight`, `lstm.weight_ih_l0`, `lstm.bias_hh_l1`,
//!   `decoder.weight`, …), dtype `F32` or `F64` as the store's `F`, shape as
//!   in the store, little-endian, bit for bit (−0.0, subnormals, NaN
//!   payloads survive). `safetensors.torch.load_file(path)` gives a dict that
//!   `model.load_state_dict` accepts once the `optim.` entries are dropped.
//! - The optimizer's buffers ([`OptimizerState`]) are tensors named
//!   `optim.{buffer}.{parameter}`, e.g. `optim.exp_avg.lstm.weight_ih_l0`.
//!   Parameter names may therefore not start with `optim.`.
//! - The header's `__metadata__` (string → string) holds `format` = `pt`
//!   (the convention Hugging Face checks), `tapegrad.dtype`,
//!   `tapegrad.step` (the training step), `tapegrad.optimizer` (its
//!   [`kind`](crate::optim::Optimizer::kind)) and
//!   `tapegrad.optim.{scalar}` for each hyper-parameter and counter
//!   (`tapegrad.optim.lr`, `tapegrad.optim.step`, …; numbers in Rust's
//!   shortest round-trip form), plus the caller's own keys, which may not
//!   be `format` or start with `tapegrad.`. The keys are written in sorted
//!   order, so the same contents always give the same bytes (runs and the
//!   ranks of a distributed job can compare checkpoints by hash).
//!
//! ## Loading
//!
//! [`load`] is all-or-nothing. It parses and checks the whole file into a
//! staging list first and changes the store (and optimizer) only when every
//! check has passed, so a failed load leaves both exactly as they were.
//! Checked, each failure an [`Error`] of kind [`ErrorKind::Format`] whose
//! message names the tensor and the expected and found values (or
//! [`ErrorKind::Io`] naming the path when the file cannot be read):
//!
//! - the container: the 8-byte header length, the JSON header, the offsets
//!   (a truncated, padded or corrupt file is rejected, never read past);
//! - every parameter of the store is in the file (**missing**), with the
//!   store's dtype and shape (**mismatch**; an f32 file loads into an f64
//!   store, or back, when asked: [`load_with`] and
//!   [`LoadOptions::convert_dtype`]);
//! - every non-`optim.` tensor in the file is a parameter of the store: an
//!   **unexpected** tensor is an error, as with PyTorch's
//!   `load_state_dict(strict=True)`, because it almost always means a
//!   different model;
//! - with an optimizer: the file holds state of the same kind, every
//!   scalar is present, every buffer names a parameter and has its shape
//!   ([`Optimizer::load_state`]). Without one, `optim.` tensors are
//!   ignored, so weights load for inference without an optimizer.
//!
//! ```
//! use tapegrad::checkpoint::{self, Checkpoint};
//! use tapegrad::optim::{Adam, Optimizer};
//! use tapegrad::{ParamStore, Tape, Tensor};
//! use std::collections::BTreeMap;
//!
//! let mut store = ParamStore::<f32>::new();
//! let w = store.insert("decoder.weight", Tensor::randn(&[3, 2], 1));
//! let mut opt = Adam::new(0.01);
//! let g = Tape::new().param(&store, w).powf(2.0).sum().backward();
//! opt.step(&mut store, &g);
//! let meta = BTreeMap::from([("note".to_string(), "hello".to_string())]);
//! let bytes = checkpoint::to_bytes(&store, Some(&opt), 1, &meta).unwrap();
//!
//! let mut store2 = ParamStore::<f32>::new();
//! store2.insert("decoder.weight", Tensor::zeros(&[3, 2]));
//! let mut opt2 = Adam::new(0.5);
//! let info: Checkpoint = checkpoint::from_bytes(&bytes, &mut store2, Some(&mut opt2)).unwrap();
//! assert_eq!((info.step, info.optimizer.as_deref()), (1, Some("adam")));
//! assert_eq!(info.metadata["note"], "hello");
//! assert_eq!(store2.get(store2.key("decoder.weight").unwrap()), store.get(w));
//! assert_eq!(opt2.steps(), 1);
//! ```

use crate::error::{Error, ErrorKind, Result};
use crate::optim::{Optimizer, OptimizerState};
use crate::{ParamKey, ParamStore, Real, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Tensor-name prefix of optimizer buffers.
pub const OPTIM_PREFIX: &str = "optim.";

/// Metadata keys this module writes itself.
const KEY_FORMAT: &str = "format";
const KEY_DTYPE: &str = "tapegrad.dtype";
const KEY_STEP: &str = "tapegrad.step";
const KEY_OPTIMIZER: &str = "tapegrad.optimizer";
const PREFIX_OPTIM_SCALAR: &str = "tapegrad.optim.";
const RESERVED_PREFIX: &str = "tapegrad.";

/// What [`load`] found besides the tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The training step saved with the file (0 if the file has none, e.g.
    /// one written by PyTorch).
    pub step: u64,
    /// The optimizer kind whose state the file holds, if any.
    pub optimizer: Option<String>,
    /// The caller's metadata (the reserved keys removed).
    pub metadata: BTreeMap<String, String>,
    /// Number of parameter tensors (not counting optimizer buffers).
    pub num_params: usize,
    /// Every tensor of the file (parameters and `optim.` buffers), sorted
    /// by name, with its dtype and shape.
    pub tensors: Vec<TensorInfo>,
}

/// One tensor of a checkpoint file, as [`inspect`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`lstm.weight_hh_l0`, `optim.exp_avg.decoder.bias`).
    pub name: String,
    /// The safetensors dtype as written in the file (`F32`, `F64`, …).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
}

/// Options of [`from_bytes_with`] and [`load_with`].
///
/// ```
/// use tapegrad::checkpoint::LoadOptions;
/// assert!(!LoadOptions::default().convert_dtype); // refuse by default
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Convert tensors saved as f32 into an f64 store (exact) or saved as
    /// f64 into an f32 store (rounded to nearest) instead of refusing the
    /// dtype mismatch. Names and shapes are checked as always.
    pub convert_dtype: bool,
}

fn format_err(op: &str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Format, op, message)
}

/// The safetensors dtype of `F`, if checkpoints support it.
fn dtype_of<F: Real>() -> Option<Dtype> {
    match F::NAME {
        "f32" => Some(Dtype::F32),
        "f64" => Some(Dtype::F64),
        _ => None,
    }
}

/// Little-endian bytes of `data` in `dtype` (F32 or F64, matching `F`).
fn encode<F: Real>(data: &[F], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => data
            .iter()
            .flat_map(|x| x.to_f32().unwrap_or(f32::NAN).to_le_bytes())
            .collect(),
        _ => data
            .iter()
            .flat_map(|x| x.to_f64().unwrap_or(f64::NAN).to_le_bytes())
            .collect(),
    }
}

/// Elements of `F` from little-endian bytes of `dtype` (already checked to
/// be `F`'s dtype and of the right length).
fn decode<F: Real>(bytes: &[u8], dtype: Dtype) -> Option<Vec<F>> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| F::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                F::from_f64(f64::from_le_bytes(b))
            })
            .collect(),
        _ => None,
    }
}

/// Serialises `store`, `optimizer`'s state, `step` and `metadata` into the
/// bytes of a safetensors file (see the module docs for the layout).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] if `F` is neither `f32` nor `f64`, a
/// parameter name starts with `optim.`, or a metadata key is reserved
/// (`format`, `tapegrad.…`).
///
/// ```
/// use tapegrad::{checkpoint, ParamStore, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// store.insert("w", Tensor::ones(&[2]));
/// let bytes = checkpoint::to_bytes(&store, None, 0, &Default::default()).unwrap();
/// let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
/// assert_eq!(bytes.len(), 8 + header_len + 2 * 8);
/// ```
pub fn to_bytes<F: Real>(
    store: &ParamStore<F>,
    optimizer: Option<&dyn Optimizer<F>>,
    step: u64,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    const OP: &str = "checkpoint::save";
    let invalid = |m: String| Error::new(ErrorKind::InvalidArgument, OP, m);
    let dtype = dtype_of::<F>().ok_or_else(|| {
        invalid(format!(
            "checkpoints hold f32 or f64 tensors, not {}",
            F::NAME
        ))
    })?;
    let mut meta: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in metadata {
        if k == KEY_FORMAT || k.starts_with(RESERVED_PREFIX) {
            return Err(invalid(format!(
                "metadata key `{k}` is reserved (`{KEY_FORMAT}` and `{RESERVED_PREFIX}…`)"
            )));
        }
        meta.insert(k.clone(), v.clone());
    }
    meta.insert(KEY_FORMAT.into(), "pt".into());
    meta.insert(KEY_DTYPE.into(), F::NAME.into());
    meta.insert(KEY_STEP.into(), step.to_string());

    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(store.len());
    for (_, p) in store.iter() {
        if p.name.starts_with(OPTIM_PREFIX) {
            return Err(invalid(format!(
                "parameter `{}`: names starting with `{OPTIM_PREFIX}` are reserved for optimizer state",
                p.name
            )));
        }
        named.push((
            p.name.clone(),
            p.value.shape().to_vec(),
            encode(p.value.data(), dtype),
        ));
    }
    if let Some(opt) = optimizer {
        let state = opt.state(store);
        meta.insert(KEY_OPTIMIZER.into(), state.kind.clone());
        for (name, v) in &state.scalars {
            meta.insert(format!("{PREFIX_OPTIM_SCALAR}{name}"), format!("{v:?}"));
        }
        for (name, t) in &state.tensors {
            named.push((
                format!("{OPTIM_PREFIX}{name}"),
                t.shape().to_vec(),
                encode(t.data(), dtype),
            ));
        }
    }
    let views = named
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (name.as_str(), v))
                .map_err(|e| invalid(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, None)
        .map_err(|e| invalid(format!("cannot serialise: {e}")))?;
    Ok(with_metadata(bytes, &meta))
}

/// Puts `meta` into the header of `file` (a safetensors file serialised
/// without metadata) as its `__metadata__` entry, keys in sorted order, so
/// the same contents always give the same bytes. (`safetensors` takes the
/// metadata as a `HashMap` and writes it in that map's random iteration
/// order.) The header stays padded with spaces to a multiple of 8 bytes.
fn with_metadata(file: Vec<u8>, meta: &BTreeMap<String, String>) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let (header, data) = file[8..].split_at(n);
    let header = std::str::from_utf8(header)
        .expect("safetensors writes a UTF-8 header")
        .trim_end_matches(' ');
    let tensors = header
        .strip_prefix('{')
        .and_then(|h| h.strip_suffix('}'))
        .expect("a JSON object");
    let mut out = String::from("{\"__metadata__\":{");
    for (i, (k, v)) in meta.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, k);
        out.push(':');
        json_string(&mut out, v);
    }
    out.push('}');
    if !tensors.is_empty() {
        out.push(',');
        out.push_str(tensors);
    }
    out.push('}');
    while !out.len().is_multiple_of(8) {
        out.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + out.len() + data.len());
    bytes.extend_from_slice(&(out.len() as u64).to_le_bytes());
    bytes.extend_from_slice(out.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a checkpoint file (see [`to_bytes`]). The bytes go to a sibling
/// temporary file that is then renamed over `path`, so a crash mid-write
/// never leaves a half-written checkpoint under `path`.
///
/// # Errors
/// As [`to_bytes`], and [`ErrorKind::Io`] naming the path if it cannot be
/// written.
///
/// ```
/// use tapegrad::{checkpoint, ParamStore, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let w = store.insert("w", Tensor::from_vec(vec![1.5, -0.0], &[2]).unwrap());
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-{}.safetensors", std::process::id()));
/// checkpoint::save(&path, &store, None, 7, &Default::default()).unwrap();
/// store.get_mut(w).data_mut()[0] = 0.0;
/// let info = checkpoint::load(&path, &mut store, None).unwrap();
/// assert_eq!((info.step, store.get(w).data()[0]), (7, 1.5));
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn save<F: Real>(
    path: impl AsRef<Path>,
    store: &ParamStore<F>,
    optimizer: Option<&dyn Optimizer<F>>,
    step: u64,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_bytes(store, optimizer, step, metadata)?;
    let io = |what: &str, e: std::io::Error| {
        Error::new(
            ErrorKind::Io,
            "checkpoint::save",
            format!("cannot {what} `{}`: {e}", path.display()),
        )
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("replace", e)
    })
}

/// One tensor of a parsed file: a view into its bytes.
struct Entry<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

/// A parsed file: its metadata and its tensors, sorted by name.
struct Parsed<'a> {
    metadata: HashMap<String, String>,
    tensors: Vec<(String, Entry<'a>)>,
}

/// Parses and validates the container: the header length, the JSON header,
/// and that the tensors' offsets tile the data exactly to the end of the
/// file (safetensors' own checks, with checked arithmetic).
fn parse<'a>(bytes: &'a [u8], op: &str) -> Result<Parsed<'a>> {
    let bad = |why: String| {
        format_err(
            op,
            format!(
                "not a valid safetensors file ({} bytes): {why}",
                bytes.len()
            ),
        )
    };
    let (header_len, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let data_start = 8 + header_len;
    let mut tensors = Vec::new();
    for (name, info) in header.tensors() {
        let (a, b) = info.data_offsets;
        let data = data_start
            .checked_add(a)
            .zip(data_start.checked_add(b))
            .and_then(|(a, b)| bytes.get(a..b))
            .ok_or_else(|| {
                bad(format!(
                    "tensor `{name}`: offsets {a}..{b} lie outside the data"
                ))
            })?;
        tensors.push((
            name,
            Entry {
                dtype: info.dtype,
                shape: info.shape.clone(),
                data,
            },
        ));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Parsed {
        metadata: header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        tensors,
    })
}

/// The [`Checkpoint`] summary of parsed metadata.
fn summary(p: &Parsed<'_>, op: &str) -> Result<Checkpoint> {
    let step = match p.metadata.get(KEY_STEP) {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            format_err(
                op,
                format!("metadata `{KEY_STEP}` is `{s}`, not a whole number ≥ 0"),
            )
        })?,
    };
    Ok(Checkpoint {
        step,
        optimizer: p.metadata.get(KEY_OPTIMIZER).cloned(),
        metadata: p
            .metadata
            .iter()
            .filter(|(k, _)| *k != KEY_FORMAT && !k.starts_with(RESERVED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        num_params: p
            .tensors
            .iter()
            .filter(|(n, _)| !n.starts_with(OPTIM_PREFIX))
            .count(),
        tensors: p
            .tensors
            .iter()
            .map(|(name, e)| TensorInfo {
                name: name.clone(),
                dtype: e.dtype.to_string(),
                shape: e.shape.clone(),
            })
            .collect(),
    })
}

/// Reads the summary (step, optimizer kind, metadata, and the name, dtype
/// and shape of every tensor) of checkpoint bytes without a store, e.g. to
/// learn a model's sizes before building it. The whole container is
/// validated.
///
/// # Errors
/// [`ErrorKind::Format`] for a malformed file.
///
/// ```
/// use tapegrad::{checkpoint, ParamStore, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// store.insert("w", Tensor::ones(&[1]));
/// let meta = [("hidden".to_string(), "32".to_string())].into();
/// let bytes = checkpoint::to_bytes(&store, None, 5, &meta).unwrap();
/// let info = checkpoint::inspect(&bytes).unwrap();
/// assert_eq!((info.step, info.num_params, info.metadata["hidden"].as_str()), (5, 1, "32"));
/// assert_eq!((info.tensors[0].name.as_str(), info.tensors[0].dtype.as_str()), ("w", "F32"));
/// assert_eq!(info.tensors[0].shape, vec![1]);
/// ```
pub fn inspect(bytes: &[u8]) -> Result<Checkpoint> {
    const OP: &str = "checkpoint::inspect";
    summary(&parse(bytes, OP)?, OP)
}

/// [`inspect`] on a file.
///
/// # Errors
/// [`ErrorKind::Io`] if the file cannot be read, [`ErrorKind::Format`] if
/// it is malformed; both name the path.
///
/// ```
/// use tapegrad::{checkpoint, ParamStore, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// store.insert("w", Tensor::ones(&[1]));
/// let path = std::env::temp_dir().join(format!("tapegrad-inspect-{}.safetensors", std::process::id()));
/// checkpoint::save(&path, &store, None, 12, &Default::default()).unwrap();
/// let info = checkpoint::inspect_file(&path).unwrap();
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!((info.step, info.optimizer), (12, None));
/// ```
pub fn inspect_file(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = read(path, "checkpoint::inspect")?;
    inspect(&bytes).map_err(|e| with_path(e, path))
}

/// Checks a tensor of the file against the expected dtype and shape and
/// decodes it.
fn stage<F: Real>(
    name: &str,
    view: &Entry<'_>,
    want_dtype: Dtype,
    want_shape: &[usize],
    (what, op, opts): (&str, &str, LoadOptions),
) -> Result<Tensor<F>> {
    let convertible = matches!(view.dtype, Dtype::F32 | Dtype::F64);
    let from_dtype = if opts.convert_dtype && convertible {
        view.dtype
    } else {
        want_dtype
    };
    if view.dtype != from_dtype {
        return Err(format_err(
            op,
            format!(
                "tensor `{name}`: dtype {} in the file, {what} holds {} ({want_dtype}){}",
                view.dtype,
                F::NAME,
                if convertible {
                    "; load with `LoadOptions { convert_dtype: true }` to convert"
                } else {
                    ""
                }
            ),
        ));
    }
    if view.shape != want_shape {
        return Err(format_err(
            op,
            format!(
                "tensor `{name}`: shape {:?} in the file, {what} expects {want_shape:?}",
                view.shape
            ),
        ));
    }
    let data = decode::<F>(view.data, from_dtype).ok_or_else(|| {
        format_err(
            op,
            format!(
                "tensor `{name}`: its {} values do not convert to {}",
                view.dtype,
                F::NAME
            ),
        )
    })?;
    Tensor::from_vec(data, want_shape).map_err(|e| format_err(op, format!("tensor `{name}`: {e}")))
}

/// Loads checkpoint bytes into `store` (and `optimizer`), all or nothing:
/// see the module docs for every check. Returns the step and metadata.
///
/// # Errors
/// [`ErrorKind::Format`] naming the tensor and what was expected and found;
/// [`ErrorKind::InvalidArgument`] if `F` is neither `f32` nor `f64`. On
/// error neither `store` nor `optimizer` has changed.
///
/// ```
/// use tapegrad::{checkpoint, ErrorKind, ParamStore, Tensor};
/// let mut a = ParamStore::<f32>::new();
/// a.insert("decoder.weight", Tensor::ones(&[2, 3]));
/// let bytes = checkpoint::to_bytes(&a, None, 0, &Default::default()).unwrap();
///
/// let mut b = ParamStore::<f32>::new();
/// let w = b.insert("decoder.weight", Tensor::zeros(&[3, 2]));
/// let e = checkpoint::from_bytes(&bytes, &mut b, None).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::Format);
/// assert!(e.message().contains("shape [2, 3] in the file, the store expects [3, 2]"));
/// assert_eq!(b.get(w).data(), &[0.0; 6]); // untouched
/// ```
pub fn from_bytes<F: Real>(
    bytes: &[u8],
    store: &mut ParamStore<F>,
    optimizer: Option<&mut dyn Optimizer<F>>,
) -> Result<Checkpoint> {
    from_bytes_with(bytes, store, optimizer, LoadOptions::default())
}

/// [`from_bytes`] with [`LoadOptions`]: with `convert_dtype`, an f32 file
/// loads into an f64 store (and optimizer) and back.
///
/// # Errors
/// As [`from_bytes`].
///
/// ```
/// use tapegrad::checkpoint::{self, LoadOptions};
/// use tapegrad::{ErrorKind, ParamStore, Tensor};
/// let mut a = ParamStore::<f32>::new();
/// a.insert("w", Tensor::from_vec(vec![0.1f32, -2.5], &[2]).unwrap());
/// let bytes = checkpoint::to_bytes(&a, None, 0, &Default::default()).unwrap();
///
/// let mut b = ParamStore::<f64>::new();
/// let w = b.insert("w", Tensor::zeros(&[2]));
/// let refused = checkpoint::from_bytes(&bytes, &mut b, None).unwrap_err();
/// assert!(refused.message().contains("convert_dtype"));
/// let opts = LoadOptions { convert_dtype: true };
/// checkpoint::from_bytes_with(&bytes, &mut b, None, opts).unwrap();
/// assert_eq!(b.get(w).data(), &[0.1f32 as f64, -2.5]); // f32 → f64 is exact
/// ```
pub fn from_bytes_with<F: Real>(
    bytes: &[u8],
    store: &mut ParamStore<F>,
    optimizer: Option<&mut dyn Optimizer<F>>,
    opts: LoadOptions,
) -> Result<Checkpoint> {
    const OP: &str = "checkpoint::load";
    let dtype = dtype_of::<F>().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidArgument,
            OP,
            format!("checkpoints hold f32 or f64 tensors, not {}", F::NAME),
        )
    })?;
    let parsed = parse(bytes, OP)?;
    let info = summary(&parsed, OP)?;

    // 1. Stage every parameter (unexpected, dtype, shape), then look for
    //    missing ones.
    let mut staged: Vec<(ParamKey, Tensor<F>)> = Vec::with_capacity(store.len());
    let mut optim_views = Vec::new();
    for (name, view) in &parsed.tensors {
        if let Some(buffer) = name.strip_prefix(OPTIM_PREFIX) {
            optim_views.push((buffer, view));
            continue;
        }
        let key = store.key(name).ok_or_else(|| {
            format_err(
                OP,
                format!(
                    "unexpected tensor `{name}` (dtype {}, shape {:?}) in the file: the store has no such parameter",
                    view.dtype,
                    view.shape
                ),
            )
        })?;
        let want = store.get(key).shape().to_vec();
        staged.push((
            key,
            stage(name, view, dtype, &want, ("the store", OP, opts))?,
        ));
    }
    if staged.len() != store.len() {
        let in_file: std::collections::HashSet<ParamKey> = staged.iter().map(|(k, _)| *k).collect();
        let missing: Vec<String> = store
            .iter()
            .filter(|(k, _)| !in_file.contains(k))
            .map(|(_, p)| format!("`{}` {:?}", p.name, p.value.shape()))
            .collect();
        return Err(format_err(
            OP,
            format!(
                "missing tensor{} in the file: {}",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            ),
        ));
    }

    // 2. The optimizer validates its whole state and commits it only if it
    //    is sound. The store's names and shapes are the staged ones, so
    //    validating against the store before step 3 is the same check.
    if let Some(opt) = optimizer {
        let kind = info.optimizer.clone().ok_or_else(|| {
            format_err(
                OP,
                format!(
                    "the file holds no optimizer state (no `{KEY_OPTIMIZER}` metadata), but a `{}` optimizer was given to restore",
                    opt.kind()
                ),
            )
        })?;
        let mut scalars: Vec<(String, f64)> = Vec::new();
        for (k, v) in &parsed.metadata {
            if let Some(name) = k.strip_prefix(PREFIX_OPTIM_SCALAR) {
                let x = v.parse::<f64>().map_err(|_| {
                    format_err(OP, format!("metadata `{k}` is `{v}`, not a number"))
                })?;
                scalars.push((name.to_string(), x));
            }
        }
        scalars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tensors = Vec::with_capacity(optim_views.len());
        for (buffer, view) in optim_views {
            let name = format!("{OPTIM_PREFIX}{buffer}");
            let shape = view.shape.to_vec();
            tensors.push((
                buffer.to_string(),
                stage(&name, view, dtype, &shape, ("the optimizer", OP, opts))?,
            ));
        }
        let state = OptimizerState {
            kind,
            scalars,
            tensors,
        };
        opt.load_state(store, &state)
            .map_err(|e| format_err(OP, format!("optimizer state: {}", e.message())))?;
    }

    // 3. Commit: nothing below can fail.
    for (key, t) in staged {
        *store.get_mut(key) = t;
    }
    Ok(info)
}

fn read(path: &Path, op: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            op,
            format!("cannot read `{}`: {e}", path.display()),
        )
    })
}

fn with_path(e: Error, path: &Path) -> Error {
    Error::new(
        e.kind(),
        e.op(),
        format!("`{}`: {}", path.display(), e.message()),
    )
}

/// Loads a checkpoint file into `store` (and `optimizer`), all or nothing
/// (see [`from_bytes`]).
///
/// # Errors
/// [`ErrorKind::Io`] if the file cannot be read; otherwise as
/// [`from_bytes`]. Messages name the path.
///
/// ```
/// use tapegrad::{checkpoint, ErrorKind, ParamStore};
/// let mut store = ParamStore::<f32>::new();
/// let e = checkpoint::load("no/such/file.safetensors", &mut store, None).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::Io);
/// assert!(e.message().contains("no/such/file.safetensors"));
/// ```
pub fn load<F: Real>(
    path: impl AsRef<Path>,
    store: &mut ParamStore<F>,
    optimizer: Option<&mut dyn Optimizer<F>>,
) -> Result<Checkpoint> {
    load_with(path, store, optimizer, LoadOptions::default())
}

/// [`load`] with [`LoadOptions`] (see [`from_bytes_with`]).
///
/// # Errors
/// As [`load`].
pub fn load_with<F: Real>(
    path: impl AsRef<Path>,
    store: &mut ParamStore<F>,
    optimizer: Option<&mut dyn Optimizer<F>>,
    opts: LoadOptions,
) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = read(path, "checkpoint::load")?;
    from_bytes_with(&bytes, store, optimizer, opts).map_err(|e| with_path(e, path))
}
