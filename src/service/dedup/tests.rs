use super::*;
use std::sync::Arc;

fn key(p: &str, id: &str) -> Key {
    Key {
        principal: p.into(),
        command: CommandName::JobList,
        id: RequestId::parse(id).unwrap(),
    }
}

fn answer(n: usize) -> Response {
    Response::ok(None, None, serde_json::json!({ "pad": "x".repeat(n) }))
}

#[tokio::test]
async fn a_copy_waits_for_the_first_and_nothing_else_waits() {
    let d = Arc::new(Dedup::new(Duration::from_secs(600), 1 << 20));
    let Claim::Run(first) = d.claim(key("p", "a"), 1).await else {
        panic!("first copy must run")
    };
    // Another key is not held up by the pending one.
    assert!(matches!(d.claim(key("p", "b"), 1).await, Claim::Run(_)));
    // Another principal with the same id runs on its own.
    assert!(matches!(d.claim(key("q", "a"), 1).await, Claim::Run(_)));
    // The same id with another body is refused at once.
    assert!(matches!(d.claim(key("p", "a"), 2).await, Claim::Reused));
    let d2 = d.clone();
    let copy = tokio::spawn(async move {
        match d2.claim(key("p", "a"), 1).await {
            Claim::Replay(r) => r.to_json(),
            _ => panic!("the copy must get the first answer"),
        }
    });
    tokio::task::yield_now().await;
    assert!(!copy.is_finished());
    first.finish(&answer(3));
    assert_eq!(copy.await.unwrap(), answer(3).to_json());
}

#[tokio::test]
async fn a_copy_after_a_restart_gets_the_stored_answer() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store = Store::open(dir.path()).unwrap();
        Dedup::with_store(Duration::from_secs(600), 1 << 20, store)
    };
    let body = {
        let d = open();
        let body = d.hash(b"{}");
        let Claim::Run(t) = d.claim(key("p", "a"), body).await else {
            panic!()
        };
        t.finish(&answer(3));
        body
    };
    let d = open();
    assert_eq!(d.hash(b"{}"), body, "the hash key is kept");
    match d.claim(key("p", "a"), body).await {
        Claim::Replay(r) => assert_eq!(r.to_json(), answer(3).to_json()),
        _ => panic!("the stored answer must be replayed"),
    }
    assert!(matches!(
        d.claim(key("p", "a"), body ^ 1).await,
        Claim::Reused
    ));
    assert!(matches!(d.claim(key("q", "a"), body).await, Claim::Run(_)));
}

#[tokio::test]
async fn an_abandoned_claim_lets_the_copy_run() {
    let d = Dedup::new(Duration::from_secs(600), 1 << 20);
    let Claim::Run(first) = d.claim(key("p", "a"), 1).await else {
        panic!()
    };
    drop(first);
    assert!(matches!(d.claim(key("p", "a"), 1).await, Claim::Run(_)));
}

#[tokio::test]
async fn memory_is_bounded_oldest_first() {
    let max = 64 * 1024;
    let d = Dedup::new(Duration::from_secs(600), max);
    for i in 0..2_000 {
        let Claim::Run(t) = d.claim(key("p", &format!("r{i}")), 1).await else {
            panic!()
        };
        t.finish(&answer(1_000));
        assert!(d.bytes() <= max, "{} bytes after {i}", d.bytes());
    }
    assert!(matches!(d.claim(key("p", "r0"), 1).await, Claim::Run(_)));
    assert!(matches!(
        d.claim(key("p", "r1999"), 1).await,
        Claim::Replay(_)
    ));
    // An answer too large to keep is remembered as answered, without the answer.
    let Claim::Run(t) = d.claim(key("p", "big"), 1).await else {
        panic!()
    };
    t.finish(&answer(max));
    assert!(matches!(
        d.claim(key("p", "big"), 1).await,
        Claim::Forgotten
    ));
}
