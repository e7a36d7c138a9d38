//! Activity mocks: every activity of a [`TestRuntime`](super::TestRuntime) runs through a
//! router that calls the test's closure when one is set for its name, and the real function
//! otherwise. Mocks can be set, replaced and removed while the runtime runs.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use crate::activity::{ActivityContext, ActivityEntry};
use crate::error::{Error, Failure};
use crate::handles::{Activity, LocalBoxFuture};
use crate::panics::lock;
use crate::payload::Payload;
use crate::registry::Registry;

/// A mock's body, type-erased: the input as JSON in, the output as JSON out.
type MockFn = dyn Fn(&Payload) -> Result<Payload, Failure> + Send + Sync;

/// What the router knows: the real entries, the mocks, and every mocked call's input.
#[derive(Default)]
pub(crate) struct Router {
    real: HashMap<&'static str, ActivityEntry>,
    mocks: Mutex<HashMap<&'static str, Arc<MockFn>>>,
    calls: Mutex<HashMap<&'static str, Vec<Payload>>>,
}

impl Router {
    /// A router over `registry`'s activities, and the registry whose activities all run
    /// through it.
    pub(crate) fn wrap(registry: &Registry) -> (Router, Registry) {
        let mut router = Router::default();
        let mut routed = registry.clone();
        for entry in registry.activities() {
            router.real.insert(entry.name, *entry);
            routed.add_activity(ActivityEntry {
                invoke: route,
                ..*entry
            });
        }
        (router, routed)
    }

    /// Sets (or replaces) the mock of activity `A`.
    pub(crate) fn set<A: Activity>(
        &self,
        body: impl Fn(A::Input) -> Result<A::Output, Error> + Send + Sync + 'static,
    ) {
        let erased = move |input: &Payload| -> Result<Payload, Failure> {
            let input: A::Input = input
                .decode_as(format_args!("input for the mock of activity `{}`", A::NAME))
                .map_err(|e| e.to_failure())?;
            let output = body(input).map_err(|e| e.to_failure())?;
            Payload::encode(&output).map_err(|e| {
                Error::invalid_payload(format!("output of the mock of `{}`", A::NAME), e)
                    .to_failure()
            })
        };
        lock(&self.mocks).insert(A::NAME, Arc::new(erased));
        lock(&self.calls).entry(A::NAME).or_default();
    }

    /// Removes the mock of `name`: the real function runs again.
    pub(crate) fn unset(&self, name: &str) {
        lock(&self.mocks).remove(name);
    }

    /// The inputs of the mocked calls of `name` so far, in the order they ran.
    pub(crate) fn calls(&self, name: &str) -> Vec<Payload> {
        lock(&self.calls).get(name).cloned().unwrap_or_default()
    }

    fn run(
        &self,
        ctx: ActivityContext,
        input: Payload,
    ) -> LocalBoxFuture<'static, Result<Payload, Failure>> {
        let name = ctx.activity_name().to_owned();
        let mock = lock(&self.mocks).get(name.as_str()).cloned();
        if let Some(mock) = mock {
            if let Some(calls) = lock(&self.calls).get_mut(name.as_str()) {
                calls.push(input.clone());
            }
            let result = mock(&input);
            return Box::pin(async move { result });
        }
        match self.real.get(name.as_str()) {
            Some(entry) => (entry.invoke)(ctx, input),
            None => Box::pin(async move {
                Err(Error::msg(format!("the test runtime has no activity `{name}`")).to_failure())
            }),
        }
    }
}

/// The `invoke` of every routed activity: finds the router in the runtime's shared state.
fn route(
    ctx: ActivityContext,
    input: Payload,
) -> LocalBoxFuture<'static, Result<Payload, Failure>> {
    match ctx.shared::<Arc<Router>>() {
        Some(router) => router.run(ctx, input),
        None => Box::pin(async {
            Err(
                Error::msg("an activity routed for the test kit ran outside a TestRuntime")
                    .to_failure(),
            )
        }),
    }
}

/// The mock of one activity, returned by
/// [`TestRuntime::mock_activity`](super::TestRuntime::mock_activity): what it was called
/// with. Dropping it leaves the mock in place; [`remove`](Self::remove) takes it away.
pub struct Mock<A: Activity> {
    router: Arc<Router>,
    _activity: PhantomData<fn() -> A>,
}

impl<A: Activity> std::fmt::Debug for Mock<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mock")
            .field("activity", &A::NAME)
            .field("calls", &self.call_count())
            .finish()
    }
}

impl<A: Activity> Mock<A> {
    pub(crate) fn new(router: Arc<Router>) -> Self {
        Mock {
            router,
            _activity: PhantomData,
        }
    }

    /// How many times the mock ran (every attempt counts: a retried call ran more than once).
    pub fn call_count(&self) -> usize {
        self.router.calls(A::NAME).len()
    }

    /// The inputs it ran with, in order.
    pub fn calls(&self) -> Vec<A::Input> {
        self.router
            .calls(A::NAME)
            .iter()
            .map(|input| {
                input
                    .decode_as(format_args!("a recorded input of `{}`", A::NAME))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// Removes the mock: the real activity runs again from the next call on.
    pub fn remove(self) {
        self.router.unset(A::NAME);
    }
}

/// A mock body that fails its first `failures` calls with `message` and then runs `then`:
/// for testing retry policies.
///
/// ```
/// use duractor::testing::failing_first;
///
/// let charge = failing_first(2, "card network down", |cents: u64| Ok(format!("receipt {cents}")));
/// assert!(charge(5).is_err());
/// assert!(charge(5).is_err());
/// assert_eq!(charge(5).unwrap(), "receipt 5");
/// ```
pub fn failing_first<I, O>(
    failures: u32,
    message: impl Into<String>,
    then: impl Fn(I) -> Result<O, Error> + Send + Sync + 'static,
) -> impl Fn(I) -> Result<O, Error> + Send + Sync + 'static {
    let message = message.into();
    let seen = std::sync::atomic::AtomicU32::new(0);
    move |input| {
        let call = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call < failures {
            Err(Error::msg(format!(
                "{message} (mocked failure {} of {failures})",
                call + 1
            )))
        } else {
            then(input)
        }
    }
}
