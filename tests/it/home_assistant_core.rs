//! The worker in a real Home Assistant Core: the MQTT integration set up through
//! its config flow against Mosquitto with the project's own ACL and users, as a user
//! would, with the example automations of `examples/home-assistant/` loaded (their
//! notifications swapped for counters the test reads). One Home Assistant start
//! walks through: every entity under its documented id, category, class and device
//! (read from Home Assistant's entity and device registries), the repository's
//! health (a stale repository is a problem; a repository whose archive ages past
//! `health.max_age_secs` turns problem on at the next probe and off with a fresh
//! backup; a backup that skipped unreadable files is a problem and fires
//! `backup_partial`), the nightly example (backup, then verify of the same
//! archive), the Check, Prune and Cancel buttons running real jobs, two failures in
//! a row notifying twice, a worker restart notifying nobody, no warning in Home
//! Assistant's log, availability following the worker and the "worker offline"
//! example notifying when it stops.

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::homeassistant::{check_config, HomeAssistant};
use crate::helpers::*;
use serde_json::{json, Value};

const NODE: &str = "itest";

fn entity(component: &str, repository: &str, what: &str) -> String {
    format!("{component}.borgmatic_{NODE}_{repository}_{what}")
}

/// The example automations for this node and repository, each `notify.notify`
/// replaced by incrementing `counter.notified_<n>` (n-th automation that notifies).
fn example_automations() -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/home-assistant/automations.yaml"),
    )
    .unwrap()
    .replace("_nas_", &format!("_{NODE}_"))
    .replace("nextcloud", "nc")
    // The nightly trigger, made something the test can fire now.
    .replace(
        "    - trigger: time\n      at: \"02:30:00\"\n",
        "    - trigger: event\n      event_type: borgmatic_test_nightly\n",
    )
    // The offline example's ten minutes, made seconds.
    .replace("      for: \"00:10:00\"\n", "      for: \"00:00:03\"\n");
    let mut out = String::new();
    for (n, part) in text.split("    - action: notify.notify\n").enumerate() {
        if n > 0 {
            out.push_str(&format!(
                "    - action: counter.increment\n      target:\n        \
                 entity_id: counter.notified_{n}\n    - action: persistent_notification.create\n"
            ));
        }
        out.push_str(part);
    }
    out
}

/// [`setpriv_borgmatic`], for a test that must run as root (it owns files as uid
/// 33 and drops capabilities).
fn cap_dropping_borgmatic(dir: &Path) -> (PathBuf, PathBuf) {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test runs as root (it owns files as uid 33 and drops capabilities)"
    );
    setpriv_borgmatic(dir)
}

