//! Async HTTP API: a long-running operation behind an HTTP endpoint. Starting it answers at
//! once with `202 Accepted` and a status URL; the client polls that URL (202 while it runs,
//! with progress in `customStatus`) until it answers `200` with the result.
//!
//! ```text
//! cargo run --example async_http_api -- serve
//! curl -si -X POST localhost:7071/orchestrators/export_report -d '{"customer": "acme", "parts": 5}'
//! curl -s localhost:7071/instances/<id>          # 202 + progress, then 200 + the report
//! ```

use std::time::Duration;

use duractor::prelude::*;

/// What to export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportRequest {
    /// Whose data.
    pub customer: String,
    /// How many parts the export has (1 to 1,000).
    pub parts: u32,
    /// How long each part takes, in milliseconds (a stand-in for real work).
    #[serde(default = "default_part_ms")]
    pub part_ms: u64,
}

fn default_part_ms() -> u64 {
    500
}

/// One part to export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartRequest {
    /// Whose data.
    pub customer: String,
    /// Which part.
    pub index: u32,
    /// How long it takes, in milliseconds.
    pub work_ms: u64,
}

/// An exported part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    /// Rows in the part.
    pub rows: u64,
    /// A checksum of the part.
    pub checksum: u64,
}

/// Progress, shown as the instance's custom status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// Parts exported so far.
    pub parts_done: u32,
    /// All parts.
    pub parts: u32,
}

/// The finished export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Whose data.
    pub customer: String,
    /// Parts exported.
    pub parts: u32,
    /// Rows exported.
    pub rows: u64,
    /// A checksum over all parts.
    pub checksum: u64,
}

/// Exports one part (slowly).
#[activity]
async fn export_part(_ctx: ActivityContext, part: PartRequest) -> Result<Part, duractor::Error> {
    tokio::time::sleep(Duration::from_millis(part.work_ms.min(60_000))).await;
    let checksum = part
        .customer
        .bytes()
        .fold(u64::from(part.index) + 1, |sum, byte| {
            sum.wrapping_mul(1_099_511_628_211)
                .wrapping_add(u64::from(byte))
        });
    Ok(Part {
        rows: 100 + u64::from(part.index) * 7,
        checksum,
    })
}

/// Exports every part in turn, reporting progress as custom status.
#[orchestrator]
async fn export_report(
    ctx: OrchestrationContext,
    request: ExportRequest,
) -> Result<Report, duractor::Error> {
    if !(1..=1000).contains(&request.parts) {
        return Err(duractor::Error::non_retriable(format!(
            "parts must be between 1 and 1000, not {}",
            request.parts
        )));
    }
    let mut rows = 0;
    let mut checksum = 0u64;
    for index in 0..request.parts {
        ctx.set_custom_status(&Progress {
            parts_done: index,
            parts: request.parts,
        });
        let part = ctx
            .call_activity(
                ExportPart,
                PartRequest {
                    customer: request.customer.clone(),
                    index,
                    work_ms: request.part_ms,
                },
            )
            .await?;
        rows += part.rows;
        checksum = checksum.wrapping_mul(31).wrapping_add(part.checksum);
    }
    ctx.set_custom_status(&Progress {
        parts_done: request.parts,
        parts: request.parts,
    });
    Ok(Report {
        customer: request.customer,
        parts: request.parts,
        rows,
        checksum,
    })
}

#[duractor::main]
async fn main() {}
