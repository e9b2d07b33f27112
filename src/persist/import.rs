//! The JSON Lines import: one event per line, `{"register_role": {...}}`, applied in
//! order. Blank lines and lines starting with `#` are skipped.

use std::io::BufRead;

use crate::event::Event;
use crate::model::{self, Error};
use crate::mutate;
use crate::persist::error::ImportError;
use crate::world::World;

/// Parses one line: an event, or None for a blank or comment line. Never panics.
pub fn parse_line(line: &str) -> Result<Option<Event>, model::Error> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_str(t).map_err(|e| Error::invalid(format!("not a JSON object: {e}")))?;
    Event::from_json(v).map(Some)
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    pub lines: u64,
    pub events: u64,
    pub bytes: u64,
}

/// Applies every event of a JSON Lines stream to `world`, in order, each through
/// [`mutate::apply`]. The first refused line stops the import with its line number;
/// events before it stay applied. `progress` gets the bytes read so far.
pub fn import<R: BufRead>(
    world: &mut World,
    mut input: R,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportStats, ImportError> {
    let mut stats = ImportStats::default();
    let mut line = String::new();
    loop {
        line.clear();
        let n = input.read_line(&mut line).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                ImportError::Line {
                    line: stats.lines + 1,
                    error: Error::invalid("line is not valid UTF-8"),
                }
            } else {
                ImportError::Io(e)
            }
        })?;
        if n == 0 {
            break;
        }
        stats.lines += 1;
        stats.bytes += n as u64;
        let at = stats.lines;
        if let Some(ev) = parse_line(&line).map_err(|error| ImportError::Line { line: at, error })? {
            mutate::apply(world, &ev).map_err(|error| ImportError::Line { line: at, error })?;
            stats.events += 1;
        }
        if stats.lines.is_multiple_of(4096) {
            progress(stats.bytes);
        }
    }
    progress(stats.bytes);
    Ok(stats)
}
