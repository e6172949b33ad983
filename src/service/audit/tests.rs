use super::*;

fn record(role: Option<&str>, client: &str, n: usize) -> AuditRecord {
    AuditRecord {
        at: Utc::now(),
        transport: "http".into(),
        role: role.map(str::to_string),
        client: Some(client.into()),
        command: "job/list".into(),
        repository: None,
        outcome: if role.is_some() { "ok" } else { "unauthorized" }.into(),
        job_id: None,
        request_id: Some(format!("r{n}")),
    }
}

fn lines(path: &Path) -> Vec<AuditLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn refusals_are_counted_not_written_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let settings = AuditSettings {
        refusal_window_secs: 3600,
        ..AuditSettings::default()
    };
    let audit = Audit::new(dir.path(), &settings);
    for n in 0..5000 {
        audit.append(&record(None, &format!("10.0.{}.{}", n % 200, n % 7), n));
    }
    audit.append(&record(Some("read"), "10.9.9.9", 1));
    let path = dir.path().join("audit.jsonl");
    assert_eq!(lines(&path).len(), ITEMISED_PER_WINDOW as usize + 1);
    // End the window: the rest comes as counts, bounded by the key cap.
    {
        let mut w = audit.shared.lock();
        audit.shared.end_window(&mut w);
    }
    let all = lines(&path);
    let counted: u64 = all.iter().filter_map(|l| l.count).sum();
    let itemised = all.iter().filter(|l| l.count.is_none()).count() as u64;
    assert_eq!(counted + itemised, 5001, "every refusal is accounted for");
    assert!(all.len() <= ITEMISED_PER_WINDOW as usize + 1 + KEYS_PER_WINDOW + 1);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn files_rotate_by_size_and_the_tail_spans_them() {
    let dir = tempfile::tempdir().unwrap();
    let settings = AuditSettings {
        max_bytes: 16384,
        keep_files: 2,
        ..AuditSettings::default()
    };
    let audit = Audit::new(dir.path(), &settings);
    for n in 0..1000 {
        audit.append(&record(Some("read"), "10.0.0.1", n));
    }
    let main = dir.path().join("audit.jsonl");
    assert!(std::fs::metadata(&main).unwrap().len() <= 16384);
    assert!(
        std::fs::metadata(dir.path().join("audit.jsonl.2"))
            .unwrap()
            .len()
            <= 16384
    );
    assert!(!dir.path().join("audit.jsonl.3").exists());
    let newest = audit.last(100);
    assert_eq!(newest.len(), 100);
    let ids: Vec<String> = newest
        .iter()
        .map(|l| l.record.request_id.clone().unwrap())
        .collect();
    let want: Vec<String> = (900..1000).rev().map(|n| format!("r{n}")).collect();
    assert_eq!(ids, want);
}

#[test]
fn the_tail_of_a_huge_file_is_read_without_reading_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // 64 GiB of holes: reading it whole would take minutes and all memory.
    let f = File::create(&path).unwrap();
    f.set_len(64 << 30).unwrap();
    drop(f);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"\n").unwrap();
    for n in 0..3 {
        let line = AuditLine {
            record: record(Some("admin"), "10.0.0.2", n),
            count: None,
        };
        f.write_all(&serde_json::to_vec(&line).unwrap()).unwrap();
        f.write_all(b"\n").unwrap();
    }
    let audit = Audit::new(dir.path(), &AuditSettings::default());
    let got = audit.last(50);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].record.request_id.as_deref(), Some("r2"));
}
