//! Vectors, arrays and slices iterate in order.
use duractor::prelude::*;

#[activity]
async fn resize(_ctx: ActivityContext, image: String) -> Result<String, duractor::Error> {
    Ok(image)
}

#[orchestrator]
async fn thumbnails(ctx: OrchestrationContext, images: Vec<String>) -> Result<Vec<String>, duractor::Error> {
    let mut done = Vec::new();
    for (i, image) in images.iter().enumerate() {
        if i < 2 {
            done.push(ctx.call_activity(Resize, image.clone()).await?);
        }
    }
    for size in ["small", "large"] {
        done.push(size.to_owned());
    }
    let rest = ctx
        .join_all(images.into_iter().skip(2).map(|image| ctx.call_activity(Resize, image)))
        .await;
    for result in rest {
        done.push(result?);
    }
    Ok(done)
}

fn main() {}
