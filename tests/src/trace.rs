//! What tests see of tracing: the fields of an event or a span, as text.

use std::collections::HashMap;

use tracing::field::{Field, Visit};

/// The fields of one event or span by name (`message` included), as text: `Debug` for most
/// values, the plain text of a `str`.
#[derive(Debug, Default)]
pub struct TraceFields(HashMap<String, String>);

impl TraceFields {
    /// The fields of `event`.
    pub fn of(event: &tracing::Event<'_>) -> Self {
        let mut fields = Self::default();
        event.record(&mut fields);
        fields
    }

    /// The fields of a new span.
    pub fn of_span(attrs: &tracing::span::Attributes<'_>) -> Self {
        let mut fields = Self::default();
        attrs.record(&mut fields);
        fields
    }

    /// The text of field `name` ("" when the event has no such field).
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

impl Visit for TraceFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}
