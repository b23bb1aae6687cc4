//! Operation metadata: the client's own string labels on an operation (an order number, a
//! merchant), kept with it, part of what identifies the request, and shown wherever the
//! operation is. Bounded, so a request can never grow a marker, a record or an event without
//! limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Keys in sorted order, so equal metadata has one canonical text whatever order a client
/// wrote it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(pub BTreeMap<String, String>);

/// The bounds of `http.metadata_keys_max`, `http.metadata_key_chars_max` and
/// `http.metadata_value_chars_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataLimits {
    pub keys_max: usize,
    pub key_chars_max: usize,
    pub value_chars_max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata has {count} keys; at most {max} are allowed")]
    TooManyKeys { count: usize, max: usize },
    #[error("metadata keys must be 1 to {max} characters")]
    KeyLength { max: usize },
    #[error("the metadata value of a key is longer than {max} characters")]
    ValueLength { max: usize },
    /// PostgreSQL cannot store the NUL character in text or JSON.
    #[error("metadata may not contain the NUL character")]
    Nul,
}

impl Metadata {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the bounds; characters are Unicode scalar values, as a client counts them.
    pub fn check(&self, limits: &MetadataLimits) -> Result<(), MetadataError> {
        if self.0.len() > limits.keys_max {
            return Err(MetadataError::TooManyKeys {
                count: self.0.len(),
                max: limits.keys_max,
            });
        }
        for (key, value) in &self.0 {
            if key.is_empty() || key.chars().count() > limits.key_chars_max {
                return Err(MetadataError::KeyLength {
                    max: limits.key_chars_max,
                });
            }
            if value.chars().count() > limits.value_chars_max {
                return Err(MetadataError::ValueLength {
                    max: limits.value_chars_max,
                });
            }
        }
        if !self.storable() {
            return Err(MetadataError::Nul);
        }
        Ok(())
    }

    /// Whether PostgreSQL can store it: no NUL character anywhere.
    pub fn storable(&self) -> bool {
        self.0
            .iter()
            .all(|(key, value)| !key.contains('\0') && !value.contains('\0'))
    }

    /// The canonical text: JSON with sorted keys, which escapes every separator, so two
    /// different metadata never share it.
    pub fn canonical(&self) -> String {
        // A map of strings always serialises.
        serde_json::to_string(&self.0).expect("string metadata serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MetadataLimits = MetadataLimits {
        keys_max: 2,
        key_chars_max: 3,
        value_chars_max: 4,
    };

    fn metadata(pairs: &[(&str, &str)]) -> Metadata {
        Metadata(
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn bounds_are_checked_in_characters() {
        assert_eq!(metadata(&[("ké", "éééé")]).check(&LIMITS), Ok(()));
        assert!(matches!(
            metadata(&[("a", ""), ("b", ""), ("c", "")]).check(&LIMITS),
            Err(MetadataError::TooManyKeys { count: 3, max: 2 })
        ));
        assert!(matches!(
            metadata(&[("abcd", "")]).check(&LIMITS),
            Err(MetadataError::KeyLength { .. })
        ));
        assert!(matches!(
            metadata(&[("", "x")]).check(&LIMITS),
            Err(MetadataError::KeyLength { .. })
        ));
        assert!(matches!(
            metadata(&[("a", "éééééé")]).check(&LIMITS),
            Err(MetadataError::ValueLength { max: 4 })
        ));
        assert_eq!(
            metadata(&[("a", "x\0")]).check(&LIMITS),
            Err(MetadataError::Nul)
        );
    }

    #[test]
    fn the_canonical_text_sorts_keys_and_escapes_separators() {
        let written: Metadata = serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
        assert_eq!(written.canonical(), r#"{"a":"1","b":"2"}"#);
        assert_ne!(
            metadata(&[("a", "1\",\"b\":\"2")]).canonical(),
            metadata(&[("a", "1"), ("b", "2")]).canonical()
        );
    }
}
