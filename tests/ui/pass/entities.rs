//! Valid entities: every accepted operation shape, used through every proxy mode.

use duractor::prelude::*;

#[entity(name = "Cart")]
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ShoppingCart {
    items: Vec<String>,
}

#[derive(Debug)]
struct CartError;
impl std::fmt::Display for CartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cart error")
    }
}

#[entity]
impl ShoppingCart {
    fn add(&mut self, item: String) {
        self.items.push(item);
    }

    fn count(&self) -> usize {
        self.items.len()
    }

    fn clear(&mut self, ctx: &mut EntityContext) {
        self.items.clear();
        ctx.delete_entity();
    }

    fn checkout(&mut self, ctx: &mut EntityContext, coupon: Option<String>) -> Result<Vec<String>, CartError> {
        if coupon.as_deref() == Some("bad") {
            return Err(CartError);
        }
        ctx.signal_entity::<ShoppingCart>("archive").add(ctx.key().to_owned());
        Ok(std::mem::take(&mut self.items))
    }

    fn pair(&mut self, (a, b): (String, String)) -> duractor::Result<()> {
        self.items.push(a);
        self.items.push(b);
        Ok(())
    }
}

impl ShoppingCart {
    /// Not an operation: this impl block has no `#[entity]`.
    #[allow(dead_code)]
    fn helper(&self) -> bool {
        self.items.is_empty()
    }
}

#[orchestrator]
async fn shop(ctx: OrchestrationContext, key: String) -> Result<usize, duractor::Error> {
    ctx.signal_entity::<ShoppingCart>(key.clone()).add("apple".to_string());
    let cart = ctx.call_entity::<ShoppingCart>(key.clone());
    cart.pair(("pear".to_string(), "fig".to_string())).await?;
    let section = ctx.lock([EntityId::of::<ShoppingCart>(key)]).await?;
    let count = cart.count().await?;
    let _items: Vec<String> = cart.checkout(None).await?;
    section.release();
    Ok(count)
}

async fn client_side(client: Client) -> Result<Option<ShoppingCart>, duractor::Error> {
    client.signal_entity::<ShoppingCart>("k").add("bread".to_string()).await?;
    client.signal_entity::<ShoppingCart>("k").clear().await?;
    client.entity_state::<ShoppingCart>("k").await
}

fn main() {
    assert_eq!(<ShoppingCart as Entity>::NAME, "Cart");
    let names: Vec<&str> = <ShoppingCart as Entity>::__operations().iter().map(|o| o.name).collect();
    assert_eq!(names, ["add", "count", "clear", "checkout", "pair"]);
    let _ = client_side;
    let _ = Shop;
}
