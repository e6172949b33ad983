//! Every kind of trouble (an old newest archive, a partial backup, a failed
//! verification, an unreadable repository or one with no archive) is a problem with
//! its reason.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use super::*;
use crate::jobs::JobRecord;

fn job(command: &str, state: JobState, data: Value) -> JobResult {
    let mut record = JobRecord::queued(command, Some("nc".into()), None);
    record.state = state;
    record.finished_at = Some(Utc::now());
    JobResult {
        record,
        data: Some(data),
    }
}

/// Long on purpose: one repository's history, each step starting from the state
/// the one before left (probed, aged, partial, verified, failed, recovered).
#[test]
fn every_kind_of_trouble_is_a_problem_with_its_reason() {
    let day = Duration::from_secs(26 * 3600);
    let now = Utc::now();
    let mut h = RepoHealth::default();
    // Not probed yet, nothing known: no claim either way.
    assert_eq!(h.report(day, now)["problem"], false);
    let list = |t: DateTime<Utc>| {
        job(
            "archive/list",
            JobState::Succeeded,
            json!({"archives": [{"name": "nc-1",
                "time": t.with_timezone(&Local).naive_local().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()}]}),
        )
    };
    h.probed(&list(now - chrono::Duration::hours(2)), now);
    let r = h.report(day, now);
    assert_eq!(r["problem"], false, "{r}");
    assert_eq!(r["newest_archive"], "nc-1");
    let success = r["last_success"].as_str().unwrap().to_string();
    assert!(success.starts_with("20"), "{r}");

    h.probed(&list(now - chrono::Duration::hours(30)), now);
    let r = h.report(day, now);
    assert_eq!(r["problem"], true);
    assert!(r["reason"].as_str().unwrap().contains("30 h old"), "{r}");
    let r = h.report(Duration::from_secs(600), now);
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .ends_with("is 30 h old (more than 10 min)"),
        "{r}"
    );
    assert_eq!(
        (span(59), span(61)),
        ("59 s".to_string(), "1 min".to_string())
    );
    let later = now + chrono::Duration::milliseconds(500);
    let r = h.report(Duration::from_secs(30 * 3600), later);
    assert_eq!(r["problem"], true, "half a second past max_age: {r}");

    h.probed(&list(now), now);
    h.record(&job(
        "backup/run",
        JobState::Warning,
        json!({"partial": true, "archive": "nc-1", "skipped_files": 2,
               "reason": "borg could not read 2 file(s)"}),
    ));
    let r = h.report(day, now);
    assert_eq!(r["problem"], true);
    assert!(r["reason"].as_str().unwrap().contains("partial"), "{r}");
    assert!(
        r["last_success"].is_null(),
        "a partial archive is no success: {r}"
    );

    h.record(&job(
        "backup/run",
        JobState::Succeeded,
        json!({"archive": "nc-2"}),
    ));
    h.record(&job(
        "backup/verify",
        JobState::Failed,
        json!({"verified": false}),
    ));
    let r = h.report(day, now);
    assert!(
        r["reason"].as_str().unwrap().contains("verification"),
        "{r}"
    );

    h.record(&job(
        "backup/verify",
        JobState::Succeeded,
        json!({"verified": true}),
    ));
    assert_eq!(h.report(day, now)["problem"], false);
    h.probed(&job("archive/list", JobState::Failed, Value::Null), now);
    assert_eq!(h.report(day, now)["problem"], true);
    h.probed(
        &job("archive/list", JobState::Succeeded, json!({"archives": []})),
        now,
    );
    assert!(h.report(day, now)["reason"]
        .as_str()
        .unwrap()
        .contains("no archive"));
}
