//! Repository locations, the `config/show` redaction and the ssh identity files
//! read from real-looking configurations.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use super::*;
use crate::redact::MASK;

#[test]
fn locations() {
    assert_eq!(
        parse_location("/srv/repo"),
        Location::Local("/srv/repo".into())
    );
    assert_eq!(
        parse_location("ssh://u:pw@backup.lan:2222/./repo"),
        Location::Ssh {
            user: Some("u".into()),
            host: "backup.lan".into(),
            port: 2222,
            path: "/./repo".into()
        }
    );
    assert_eq!(
        parse_location("u@host:repo"),
        Location::Ssh {
            user: Some("u".into()),
            host: "host".into(),
            port: 22,
            path: "repo".into()
        }
    );
    assert!(matches!(
        parse_location("s3://bucket/x"),
        Location::Other(_)
    ));
}

/// A configuration holding a secret in every kind of place: secret keys, URLs'
/// userinfo, paths and queries, apprise URLs whose "host" is a token, hook
/// commands, `sshpass -p`, constants, options strings, unknown keys.
const SECRETFUL: &str = r#"
constants:
  pw: S1-constant
  pin: 4711471147
source_directories: [/srv]
repositories:
  - path: ssh://borg:S2-url-password@backup.example.com:2222/./S3-repo-path
    label: remote
  - path: /srv/local-repo
    label: local
  - path: S4-user@scp-host.example.com:S5-scp-path
  - path: https://S6-user:S7-rest-pass@rest.example.com/S8-rest-path?token=S9-query
    key_location: /keys/S10-key-location
  - sftp://S11-plain-string-repo@sftp.example.com/S12-path
encryption_passphrase: S13-encryption-passphrase
encryption_passcommand: cat /run/S14-passcommand-file
ssh_command: sshpass -p S15-sshpass-password ssh -i /root/.ssh/S16-key-file -p 2222
borg_keys_directory: /keys/S17-keys-dir
borg_key_file: /keys/S18-key-file
keep_daily: 7
keep_within: 3d
compression: zstd,3
archive_name_format: '{hostname}-{now}'
exclude_patterns: ['*.tmp']
checks:
  - name: repository
    frequency: 2 weeks
  - name: spot
    xxh64sum_command: xxh64sum --key S19-check-command
extra_borg_options:
  create: --remote-ratelimit 5 --S20-extra-option
before_backup:
  - curl -fsS https://hc-ping.com/S21-healthchecks-uuid-in-hook/start
