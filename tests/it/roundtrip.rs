//! A generated world survives a snapshot: `generate --scale small`, save, verify by
//! loading, and every party's answers are the same before and after.

use delegraph::generate::{Params, Scale, generate_vec};
use delegraph::persist::snapshot;
use delegraph::query::{self, Query};
use delegraph::world::World;

#[test]
fn generated_small_world_answers_the_same_after_save_and_load() {
    let mut w = World::new();
    for ev in generate_vec(&Params::for_scale(Scale::Small)) {
        delegraph::mutate::apply(&mut w, &ev).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("delegraph-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.snap");
    snapshot::save(&w, &path, 0, &mut |_| {}).unwrap();
    let (loaded, _) = snapshot::load(&path, &mut |_| {}).unwrap();
    let ids: Vec<String> = w.graph.parties().map(|(_, p)| p.id.to_string()).collect();
    assert!(ids.len() > 1000);
    // Random-looking but fixed sample of subjects: every 7th party, and their parties.
    for x in ids.iter().step_by(7) {
        let q = Query::parse("authorized_parties", serde_json::json!({ "subject": x }))
            .unwrap()
            .unwrap();
        let a = query::evaluate(&w, &q).unwrap();
        let b = query::evaluate(&loaded, &q).unwrap();
        assert_eq!(a, b, "authorized parties of `{x}` differ after the round trip");
        for f in ids.iter().step_by(97) {
            let q = Query::parse("rights", serde_json::json!({ "subject": x, "party": f }))
                .unwrap()
                .unwrap();
            assert_eq!(
                query::evaluate(&w, &q).unwrap(),
                query::evaluate(&loaded, &q).unwrap()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
