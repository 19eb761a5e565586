//! The sustained-load driver of `examples/load.rs`, bounded to a few seconds: 2 writers and
//! 2 readers on a 3-region store with unique-value contention; afterwards every
//! acknowledged write must be present after a reopen, every acknowledged claim found with
//! its owner, and `audit()` clean. Nothing here depends on speed: each thread does a
//! minimum number of operations however long they take.

#[path = "../examples/load.rs"]
#[allow(dead_code)]
mod load;

use std::time::Duration;

#[test]
fn load_for_a_few_seconds_then_verify_everything_acknowledged() {
    let cfg = load::Config {
        duration: Duration::from_secs(3),
        writers: 2,
        readers: 2,
        min_ops_per_thread: 50,
        ..load::Config::default()
    };
    let report = load::run(&cfg);
    report.print();
    assert!(
        report.passed(),
        "{} verification failures, first: {:?}",
        report.failures.len(),
        report.failures.first()
    );
    assert!(report.writes_committed > 0, "no write was acknowledged");
    assert!(report.reads >= 100, "{} reads", report.reads);
    assert_eq!(report.verified_values, cfg.unique_pool as usize);
}
