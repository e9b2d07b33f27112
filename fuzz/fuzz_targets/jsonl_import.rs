//! Any text given to the JSON Lines import parses and applies line by line, or stops
//! with a line number and an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

use delegraph::persist::import;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            let _ = import::parse_line(line);
        }
    }
    let mut world = delegraph::world::World::new();
    let _ = import::import(&mut world, data, &mut |_| {});
});