after_backup: [echo S22-after-hook]
on_error: [echo S23-on-error]
commands:
  - before: action
    when: [create]
    run: [curl https://x.example/S24-commands-run]
postgresql_databases:
  - name: nextcloud
    username: S25-db-user
    password: S26-db-password
    restore_password: S27-restore-password
    options: --password=S28-db-options
    pg_dump_command: PGPASSWORD=S29-dump-command pg_dump
mariadb_databases:
  - name: x
    password: S30-mariadb-password
ntfy:
  topic: S31-ntfy-topic
  server: https://S32-ntfy-user:S33-ntfy-pass@ntfy.sh/S34-ntfy-path
  username: u
  password: S35-ntfy-password
  access_token: S36-ntfy-token
  start:
    message: S37-ntfy-message
pagerduty:
  integration_key: S38-pagerduty-key
pushover:
  token: S39-pushover-token
  user: S40-pushover-user
zabbix:
  server: http://zabbix.example.com/api/S41-zabbix-path
  password: S42-zabbix-password
  api_key: S43-zabbix-api-key
  itemid: 55
healthchecks:
  ping_url: S44-bare-healthchecks-uuid
cronitor:
  ping_url: https://cronitor.link/S45-cronitor-key/abc
uptime_kuma:
  push_url: https://kuma.example.com/api/push/S46-kuma-token?status=up
apprise:
  services:
    - url: slack://S47-slack-a/S48-slack-b/S49-slack-c
      label: slack
    - url: tgram://S50-telegram-bot-token/S51-chat
      label: telegram
loki:
  url: http://user:S52-loki-password@loki.example.com:3100/loki/api/v1/push
  labels:
    app: S53-loki-label
sentry:
  data_source_name_url: https://S54-sentry-key@o1.ingest.sentry.io/S55-project
  monitor_slug: x
keepassxc:
  key_file: /S56-keepass-key
zfs:
  zfs_command: S57-zfs-command
some_api_secret: S58-generic-secret
my_token: S59-generic-token
unknown_future_option:
  nested: [S60-unknown-nested]
"#;

#[test]
fn redaction_shows_only_what_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, SECRETFUL).unwrap();
    let c = BorgmaticConfig::load(&p).unwrap();
    let shown = c.redacted();
    let text = shown.to_string();
    for i in 1..=60 {
        assert!(
            !text.contains(&format!("S{i}-")),
            "secret S{i} survived: {text}"
        );
    }
    assert!(!text.contains("4711471147"), "{text}");
    // What is harmless stays readable.
    assert_eq!(shown["keep_daily"], 7);
    assert_eq!(shown["keep_within"], "3d");
    assert_eq!(shown["compression"], "zstd,3");
    assert_eq!(shown["exclude_patterns"][0], "*.tmp");
    assert_eq!(shown["checks"][0]["name"], "repository");
    assert_eq!(shown["checks"][0]["frequency"], "2 weeks");
    assert_eq!(shown["checks"][1]["xxh64sum_command"], MASK);
    let repos = &shown["repositories"];
    assert_eq!(repos[0]["path"], "ssh://backup.example.com:2222");
    assert_eq!(repos[0]["label"], "remote");
    assert_eq!(repos[1]["path"], "/srv/local-repo");
    assert_eq!(repos[2]["path"], "ssh://scp-host.example.com");
    assert_eq!(repos[3]["path"], "https://rest.example.com");
    assert_eq!(repos[4], "sftp://sftp.example.com");
    assert_eq!(shown["ssh_command"], MASK);
    assert_eq!(shown["before_backup"], MASK);
    assert_eq!(shown["commands"], MASK);
    assert_eq!(shown["postgresql_databases"][0]["name"], "nextcloud");
    assert_eq!(shown["ntfy"]["server"], "https://ntfy.sh");
    assert_eq!(shown["zabbix"]["server"], "http://zabbix.example.com");
    assert_eq!(shown["healthchecks"]["ping_url"], MASK);
    assert_eq!(shown["uptime_kuma"]["push_url"], "https://kuma.example.com");
    assert_eq!(shown["apprise"]["services"][0]["url"], "slack://[redacted]");
    assert_eq!(shown["apprise"]["services"][1]["label"], "telegram");
    assert_eq!(shown["loki"]["url"], "http://loki.example.com:3100");
    assert_eq!(
        shown["sentry"]["data_source_name_url"],
        "https://o1.ingest.sentry.io"
    );
    assert_eq!(shown["unknown_future_option"], MASK);
    assert_eq!(c.repositories().len(), 5);
    assert_eq!(c.repositories()[0].label.as_deref(), Some("remote"));
}

#[test]
fn identity_files_come_from_ssh_command() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(
        &p,
        "ssh_command: ssh -i /k/one -o 'IdentityFile=/k/two' -oIdentityFile=/k/three -p 22\n",
    )
    .unwrap();
    assert_eq!(
        ssh_identity_files(&p),
        [PathBuf::from("/k/one"), "/k/two".into(), "/k/three".into()]
    );
    std::fs::write(&p, "keep_daily: 1\n").unwrap();
    let defaults = ssh_identity_files(&p);
    assert!(defaults.iter().any(|k| k.ends_with(".ssh/id_ed25519")));
}

#[test]
fn database_names_come_from_every_database_hook() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, SECRETFUL).unwrap();
    let c = BorgmaticConfig::load(&p).unwrap();
    let mut names = c.database_names();
    names.sort();
    assert_eq!(names, ["nextcloud", "x"]);
    std::fs::write(
        &p,
        "sqlite_databases:\n  - name: app\n    path: /tmp/app.db\n",
    )
    .unwrap();
    let c = BorgmaticConfig::load(&p).unwrap();
    assert_eq!(c.database_names(), ["app"]);
    std::fs::write(&p, "source_directories: [/x]\n").unwrap();
    assert!(BorgmaticConfig::load(&p)
        .unwrap()
        .database_names()
        .is_empty());
}
