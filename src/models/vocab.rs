//! [`Vocab`]: characters ↔ ids.

use crate::error::{Error, ErrorKind, Result};
use std::collections::HashMap;

/// The characters of a corpus, sorted by code point, each with its id (its
/// index in that order). Built from the text alone, so the same corpus
/// always gives the same ids; saved into checkpoints as the string of its
/// characters ([`Vocab::as_string`]).
///
/// ```
/// use tapegrad::models::Vocab;
/// let v = Vocab::from_text("hello world");
/// assert_eq!(v.as_string(), " dehlorw");
/// let ids = v.encode("held").unwrap();
/// assert_eq!(ids, vec![3, 2, 4, 1]);
/// assert_eq!(v.decode(&ids), "held");
/// assert!(v.encode("hex").is_err()); // 'x' is not in the corpus
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
    index: HashMap<char, usize>,
}

impl Vocab {
    /// The distinct characters of `text`, sorted.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_sorted(chars)
    }

    fn from_sorted(chars: Vec<char>) -> Self {
        let index = chars.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        Vocab { chars, index }
    }

    /// Rebuilds a vocabulary from [`Vocab::as_string`].
    ///
    /// # Errors
    /// [`ErrorKind::Format`] unless the characters are strictly increasing
    /// (sorted, no repeats) and there is at least one.
    ///
    /// ```
    /// use tapegrad::models::Vocab;
    /// let v = Vocab::from_text("abcab");
    /// assert_eq!(Vocab::from_string(&v.as_string()).unwrap(), v);
    /// assert!(Vocab::from_string("ba").is_err());
    /// ```
    pub fn from_string(s: &str) -> Result<Self> {
        let chars: Vec<char> = s.chars().collect();
        if chars.is_empty() || chars.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::new(
                ErrorKind::Format,
                "Vocab::from_string",
                format!("a vocabulary is a non-empty string of strictly increasing characters, got {s:?}"),
            ));
        }
        Ok(Self::from_sorted(chars))
    }

    /// The characters in id order, as one string.
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// The characters in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether there are no characters.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<usize> {
        self.index.get(&c).copied()
    }

    /// The character with id `id`.
    pub fn char(&self, id: usize) -> Option<char> {
        self.chars.get(id).copied()
    }

    /// The distinct characters of `text` that are not in the vocabulary,
    /// sorted: what [`Vocab::encode`] would stumble on, all at once (to
    /// check a prompt or a corpus before a long run).
    ///
    /// ```
    /// use tapegrad::models::Vocab;
    /// let v = Vocab::from_text("the raven");
    /// assert_eq!(v.missing("Quoth the raven"), vec!['Q', 'o', 'u']);
    /// assert!(v.missing("never").is_empty());
    /// ```
    pub fn missing(&self, text: &str) -> Vec<char> {
        let mut out: Vec<char> = text.chars().filter(|&c| self.id(c).is_none()).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The ids of the characters of `text`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the first character that is
    /// not in the vocabulary and its position.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                self.id(c).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        "Vocab::encode",
                        format!("character {c:?} at position {i} is not in the vocabulary"),
                    )
                })
            })
            .collect()
    }

    /// The text of `ids`.
    ///
    /// # Panics
    /// If an id is ≥ [`Vocab::len`].
    #[track_caller]
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|&i| {
                self.char(i).unwrap_or_else(|| {
                    crate::error::fail(Error::new(
                        ErrorKind::InvalidArgument,
                        "Vocab::decode",
                        format!("id {i} out of range for {} characters", self.len()),
                    ))
                })
            })
            .collect()
    }
}
