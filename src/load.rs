//! Loading a world from a file for the commands that work on one: a snapshot, an event stream as
//! JSON Lines (the import format), or the events of a scenario file (its queries are
//! skipped, and so are steps that expect an error).

use std::path::Path;

use serde_json::Value;

use crate::event::{EVENT_NAMES, Event};
use crate::model::{Error, Result};
use crate::mutate;
use crate::world::World;

/// Loads `path` by its extension: a snapshot (`.snap`), `.jsonl` or `.yaml`/`.yml`.
pub fn load_world(path: &Path) -> Result<World> {
    if path.extension().is_some_and(|e| e == "snap") {
        return crate::persist::snapshot::load(path, &mut |_| {})
            .map(|(w, _)| w)
            .map_err(|e| Error::invalid(format!("cannot load snapshot `{}`: {e}", path.display())));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read `{}`: {e}", path.display())))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let mut w = World::new();
    match ext {
        "jsonl" => {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(line)
                    .map_err(|e| Error::invalid(format!("line {}: not JSON: {e}", i + 1)))?;
                let ev = Event::from_json(v).map_err(|e| line_error(i + 1, e))?;
                mutate::apply(&mut w, &ev).map_err(|e| line_error(i + 1, e))?;
            }
        }
        "yaml" | "yml" => {
            let doc: Value = serde_yaml::from_str(&text)
                .map_err(|e| Error::invalid(format!("`{}` is not YAML: {e}", path.display())))?;
            let steps = doc
                .get("steps")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, step) in steps.into_iter().enumerate() {
                let Value::Object(m) = step else { continue };
                let Some((k, body)) = m.into_iter().next() else {
                    continue;
                };
                if !EVENT_NAMES.contains(&k.as_str()) || body.get("expect_error").is_some() {
                    continue;
                }
                let mut one = serde_json::Map::new();
                one.insert(k, body);
                let ev = Event::from_json(Value::Object(one)).map_err(|e| line_error(i + 1, e))?;
                mutate::apply(&mut w, &ev).map_err(|e| line_error(i + 1, e))?;
            }
        }
        other => {
            return Err(Error::invalid(format!(
                "`{}`: unknown kind of world file `.{other}` (expected .snap, .jsonl or .yaml)",
                path.display()
            )));
        }
    }
    Ok(w)
}

fn line_error(n: usize, e: Error) -> Error {
    Error {
        message: format!("step/line {n}: {}", e.message),
        ..e
    }
}
