//! The entity commands: `signal`, `entity`, `entities`.

use std::process::ExitCode;

use super::args::{EntitiesArgs, EntityArgs, SignalArgs};
use super::output::{self, CliError, CliResult, print_json};
use crate::client::{Client, EntityQuery};
use crate::error::Error;
use crate::http::view::EntityView;
use crate::id::EntityId;
use crate::payload::Payload;

pub(super) async fn signal(args: SignalArgs, client: Client) -> CliResult {
    let input = Payload::from_json(args.input.as_str()).map_err(|e| {
        Error::invalid_payload(
            format!(
                "input of entity operation `{}.{}` (not valid JSON)",
                args.entity, args.operation
            ),
            e,
        )
    })?;
    let at = args
        .at
        .as_deref()
        .map(|at| {
            chrono::DateTime::parse_from_rfc3339(at)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| CliError::usage(format!("--at `{at}` is not an RFC 3339 time: {e}")))
        })
        .transpose()?;
    let id = EntityId::new(args.entity, args.key);
    client
        .signal_entity_raw(&id, &args.operation, input, at)
        .await?;
    match at {
        Some(at) => println!("signalled {id}.{} for {at}", args.operation),
        None => println!("signalled {id}.{}", args.operation),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn entity(args: EntityArgs, client: Client) -> CliResult {
    let id = EntityId::new(args.entity, args.key);
    let Some(status) = client.entity(&id).await? else {
        return Err(CliError::failure(format!(
            "entity {id} does not exist: nothing has signalled or called it"
        )));
    };
    if args.json {
        print_json(&EntityView::new(status))?;
    } else {
        match &status.state {
            Some(state) => println!("{}", pretty_json(state.as_str())),
            None => println!(
                "entity {id} has no state: no operation has changed it yet (signals wait for a \
                 worker: `serve`), or it was deleted"
            ),
        }
        if let Some(owner) = &status.lock_owner {
            eprintln!("locked by orchestration {owner}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn list(args: EntitiesArgs, client: Client) -> CliResult {
    let found = client
        .list_entities(&EntityQuery {
            name: args.name,
            key_prefix: args.prefix,
            include_empty: args.all,
            limit: Some(args.limit),
            after: None,
        })
        .await?;
    if args.json {
        let views: Vec<EntityView> = found.into_iter().map(EntityView::new).collect();
        print_json(&views)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "KEY".to_owned(),
        "LOCKED BY".to_owned(),
        "STATE".to_owned(),
    ]];
    rows.extend(found.iter().map(|e| {
        vec![
            e.id.name.clone(),
            e.id.key.clone(),
            e.lock_owner.clone().unwrap_or_default(),
            e.state
                .as_ref()
                .map_or_else(|| "(none)".to_owned(), |s| s.preview()),
        ]
    }));
    print!("{}", output::table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// JSON text indented for people (as it is, if it does not parse).
fn pretty_json(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| json.to_owned())
}
