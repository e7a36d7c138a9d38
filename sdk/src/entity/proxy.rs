//! Typed entity proxies: [`ProxyTarget`] (the entity and who sends) and the [`ProxyMode`]s
//! that decide what a proxy method returns. The modes are named here; each one's sending is
//! implemented with its sender — the client (`SignalFromClient`), the orchestration context
//! (`CallFromOrchestration`, `SignalFromOrchestration`) and the entity context
//! (`SignalFromEntity`) — so this module depends on none of them.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::id::EntityId;
use crate::payload::Payload;

pub(crate) mod sealed {
    /// Only duractor's own modes implement [`ProxyMode`](super::ProxyMode).
    pub trait Sealed {}
}

/// How a proxy sends operations: what its methods return. Sealed.
pub trait ProxyMode: sealed::Sealed + Sized {
    /// Who sends.
    #[doc(hidden)]
    type Sender: Clone;
    /// What an operation with output `T` returns in this mode.
    type Output<T: DeserializeOwned + 'static>;
    #[doc(hidden)]
    fn send<T: DeserializeOwned + 'static>(
        target: &ProxyTarget<Self>,
        operation: &'static str,
        input: Result<Payload, Error>,
    ) -> Self::Output<T>;
}

/// Where a proxy sends: the entity and the sender. Built by the context and client methods.
pub struct ProxyTarget<M: ProxyMode> {
    pub(crate) entity: EntityId,
    pub(crate) sender: M::Sender,
    pub(crate) at: Option<DateTime<Utc>>,
}

impl<M: ProxyMode> ProxyTarget<M> {
    /// Sends `operation` with `input`; called by generated proxy methods.
    #[doc(hidden)]
    pub fn __send<I: Serialize, T: DeserializeOwned + 'static>(
        &self,
        operation: &'static str,
        input: &I,
    ) -> M::Output<T> {
        let input = Payload::encode(input).map_err(|e| {
            Error::invalid_payload(
                format!(
                    "input of entity operation `{}.{operation}`",
                    self.entity.name
                ),
                e,
            )
        });
        M::send(self, operation, input)
    }

    /// The entity this proxy addresses.
    pub fn entity(&self) -> &EntityId {
        &self.entity
    }
}

/// Proxy mode: a durable two-way call from an orchestration; methods return a
/// `DurableFuture` of `Result<T, Error>`.
pub struct CallFromOrchestration;
/// Proxy mode: a one-way signal from an orchestration; methods return `()`.
pub struct SignalFromOrchestration;
/// Proxy mode: a one-way signal from an entity operation; methods return `()`.
pub struct SignalFromEntity;
/// Proxy mode: a one-way signal from a client; methods return a future of `Result<(), Error>`.
pub struct SignalFromClient;

impl sealed::Sealed for CallFromOrchestration {}
impl sealed::Sealed for SignalFromOrchestration {}
impl sealed::Sealed for SignalFromEntity {}
impl sealed::Sealed for SignalFromClient {}

/// The future a client signal returns ([`SignalFromClient`]'s output).
pub type ClientSignal =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send + 'static>>;

/// Marker so proxies can hold their mode without storing it.
#[doc(hidden)]
pub type ModeMarker<M> = PhantomData<fn() -> M>;
