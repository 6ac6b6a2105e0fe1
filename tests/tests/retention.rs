//! Retention end to end, with an injected clock: metadata is readable for
//! 60 days after it was received, invisible the moment its window ends even
//! before a sweep, and deleted from disk by the sweep.

use std::sync::Arc;

use glimpse_common::clock::{Clock, ManualClock, SystemClock, MILLIS_PER_DAY};
use glimpse_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_expires_after_sixty_days() {
    init_logging();
    let clock = ManualClock::new(SystemClock.now_millis());
    let device = issue_device("retentionorg");
    let tc = TestCollector::start_with_clock(Arc::new(clock.clone())).await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 3).await;
    agent.shutdown().await;
    let stored = tc.stored_records_of(&device.identity);
    assert!(stored >= 3);
    let segments = || tc.data_files().into_iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "seg")).count();
    assert!(segments() > 0);

    // The clock jumps by weeks here: confirm it, as an operator would.
    let sweep = |store| glimpse_store::retention::sweep_checked(store, glimpse_store::retention::ClockCheck::Accept);
    clock.advance(59 * MILLIS_PER_DAY);
    assert_eq!(tc.stored_records_of(&device.identity), stored, "still inside the 60-day window");
    assert!(matches!(
        glimpse_store::retention::sweep(tc.collector.store()),
        Err(glimpse_store::retention::RetentionError::ClockJump { .. })
    ));
    sweep(tc.collector.store()).unwrap();
    assert!(segments() > 0, "sweep must not delete data inside its window");

    clock.advance(2 * MILLIS_PER_DAY);
    assert_eq!(tc.stored_records_of(&device.identity), 0, "expired records are never served, even before a sweep");
    sweep(tc.collector.store()).unwrap();
    assert_eq!(segments(), 0, "sweep deletes expired segments");
}
