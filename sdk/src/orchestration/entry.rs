//! [`OrchestratorEntry`]: an orchestrator, type-erased to run on JSON, as the registry keeps
//! it and the executor runs it.

use super::context::{OrchestrationContext, OrchestratorBody};
use crate::error::{Error, Failure};
use crate::handles::{LocalBoxFuture, Orchestrator, decode_input, encode_output};
use crate::payload::Payload;

type ErasedOrchestratorFn =
    fn(OrchestrationContext, Payload) -> LocalBoxFuture<'static, Result<Payload, Failure>>;

/// A registered orchestrator, type-erased.
#[derive(Clone, Copy)]
pub struct OrchestratorEntry {
    /// Registered name.
    pub name: &'static str,
    /// The version stamped on new instances.
    pub version: &'static str,
    /// The Rust input type's name.
    pub input_type: fn() -> &'static str,
    /// The Rust output type's name.
    pub output_type: fn() -> &'static str,
    /// Its declared flow-control limits.
    pub flow: fn() -> Option<crate::flow::FlowControl>,
    pub(crate) invoke: ErasedOrchestratorFn,
    pub(crate) check_input: fn(&Payload) -> Result<(), Error>,
}

impl OrchestratorEntry {
    /// The entry for a typed handle.
    pub const fn of<O: OrchestratorBody>() -> Self {
        OrchestratorEntry {
            name: O::NAME,
            version: O::VERSION,
            input_type: std::any::type_name::<O::Input>,
            output_type: std::any::type_name::<O::Output>,
            flow: O::flow_control,
            invoke: invoke_orchestrator::<O>,
            check_input: check_orchestrator_input::<O>,
        }
    }

    /// Checks that `input` deserializes into the orchestrator's input type.
    pub fn check_input(&self, input: &Payload) -> Result<(), Error> {
        (self.check_input)(input)
    }
}

fn invoke_orchestrator<O: OrchestratorBody>(
    ctx: OrchestrationContext,
    input: Payload,
) -> LocalBoxFuture<'static, Result<Payload, Failure>> {
    Box::pin(async move {
        let input: O::Input =
            decode_input(&input, format_args!("input for orchestrator `{}`", O::NAME))?;
        let output = O::__invoke(ctx, input).await?;
        encode_output(
            &output,
            format_args!("output of orchestrator `{}`", O::NAME),
        )
    })
}

fn check_orchestrator_input<O: Orchestrator>(input: &Payload) -> Result<(), Error> {
    input
        .decode_as::<O::Input>(format_args!("input for orchestrator `{}`", O::NAME))
        .map(drop)
}

impl std::fmt::Debug for OrchestratorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorEntry")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("input_type", &(self.input_type)())
            .field("output_type", &(self.output_type)())
            .finish_non_exhaustive()
    }
}
