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

/// Longer (and shorter) retention as the organisation's own choice, within
/// what the operator offers, through the HTTPS API: the choice is bounded,
/// audited, decides what reads serve and what sweeps delete, and only the
/// organisation's admins and operators may make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_chooses_its_retention_within_the_offer() {
    use glimpse_admin_client::admin_request;
    use glimpse_common::identity::{AdminRole, OrgId};
    use glimpse_common::wire::admin::{AdminAction, AdminReply};

    init_logging();
    let clock = ManualClock::new(SystemClock.now_millis());
    let (keeper, other) = (issue_device("retainlong"), issue_device("retainplain"));
    let tc =
        TestCollector::start_with_tables_at(None, "[retention.offer]\nmetadata_days = 90\n", Arc::new(clock.clone()))
            .await;
    let long = OrgId::new("retainlong").unwrap();
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("retainlong"));
    let outsider = issue_admin(&tc, AdminRole::OrgAdmin, Some("retainplain"));
    let support = issue_admin(&tc, AdminRole::Support, Some("retainlong"));
    let set = |metadata_days: Option<u32>, capture_days: Option<u32>| AdminAction::SetRetention {
        org: long.clone(),
        metadata_days,
        capture_days,
    };

    // Beyond the offer, beyond 7 days of captures, by another
    // organisation's admin or by support: refused.
    for (who, action) in [
        (&admin, set(Some(91), None)),
        (&admin, set(None, Some(8))),
        (&admin, set(Some(0), None)),
        (&outsider, set(Some(80), None)),
        (&support, set(Some(80), None)),
    ] {
        let reply = admin_request(who, action.clone()).await;
        assert!(reply.is_err() || matches!(reply, Ok(AdminReply::Refused(_))), "{action:?} was allowed: {reply:?}");
    }
    let reply = admin_request(&admin, set(Some(80), Some(3))).await.expect("choose");
    assert_eq!(reply, AdminReply::RetentionSet { metadata_days: 80, capture_days: 3, changed: true });
    let status = api_client(&admin).await.get::<glimpse_api::OrgStatus>("/api/v1/orgs/retainlong").await.unwrap();
    assert_eq!(status.retention_days["metadata"], 80);
    assert_eq!((status.retention_max_days["metadata"], status.retention_max_days["capture"]), (90, 7));

    for device in [&keeper, &other] {
        let agent = start_agent(tc.addr(), device);
        wait_for_status(&agent, "records stored", |s| s.acked_seq >= 2).await;
        agent.shutdown().await;
    }
    let (kept, plain) = (tc.stored_records_of(&keeper.identity), tc.stored_records_of(&other.identity));
    assert!(kept >= 2 && plain >= 2);
    let sweep = |store| glimpse_store::retention::sweep_checked(store, glimpse_store::retention::ClockCheck::Accept);

    // Day 61: the other organisation's metadata is gone, this one's stays.
    clock.advance(61 * MILLIS_PER_DAY);
    sweep(tc.collector.store()).unwrap();
    assert_eq!(tc.stored_records_of(&other.identity), 0, "60 days by default");
    assert_eq!(tc.stored_records_of(&keeper.identity), kept, "kept for the 80 days chosen");
    let org_files = |org: &str| {
        tc.data_files().into_iter().filter(|(p, _)| p.to_string_lossy().contains(&format!("/orgs/{org}/"))).count()
    };
    assert!(org_files("retainlong") > 0);

    // Shortening takes effect at once, and the next sweep deletes.
    let reply = admin_request(&admin, set(Some(30), None)).await.expect("shorten");
    assert_eq!(reply, AdminReply::RetentionSet { metadata_days: 30, capture_days: 7, changed: true });
    assert_eq!(tc.stored_records_of(&keeper.identity), 0, "past the new window: not served");
    sweep(tc.collector.store()).unwrap();
    assert!(
        tc.data_files().into_iter().all(|(p, _)| !p.to_string_lossy().contains("/orgs/retainlong/metadata/")),
        "swept"
    );

    // Every change and refusal is in the audit log.
    let entries = tc.collector.store().audit().entries(Some("retainlong"), 0, 10_000).unwrap();
    let sets: Vec<_> = entries.iter().filter(|e| e.action == "retention.set").collect();
    assert!(
        sets.iter().any(|e| e.detail.contains("metadata 60 days (the service's) -> metadata 80 days")
            && e.detail.contains("capture 3 days")),
        "{sets:#?}"
    );
    assert!(sets.iter().any(|e| e.detail.contains("metadata 80 days -> metadata 30 days")), "{sets:#?}");
    assert!(sets.iter().filter(|e| e.outcome == glimpse_store::audit::AuditOutcome::Refused).count() >= 3, "{sets:#?}");
}
