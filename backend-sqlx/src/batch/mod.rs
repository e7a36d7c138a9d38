//! Group commit, shared by the backends: store calls become [`Op`]s, a writer task takes
//! every op waiting when it is free and commits them in one transaction, and the [`Plan`]
//! turns a batch into a few merged writes over JSON arrays.
//!
//! * [`ops`]: the [`Op`]s, each with the typed [`Reply`](ops::Reply) its caller awaits, and [`Writes`],
//!   the sending side the stores forward their writes to.
//! * [`plan`]: the [`State`] of the rows a batch touches and the [`Plan`] that validates each
//!   op against it, takes queue ids from the block reserved for the batch, and collects the
//!   rows to write. Pure: no I/O, unit-tested without a database.
//! * [`guarded`]: batches of plain turns planned on assumptions (the guards) that the
//!   backend's one statement checks as it writes, instead of a locking read before it.
//! * [`writer`]: the [`BatchExecutor`] each backend implements (how to read the state, write
//!   a plan, run the ops that have statements of their own), the writer loop, and the commit
//!   fences that settle a commit whose answer was lost.
//!
//! **Outcomes travel with their ops.** Each [`Op`] variant holds a [`Reply<T>`](ops::Reply) of the type
//! its caller awaits. An attempt at a batch stores each op's outcome in that reply, through
//! the op's own variant ([`Plan::apply`], or the executor for claims, renewals, purges and
//! the other ops that run after the merged writes); once the batch has committed, each op
//! sends what its reply holds, and if the batch failed, every op sends the error. No op can
//! be answered with another op's kind of result. An attempt that does not commit is followed
//! by one that prepares every outcome anew, so only the committed attempt's are sent (after
//! a lost `COMMIT` answer, the outcomes of the attempt that is settled as committed).

pub(crate) mod guarded;
pub(crate) mod ops;
pub(crate) mod plan;
mod writer;

pub(crate) use ops::{Op, Writes};
pub(crate) use plan::{Effects, InstanceState, Plan, State, Update, ids_needed, touched};
pub(crate) use writer::{AttemptError, Attempts, BatchExecutor, run_writer};
