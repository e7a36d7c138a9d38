//! [`Payload`]: a serialized value (JSON text) — an input, an output, event data, an
//! activity result — kept as raw JSON and decoded only by the code that reads it.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::error::Error;

/// A serialized value (JSON text): an input, output, event data or activity result.
///
/// Payloads are stored in history as raw JSON and decoded only by the code that reads them,
/// so a large payload does not slow the replay of unrelated steps.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<str>);

impl Payload {
    /// Serializes a value.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(|s| Payload(s.into()))
    }

    /// Wraps JSON text after checking that it is valid JSON.
    pub fn from_json(json: impl Into<String>) -> Result<Self, serde_json::Error> {
        let json = json.into();
        serde_json::from_str::<&RawValue>(&json)?;
        Ok(Payload(json.into()))
    }

    /// The JSON `null` payload (the encoding of `()`).
    pub fn null() -> Self {
        Payload("null".into())
    }

    /// Deserializes the payload.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Deserializes the payload, naming it in the error: `what` reads like "output of activity `x`".
    pub fn decode_as<T: DeserializeOwned>(&self, what: impl fmt::Display) -> Result<T, Error> {
        self.decode()
            .map_err(|e| Error::invalid_payload(format!("{what} (JSON {})", self.preview()), e))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Size of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` if the JSON text is empty (never for a valid payload).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How deeply arrays and objects nest in the JSON text (`0` for a scalar, `1` for
    /// `[1, 2]`, `2` for `{"a": []}`).
    pub fn nesting_depth(&self) -> usize {
        let (mut depth, mut deepest) = (0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for byte in self.0.bytes() {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }

    /// The first characters of the JSON text, for error messages.
    pub fn preview(&self) -> String {
        const MAX: usize = 80;
        if self.0.len() <= MAX {
            return self.0.to_string();
        }
        let mut end = MAX;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &self.0[..end])
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({})", self.preview())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Payload(raw.get().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_rejects_invalid_json() {
        assert!(Payload::from_json("{nope").is_err());
        assert_eq!(
            Payload::from_json(" 42 ").unwrap().decode::<u32>().unwrap(),
            42
        );
    }

    #[test]
    fn nesting_depth_counts_arrays_and_objects_outside_strings() {
        let depth = |json: &str| {
            Payload::from_json(json)
                .map(|p| p.nesting_depth())
                .unwrap_or(99)
        };
        assert_eq!(depth("1"), 0);
        assert_eq!(depth("[1, [2]]"), 2);
        assert_eq!(depth(r#"{"a": "[[[", "b": {"c": []}}"#), 3);
        assert_eq!(depth(r#""\"[""#), 0);
    }
}
