//! Loading a world from a file for the commands that work on one: a snapshot, an event stream as
//! JSON Lines (the import format), or the events of a scenario file (its queries are
//! skipped, and so are steps that expect an error).

use std::path::Path;

use serde_json::Value;

use crate::event::{EVENT_NAMES, Event};
use crate::model::{Error, Result};
use crate::mutate;
use crate::persist::error::ImportError;
use crate::world::World;

/// Loads `path` by its extension: a snapshot (`.snap`), `.jsonl` or `.yaml`/`.yml`.
pub fn load_world(path: &Path) -> Result<World> {
    load_world_with(path, &mut |_, _| {})
}

/// [`load_world`] reporting progress as (done, total): records of a snapshot, bytes of
/// a JSON Lines file.
pub fn load_world_with(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<World> {
    if path.extension().is_some_and(|e| e == "snap") {
        let total = crate::persist::snapshot::read_header(path)
            .map(|(h, _)| h.counts.total())
            .unwrap_or(0);
        return crate::persist::snapshot::load(path, &mut |n| progress(n, total))
            .map(|(w, _)| w)
            .map_err(|e| Error::invalid(format!("cannot load snapshot `{}`: {e}", path.display())));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let mut w = World::new();
    if ext == "jsonl" {
        // The reader of `delegraph import`: the same lines, comments and errors.
        let f = std::fs::File::open(path)
            .map_err(|e| Error::invalid(format!("cannot read `{}`: {e}", path.display())))?;
        let total = f.metadata().map(|m| m.len()).unwrap_or(0);
        crate::persist::import::import(&mut w, std::io::BufReader::new(f), &mut |b| progress(b, total))
            .map_err(|e| match e {
                ImportError::Line { line, error } => Error {
                    message: format!("line {line}: {}", error.message),
                    ..error
                },
                ImportError::Io(e) => Error::invalid(format!("cannot read `{}`: {e}", path.display())),
            })?;
        return Ok(w);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read `{}`: {e}", path.display())))?;
    match ext {
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
