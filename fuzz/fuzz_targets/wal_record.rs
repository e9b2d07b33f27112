//! Any bytes given to the log record decoder (and to the group decoder of a version 2
//! segment body) give records and a tail, never a panic; every record it accepts
//! encodes back to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;

use delegraph::persist::wal;

fuzz_target!(|data: &[u8]| {
    let _ = wal::decode_record(data);
    let (grouped, _tail, _damage) = wal::decode_groups(data, 1);
    let (batches, _tail) = wal::decode_records(data);
    for b in batches.into_iter().chain(grouped) {
        if let Ok(rec) = wal::encode_record_with(b.seq, &b.events, b.digest) {
            let again = wal::decode_record(&rec).map(|(x, _)| x);
            assert_eq!(again.ok().as_ref(), Some(&b));
        }
    }
});
