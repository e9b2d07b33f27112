//! Command-line front ends that are more than a call into the library: `query` (ask the
//! engine one question), `generate` (flags and progress bars of `delegraph generate`),
//! the demo that runs when no command is given, shell completions, and the human
//! rendering of answers they share.

pub mod demo;
pub mod generate;
pub mod query;
pub mod render;

use std::path::Path;
use std::time::{Duration, Instant};

use delegraph::world::World;

/// The bundled sample world, relative to the repository root.
pub const SAMPLE_PATH: &str = "graph-snapshots/sample.snap";

/// The same snapshot, compiled in, for when the binary runs away from the repository.
static SAMPLE: &[u8] = include_bytes!("../../graph-snapshots/sample.snap");

/// Loads the bundled sample: the file when run from the repository root (a fresh clone),
/// else the copy compiled into the binary. Returns the world, where it came from, and
/// the load time.
pub fn load_sample() -> anyhow::Result<(World, String, Duration)> {
    let t = Instant::now();
    if Path::new(SAMPLE_PATH).is_file() {
        let (w, _) = delegraph::persist::snapshot::load(Path::new(SAMPLE_PATH), &mut |_| {})?;
        return Ok((w, SAMPLE_PATH.to_string(), t.elapsed()));
    }
    let w = delegraph::persist::snapshot::decode(SAMPLE)?;
    Ok((w, format!("{SAMPLE_PATH} (built in)"), t.elapsed()))
}

/// A progress bar on stderr, hidden when stderr is not a terminal (piped, in CI).
pub fn progress_bar(message: &'static str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

/// Loads a world file (.snap, .jsonl, .yaml) with a progress bar on a terminal.
pub fn load_world(path: &Path) -> delegraph::model::Result<World> {
    let bar = progress_bar("loading");
    let w = delegraph::load::load_world_with(path, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    w
}
