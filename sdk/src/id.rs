//! Ids and the rules for the names users choose: [`EntityId`] (an entity's address), and the
//! checks of instance ids, entity names and keys, and event names.
//!
//! Every way an id enters duractor (the client, the HTTP API, the command line, a
//! sub-orchestration id, [`EntityContext::start_orchestration`](crate::EntityContext::start_orchestration))
//! checks it here, so an id that is accepted anywhere works everywhere: in the store, on the
//! command line, and in the URLs of the HTTP API (an id round-trips through the check-status
//! links the API returns).
//!
//! | what | rule |
//! |---|---|
//! | instance id | 1–256 bytes of UTF-8; no control characters; none of `/ \ ? # %`; not `.` or `..`; must not start with `@` (the prefix of entity ids, `@name@key`) |
//! | entity name | 1–256 bytes; no control characters; no `@` |
//! | entity key | 1–256 bytes; no control characters (any other character, `/` and `@` included) |
//! | event name | 1–256 bytes; no control characters |
//!
//! The characters an instance id may not contain are those Durable Functions refuses (`/ \ ? #`)
//! and `%`: each changes the meaning of a URL typed by hand (`curl localhost:7071/instances/ID`),
//! and `.` and `..` are path segments every HTTP client rewrites. Everything else (spaces, `+`,
//! `:`, `@` after the first character, any Unicode) is allowed and percent-encoded in the links
//! the API returns.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The address of an entity: its name (the type's registered name) and a key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId {
    /// The entity's registered name, e.g. `Counter`.
    pub name: String,
    /// The key that tells apart entities of one name, e.g. a user id.
    pub key: String,
}

impl EntityId {
    /// An entity id from a name and a key.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        EntityId {
            name: name.into(),
            key: key.into(),
        }
    }

    /// The instance id the store and runtime use for this entity: `@name@key`.
    pub fn instance_id(&self) -> String {
        format!("@{}@{}", self.name, self.key)
    }

    /// The entity an instance id of the form `@name@key` stands for.
    pub fn from_instance_id(instance_id: &str) -> Option<EntityId> {
        let (name, key) = instance_id.strip_prefix('@')?.split_once('@')?;
        Some(EntityId::new(name, key))
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.key)
    }
}

/// An id, key or name that breaks the rules above; it converts into
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument), and its message says which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidId {}

/// The longest id, key or name, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Checks an instance id chosen by a user (see the [module docs](self) for the rule).
///
/// ```
/// use duractor::id::validate_instance_id;
/// assert!(validate_instance_id("order-42").is_ok());
/// assert!(validate_instance_id("order 42+gift:1").is_ok());
/// assert!(validate_instance_id("@Counter@visits").is_err()); // an entity's id
/// assert!(validate_instance_id("a/b").is_err());
/// ```
pub fn validate_instance_id(id: &str) -> Result<(), InvalidId> {
    check_text("an instance id", id)?;
    if id.starts_with('@') {
        return Err(InvalidId(format!(
            "instance id `{id}` starts with `@`, which is reserved for entity ids (`@name@key`); \
             choose an id that does not start with `@`"
        )));
    }
    if id == "." || id == ".." {
        return Err(InvalidId(format!(
            "`{id}` cannot be an instance id: HTTP clients rewrite it out of URLs"
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '?' | '#' | '%'))
    {
        return Err(InvalidId(format!(
            "instance id `{id}` contains `{c}`; instance ids must not contain any of / \\ ? # % \
             (they change the meaning of the instance's URLs)"
        )));
    }
    Ok(())
}

/// Checks an entity's name and key (see the [module docs](self) for the rule).
pub fn validate_entity_id(name: &str, key: &str) -> Result<(), InvalidId> {
    check_text("an entity name", name)?;
    if name.contains('@') {
        return Err(InvalidId(format!(
            "`{name}` is not a valid entity name: it must not contain `@`"
        )));
    }
    check_text("an entity key", key)
}

/// Checks the name of an external event (see the [module docs](self) for the rule).
pub fn validate_event_name(name: &str) -> Result<(), InvalidId> {
    check_text("an event name", name)
}

/// Whether `id` has the form of an entity's instance id (`@name@key`): such ids never name an
/// orchestration instance.
pub(crate) fn is_entity_instance_id(id: &str) -> bool {
    id.starts_with('@')
}

/// The rule every id, key and name shares: not empty, not too long, no control characters.
fn check_text(what: &str, text: &str) -> Result<(), InvalidId> {
    if text.is_empty() {
        return Err(InvalidId(format!("{what} must not be empty")));
    }
    if text.len() > MAX_ID_BYTES {
        return Err(InvalidId(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_BYTES}",
            text.len()
        )));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(InvalidId(format!(
            "{what} must not contain control characters (found U+{:04X} in {text:?})",
            u32::from(c)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_that_work_in_urls_are_accepted() {
        for id in [
            "a", "order-42", "order 42", "a+b", "x:1", "é", "a@b", "a.b", "...", "~",
        ] {
            assert!(validate_instance_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn instance_ids_that_break_urls_or_name_entities_are_refused() {
        for id in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a?b",
            "a#b",
            "100%",
            "@x",
            "@Counter@k",
        ] {
            assert!(validate_instance_id(id).is_err(), "{id:?}");
        }
        assert!(validate_instance_id("a\0b").is_err());
        assert!(validate_instance_id(&"x".repeat(257)).is_err());
        assert!(validate_instance_id(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let err = validate_instance_id("a/b").unwrap_err().to_string();
        assert!(err.contains("contains `/`"), "{err}");
        let err = validate_event_name("go\0").unwrap_err().to_string();
        assert!(err.contains("U+0000"), "{err}");
    }

    #[test]
    fn entity_keys_allow_slashes_but_names_refuse_at() {
        assert!(validate_entity_id("Counter", "a/b@c").is_ok());
        assert!(validate_entity_id("Coun@ter", "k").is_err());
        assert!(validate_entity_id("Counter", "").is_err());
        assert!(validate_entity_id("Counter", "k\n").is_err());
    }
}
