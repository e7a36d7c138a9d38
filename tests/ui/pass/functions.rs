//! Valid activities and orchestrators: every accepted signature shape.

use duractor::prelude::*;

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
}

#[derive(Debug)]
struct MyError;
impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}
impl std::error::Error for MyError {}

type AppResult<T> = Result<T, MyError>;

#[activity]
async fn with_struct(_ctx: ActivityContext, order: Order) -> Result<u64, duractor::Error> {
    Ok(order.id + order.items.len() as u64)
}

#[activity(name = "custom-name")]
pub async fn renamed(ctx: ActivityContext, (a, b): (u32, u32)) -> duractor::Result<String> {
    Ok(format!("{} {}", ctx.instance_id(), a + b))
}

#[activity]
async fn own_error(_ctx: ActivityContext, _: ()) -> AppResult<()> {
    Err(MyError)
}

#[activity]
async fn string_error(_ctx: ActivityContext, mut n: i64) -> Result<i64, String> {
    n += 1;
    Ok(n)
}

#[orchestrator(version = "2")]
pub(crate) async fn flow(ctx: OrchestrationContext, order: Order) -> Result<String, duractor::Error> {
    let total = ctx.call_activity(WithStruct, order).await?;
    let text = ctx.call_activity(Renamed, (1, 2)).await?;
    let _ = ctx.call_activity(OwnError, ()).await;
    let _ = ctx.call_activity(StringError, 1).await;
    Ok(format!("{total} {text}"))
}

fn main() {
    assert_eq!(<Renamed as Activity>::NAME, "custom-name");
    assert_eq!(<Flow as Orchestrator>::VERSION, "2");
    assert_eq!(<WithStruct as Activity>::NAME, "with_struct");
    let _: fn(ActivityContext, Order) -> _ = with_struct;
}