/// Nextcloud's data as www-data keeps it: `n` files 0640 of uid 33 that root
/// without `CAP_DAC_READ_SEARCH` cannot read.
fn www_data_files(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::lchown(dir, Some(33), Some(33)).unwrap();
    for i in 0..n {
        let f = dir.join(format!("f{i}.txt"));
        std::fs::write(&f, "private\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::lchown(&f, Some(33), Some(33)).unwrap();
    }
}

/// One archive made by borgmatic itself (as its own schedule would), not by the
/// worker.
fn borgmatic_create(repos: &Repos, label: &str) {
    let cfg = repos.config_dir().join(format!("{label}.yaml"));
    let out = repos.borgmatic(&cfg, &["create"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Presses a button and waits for the repository's event entity to fire; a press
/// refused as busy (a health probe holding the repository for its second or two)
/// is pressed again once the job it met has ended (its id ends the refusal's
/// message; `c` sees every job state change on `<base>/events`). The event
/// entity's state after the press.
async fn press_until_event(
    ha: &HomeAssistant,
    c: &Client,
    base: &str,
    button: &str,
    event: &str,
) -> Value {
    let events = format!("{base}/events");
    for _ in 0..10 {
        let before = ha.state(event).await.map(|s| s["state"].clone());
        ha.call("button", "press", json!({ "entity_id": button }))
            .await;
        let fired = ha
            .wait_state(event, |s| Some(&s["state"]) != before.as_ref())
            .await;
        if fired["attributes"]["code"] != "busy" {
            return fired;
        }
        let error = fired["attributes"]["error"].as_str().unwrap_or_default();
        let holder = error
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        c.wait_for(|m| {
            m.topic == events && {
                let r = m.json();
                r["job_id"] == holder.as_str() && r["finished_at"].is_string()
            }
        })
        .await;
    }
    panic!("{button} was refused as busy ten times");
}

/// The job record a command on a repository reached, from the worker's
/// `events` topic (every job state change).
async fn job_reached(
    c: &Client,
    base: &str,
    command: &str,
    repository: &str,
    state: &str,
) -> Value {
    let topic = format!("{base}/events");
    c.wait_for(|m| {
        if m.topic != topic {
            return false;
        }
        let r = m.json();
        r["command"] == command && r["repository"] == repository && r["state"] == state
    })
    .await
    .json()
}

/// Every retained discovery config of a worker's devices, by its config topic.
async fn discovery_configs(c: &Client, node: &str, count: usize) -> HashMap<String, Value> {
    let device = format!("borgmatic_mqtt_{node}");
    let deadline = Instant::now() + WAIT;
    loop {
        let found: HashMap<String, Value> = c
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic.starts_with("homeassistant/") && !m.payload.is_empty())
            .map(|m| (m.topic.clone(), m.json()))
            .filter(|(_, p)| {
                p["device"]["identifiers"][0]
                    .as_str()
                    .is_some_and(|i| i == device || i.starts_with(&format!("{device}_")))
            })
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "only {} discovery configs",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn home_assistant_shows_the_worker_and_runs_its_buttons() {
    let automations = example_automations();
    let (ok, report) = check_config(&automations);
    assert!(ok, "check_config refused the examples: {report}");

    let broker = Broker::start_shipped();
    let repos = Repos::new();
    repos.add("nc", "");
    repos.add("old", "");
    // A repository whose newest archive is years old (named the way borgmatic
    // names its archives, or borgmatic does not list it).
    let old_repo = repos.repo_path("old").display().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let made = repos.borg(&[
        "create",
        "--timestamp",
        "2020-01-01T00:00:00",
        &format!("{old_repo}::{}-2020-01-01T00:00:00.000000", host.trim()),
        repos.source("old").to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{made:?}");
    // "part": a fresh archive made by borgmatic itself, and files of www-data
    // that a backup without CAP_DAC_READ_SEARCH cannot read.
    repos.add("part", "");
    www_data_files(&repos.source("part").join("www"), 3);
    borgmatic_create(&repos, "part");
    // "slow": a backup waits in a hook until the test writes this FIFO (never,
    // here: it is cancelled).
    let fifo = repos.dir.path().join("release");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    repos.add(
        "slow",
        &format!(
            "commands:\n  - before: action\n    when: [create]\n    run:\n      - cat {}\n",
            fifo.display()
        ),
    );
    let (borgmatic_caps, drop_caps) = cap_dropping_borgmatic(repos.dir.path());
    let borgmatic_caps = borgmatic_caps.display().to_string();
    // The observer: every message of the workers and of the discovery prefix.
    let c = Client::connect(&broker).await;
    c.subscribe("borgmatic/#").await;
    c.subscribe("homeassistant/#").await;
    let password = shipped_password("borgmatic");
    let mut worker = Worker::start_at(
        &broker,
        &repos,
        &format!("borgmatic/{NODE}"),
        &[
            ("BMQTT_MQTT__USERNAME", "borgmatic"),
            ("BMQTT_MQTT__PASSWORD", password.as_str()),
            ("BMQTT_MQTT__NODE_ID", NODE),
            ("BMQTT_HOMEASSISTANT__DISCOVERY", "true"),
            ("BMQTT_BORGMATIC__BINARY", borgmatic_caps.as_str()),
        ],
    )
    .await;
    let ha = HomeAssistant::start(
        broker.port,
        "homeassistant",
        &shipped_password("homeassistant"),
        &automations,
    )
    .await;

    // Every documented entity exists under its documented id, on the repository's
    // device, which hangs off the worker's device.
    let per_repo = [
        ("button", "run_backup"),
        ("button", "verify_backup"),
        ("button", "check_repository"),
        ("button", "prune"),
        ("button", "cancel"),
        ("sensor", "last_backup"),
        ("sensor", "last_result"),
        ("sensor", "last_duration"),
        ("sensor", "last_size"),
        ("sensor", "last_verified"),
        ("sensor", "verify_result"),
        ("sensor", "progress"),
        ("sensor", "last_success"),
        ("binary_sensor", "running"),
        ("binary_sensor", "problem"),
        ("event", "event"),
    ];
    let expected: Vec<String> = per_repo.iter().map(|(c, w)| entity(c, "nc", w)).collect();
    let connectivity = format!("binary_sensor.borgmatic_{NODE}_connectivity");
    ha.wait_state(&connectivity, |s| s["state"] == "on").await;
    for id in &expected {
        ha.wait_state(id, |s| s["state"] != "unavailable").await;
    }
    let device_name = |id: &str| format!("{{{{ device_attr(device_id('{id}'), 'name') }}}}");
    assert_eq!(
        ha.template(&device_name(&connectivity)).await,
        format!("borgmatic {NODE}")
    );
    assert_eq!(
        ha.template(&device_name(&expected[0])).await,
        format!("borgmatic {NODE} nc")
    );
    let via = ha
        .template(&format!(
            "{{{{ device_attr(device_id('{}'), 'via_device_id') == device_id('{connectivity}') }}}}",
            expected[0]
        ))
        .await;
    assert_eq!(
        via, "True",
        "the repository device is not linked to the worker's"
    );
    for id in &expected {
        let same = ha
            .template(&format!(
                "{{{{ device_id('{id}') == device_id('{}') }}}}",
                expected[0]
            ))
            .await;
        assert_eq!(same, "True", "{id} is not on the repository's device");
    }
    for (id, class) in [
        (entity("sensor", "nc", "last_size"), "data_size"),
        (entity("sensor", "nc", "last_result"), "enum"),
        (entity("binary_sensor", "nc", "problem"), "problem"),
        (connectivity.clone(), "connectivity"),
    ] {
        let s = ha.state(&id).await.unwrap();
        assert_eq!(s["attributes"]["device_class"], class, "{s}");
    }
    let size = ha
        .state(&entity("sensor", "nc", "last_size"))
        .await
        .unwrap();
    assert_eq!(size["attributes"]["state_class"], "measurement", "{size}");
    let events = ha.state(&entity("event", "nc", "event")).await.unwrap();
    assert!(
        events["attributes"]["event_types"]
            .as_array()
            .unwrap()
            .contains(&json!("backup_failed")),
        "{events}"
    );

    // The dashboard card names only entities that exist.
    let card = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/home-assistant/dashboard-card.yaml"),
    )
    .unwrap()
    .replace("_nas_", &format!("_{NODE}_"))
    .replace("nextcloud", "nc");
    let named: Vec<&str> = card
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("entity: "))
        .collect();
    assert!(named.len() >= 10, "{card}");
    for id in named {
        assert!(
            ha.state(id).await.is_some(),
            "the dashboard card names {id}"
        );
    }

    // The registries agree with every discovery config: the entity id, the
    // category (diagnostic where the discovery says so), the device, the device's
    // link to the worker's; the state carries the declared classes and options.
    let configs = discovery_configs(&c, NODE, 4 * per_repo.len() + 1).await;
    let (registry, devices) = ha.registries().await;
    let device_of = |identifier: &str| -> Value {
        devices
            .iter()
            .find(|d| {
                d["identifiers"]
                    .as_array()
                    .is_some_and(|i| i.contains(&json!(["mqtt", identifier])))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no device {identifier} in the registry"))
    };
    let worker_device = device_of(&format!("borgmatic_mqtt_{NODE}"));
    let mut diagnostic = Vec::new();
    for (topic, p) in &configs {
        let e = registry
            .iter()
            .find(|e| e["platform"] == "mqtt" && e["unique_id"] == p["unique_id"])
            .unwrap_or_else(|| panic!("{topic}: not in the entity registry"));
        let id = e["entity_id"].as_str().unwrap();
        assert_eq!(e["entity_id"], p["default_entity_id"], "{topic}");
        let category = p.get("entity_category").cloned().unwrap_or(Value::Null);
        assert_eq!(e["entity_category"], category, "{topic}: {e}");
        if category == "diagnostic" {
            diagnostic.push(id.to_string());
        }
        let device = device_of(p["device"]["identifiers"][0].as_str().unwrap());
        assert_eq!(e["device_id"], device["id"], "{topic}");
        assert_eq!(device["name"], p["device"]["name"], "{device}");
        match p["device"]["via_device"].as_str() {
            Some(via) => assert_eq!(device["via_device_id"], device_of(via)["id"], "{device}"),
            None => assert_eq!(device["id"], worker_device["id"], "{topic}"),
        }
        let state = ha.state(id).await.unwrap();
        for k in [
            "device_class",
            "state_class",
            "unit_of_measurement",
            "options",
        ] {
            if let Some(v) = p.get(k) {
                assert_eq!(&state["attributes"][k], v, "{id}: {k}");
            }
        }
    }
    diagnostic.sort();
    assert_eq!(
        diagnostic,
        [
            connectivity.clone(),
            entity("sensor", "nc", "last_duration"),
            entity("sensor", "old", "last_duration"),
            entity("sensor", "part", "last_duration"),
            entity("sensor", "slow", "last_duration"),
        ],
        "diagnostic entities"
    );

    // Health from the repositories themselves: the stale one is a problem, with
    // its reason; the one without archives too.
    let stale = ha
        .wait_state(&entity("binary_sensor", "old", "problem"), |s| {
            s["state"] == "on"
        })
        .await;
    assert!(
        stale["attributes"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("h old"),
        "{stale}"
    );
    let when = ha
        .state(&entity("sensor", "old", "last_success"))
        .await
        .unwrap();
    assert!(
        when["state"]
            .as_str()
            .unwrap_or("")
            .starts_with("2020-01-01"),
        "{when}"
    );
    ha.wait_state(&entity("binary_sensor", "nc", "problem"), |s| {
        s["state"] == "on"
    })
    .await;
    ha.wait_state(&entity("binary_sensor", "part", "problem"), |s| {
        s["state"] == "off"
    })
    .await;

    // A backup that skipped unreadable files (root without CAP_DAC_READ_SEARCH,
    // as under cap_drop: [ALL]): the event entity fires `backup_partial`, the
    // result reads `partial` with what was left out, the problem sensor turns on
    // with the reason.
    std::fs::write(&drop_caps, "-dac_read_search,-dac_override").unwrap();
    let partial = press_until_event(
        &ha,
        &c,
        &worker.base,
        &entity("button", "part", "run_backup"),
        &entity("event", "part", "event"),
    )
    .await;
    std::fs::write(&drop_caps, "").unwrap();
    assert_eq!(
        partial["attributes"]["event_type"], "backup_partial",
        "{partial}"
    );
    assert_eq!(partial["attributes"]["skipped_files"], 3, "{partial}");
    let result = ha
        .state(&entity("sensor", "part", "last_result"))
        .await
        .unwrap();
    assert_eq!(result["state"], "partial", "{result}");
    assert_eq!(result["attributes"]["skipped_files"], 3, "{result}");
    let problem = ha
        .wait_state(&entity("binary_sensor", "part", "problem"), |s| {
            s["state"] == "on"
        })
        .await;
    let reason = problem["attributes"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("partial") && reason.contains("3 file"),
        "{problem}"
    );

    // The Cancel button with nothing running is refused, visibly.
    let slow_events = entity("event", "slow", "event");
    let refused = press_until_event(
        &ha,
        &c,
        &worker.base,
        &entity("button", "slow", "cancel"),
        &slow_events,
    )
    .await;
    assert_eq!(
        refused["attributes"]["event_type"], "press_refused",
        "{refused}"
    );
    assert_eq!(refused["attributes"]["action"], "cancel", "{refused}");
    // A backup that waits in its hook; Cancel ends it `cancelled`: the event entity
    // fires, running goes off, no archive is made and no hook is left waiting.
    ha.call(
        "button",
        "press",
        json!({ "entity_id": entity("button", "slow", "run_backup") }),
    )
    .await;
    ha.wait_state(&entity("binary_sensor", "slow", "running"), |s| {
        s["state"] == "on"
    })
    .await;
    job_reached(&c, &worker.base, "backup/run", "slow", "running").await;
    let cancelled = press_until_event(
        &ha,
        &c,
        &worker.base,
        &entity("button", "slow", "cancel"),
        &slow_events,
    )
    .await;
    assert_eq!(
        cancelled["attributes"]["event_type"], "backup_cancelled",
        "{cancelled}"
    );
    job_reached(&c, &worker.base, "backup/run", "slow", "cancelled").await;
    ha.wait_state(&entity("binary_sensor", "slow", "running"), |s| {
        s["state"] == "off"
    })
    .await;
    let result = ha
        .state(&entity("sensor", "slow", "last_result"))
        .await
        .unwrap();
    assert_eq!(result["state"], "cancelled", "{result}");
    assert!(repos.archives("slow").is_empty());
    // Opening the FIFO for writing without blocking fails (ENXIO) once nobody
    // reads it: the hook was ended with the job.
    let deadline = Instant::now() + WAIT;
    loop {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&fifo);
        match opened {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => break,
            _ => assert!(
                Instant::now() < deadline,
                "the hook still waits: {opened:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The nightly example: a backup, then a verification of the same archive.
    assert!(automations.contains("borgmatic_test_nightly"));
    ha.post("/api/events/borgmatic_test_nightly", json!({}))
        .await;
    let verified = ha
        .wait_state(&entity("sensor", "nc", "verify_result"), |s| {
            s["state"] == "verified"
        })
        .await;
    let result = ha
        .state(&entity("sensor", "nc", "last_result"))
        .await
        .unwrap();
    assert_eq!(result["state"], "succeeded", "{result}");
    assert_eq!(repos.archives("nc").len(), 1);
    assert_eq!(
        verified["attributes"]["archive"], result["attributes"]["archive"],
        "the verification checked another archive"
    );
    ha.wait_state(&entity("binary_sensor", "nc", "problem"), |s| {
        s["state"] == "off"
    })
    .await;
    let size = ha
        .state(&entity("sensor", "nc", "last_size"))
        .await
        .unwrap();
    assert!(size["state"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);
    ha.wait_state(&entity("binary_sensor", "nc", "running"), |s| {
        s["state"] == "off"
    })
    .await;

    // Check and Prune run real jobs on the repository.
    for (button, command) in [("check_repository", "repo/check"), ("prune", "repo/prune")] {
        ha.call(
            "button",
            "press",
            json!({ "entity_id": entity("button", "nc", button) }),
        )
        .await;
        let r = job_reached(&c, &worker.base, command, "nc", "succeeded").await;
        assert!(r["finished_at"].is_string(), "{r}");
    }
    assert_eq!(
        repos.archives("nc").len(),
        1,
        "prune keeps the daily archive"
    );

    // A repository whose archive ages: with a short probe interval, the first
    // probe after the newest archive passes max_age turns problem on (nobody runs
    // a job), and a fresh backup turns it off.
    let aging = Repos::new();
    aging.add("aging", "");
    borgmatic_create(&aging, "aging");
    // (A probe holds the repository for a second or two, and a press meeting it is
    // refused as busy: the press is made again when that probe has ended.)
    let (probe_secs, max_age_secs) = (6, 24);
    let mut aging_worker = Worker::start_at(
        &broker,
        &aging,
        "borgmatic/aging",
        &[
            ("BMQTT_MQTT__USERNAME", "borgmatic"),
            ("BMQTT_MQTT__PASSWORD", password.as_str()),
            ("BMQTT_MQTT__NODE_ID", "aging"),
            ("BMQTT_HOMEASSISTANT__DISCOVERY", "true"),
            ("BMQTT_HEALTH__PROBE_INTERVAL_SECS", &probe_secs.to_string()),
            ("BMQTT_HEALTH__MAX_AGE_SECS", &max_age_secs.to_string()),
        ],
    )
    .await;
    let aging_problem = "binary_sensor.borgmatic_aging_aging_problem";
    ha.wait_state(aging_problem, |s| s["state"] == "off").await;
    let on = ha.wait_state(aging_problem, |s| s["state"] == "on").await;
    let reason = on["attributes"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("s old (more than 24 s)"), "{on}");
    // The health reports in order: every probe said off while the archive was
    // younger than max_age, and the first probe after it said on.
    let health_topic = "borgmatic/aging/repos/aging/health";
    let reports: Vec<Value> = c
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic == health_topic)
        .map(|m| m.json())
        .collect();
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let first_on = reports.iter().position(|r| r["problem"] == true).unwrap();
    assert!(first_on > 0, "{reports:#?}");
    let stale_at =
        time(&reports[0]["newest_archive_time"]) + chrono::Duration::seconds(max_age_secs);
    assert!(
        time(&reports[first_on - 1]["probed_at"]) <= stale_at,
        "{reports:#?}"
    );
    assert!(
        time(&reports[first_on]["probed_at"]) > stale_at,
        "{reports:#?}"
    );
    let fresh = press_until_event(
        &ha,
        &c,
        &aging_worker.base,
        "button.borgmatic_aging_aging_run_backup",
        "event.borgmatic_aging_aging_event",
    )
    .await;
    assert_eq!(
        fresh["attributes"]["event_type"], "backup_succeeded",
        "{fresh}"
    );
    ha.wait_state(aging_problem, |s| s["state"] == "off").await;
    assert!(aging_worker.terminate().success());

    // A verification that finds a restored file differing from its unchanged
    // source: the event entity fires `verify_failed` (which notifies), the problem
    // sensor turns on with the reason (which notifies once); a good verification
    // afterwards turns it off again.
    let data = repos.source("nc").join("data.bin");
    let mtime = std::fs::metadata(&data).unwrap().modified().unwrap();
    let original = std::fs::read(&data).unwrap();
    let flip = |bytes: &[u8]| {
        let mut b = bytes.to_vec();
        b[1000] ^= 0xff;
        std::fs::write(&data, &b).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&data)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    };
    flip(&original);
    let failed_verify = press_until_event(
        &ha,
        &c,
        &worker.base,
        &entity("button", "nc", "verify_backup"),
        &entity("event", "nc", "event"),
    )
    .await;
    assert_eq!(
        failed_verify["attributes"]["event_type"], "verify_failed",
        "{failed_verify}"
    );
    let problem = ha
        .wait_state(&entity("binary_sensor", "nc", "problem"), |s| {
            s["state"] == "on"
        })
        .await;
    let reason = problem["attributes"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("verif"), "{problem}");
    ha.wait_state("counter.notified_1", |s| s["state"] == "1")
        .await;
    ha.wait_state("counter.notified_2", |s| s["state"] == "1")
        .await;
    std::fs::write(&data, &original).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let verified = press_until_event(
        &ha,
        &c,
        &worker.base,
        &entity("button", "nc", "verify_backup"),
        &entity("event", "nc", "event"),
    )
    .await;
    assert_eq!(
        verified["attributes"]["event_type"], "verify_succeeded",
        "{verified}"
    );
    ha.wait_state(&entity("binary_sensor", "nc", "problem"), |s| {
        s["state"] == "off"
    })
    .await;

    // Two failures in a row notify twice; the size is unknown, not the last
    // success's; the problem sensor turns on and notifies once.
    let repo = repos.repo_path("nc");
    let away = repo.with_extension("away");
    std::fs::rename(&repo, &away).unwrap();
    for n in ["2", "3"] {
        ha.call(
            "button",
            "press",
            json!({ "entity_id": entity("button", "nc", "run_backup") }),
        )
        .await;
        ha.wait_state("counter.notified_1", |s| s["state"] == n)
            .await;
    }
    let failed = ha
        .state(&entity("sensor", "nc", "last_result"))
        .await
        .unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    let size = ha
        .state(&entity("sensor", "nc", "last_size"))
        .await
        .unwrap();
    assert_eq!(size["state"], "unknown", "{size}");
    ha.wait_state("counter.notified_2", |s| s["state"] == "2")
        .await;
    std::fs::rename(&away, &repo).unwrap();

    // A worker restart (killed) repeats no notification.
    worker.restart(&broker).await;
    ha.wait_state(&connectivity, |s| s["state"] == "on").await;
    for id in &expected {
        ha.wait_state(id, |s| s["state"] != "unavailable").await;
    }
    ha.wait_state(&entity("binary_sensor", "nc", "problem"), |s| {
        s["state"] == "on"
    })
    .await;
    for (counter, n) in [("counter.notified_1", "3"), ("counter.notified_2", "2")] {
        let c = ha.state(counter).await.unwrap();
        assert_eq!(c["state"], n, "{counter} after the restart: {c}");
    }

    // Nothing about the worker's entities in Home Assistant's warnings or errors.
    let log = ha.log();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARNING") || l.contains("ERROR"))
        .filter(|l| {
            ["borgmatic", "mqtt", "template", "Template"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");

    // Availability follows the worker: a clean stop makes every entity unavailable,
    // and the connectivity diagnostic reads off; the "worker offline" example
    // notifies once it stayed off for its delay.
    let offline_before = ha.state("counter.notified_3").await.unwrap()["state"].clone();
    assert!(worker.terminate().success());
    for id in &expected {
        ha.wait_state(id, |s| s["state"] == "unavailable").await;
    }
    ha.wait_state(&connectivity, |s| s["state"] == "off").await;
    let offline_before: u32 = offline_before.as_str().unwrap().parse().unwrap();
    let offline_after = (offline_before + 1).to_string();
    ha.wait_state("counter.notified_3", |s| {
        s["state"] == offline_after.as_str()
    })
    .await;
    assert!(automations.contains("for: \"00:00:03\""));
}
