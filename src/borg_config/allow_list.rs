//! The allow-list of `config/show`: borgmatic's options known to be harmless, as
//! one data table, and how each is shown. Everything not listed is masked.
//!
//! Plain data: imports nothing.

/// How `config/show` treats one key's value. The default, for every key not named
/// below (unknown keys included), is to mask it: a configuration is full of tokens
/// in unexpected places (apprise URLs, hook commands, `sshpass -p`, constants), so
/// only what is known to be harmless is shown.
#[derive(Clone, Copy)]
pub(super) enum Rule {
    /// Harmless: shown as it is (scalars and lists of scalars; anything nested is
    /// masked).
    Show,
    /// A repository: local paths shown, remote ones reduced to scheme and host.
    Repo,
    /// A service URL: scheme and host of a network URL, nothing of anything else.
    Url,
    /// A table whose listed keys follow their rule; every other key is masked.
    Table(&'static [(&'static str, Rule)]),
    /// A list of such tables.
    Tables(&'static [(&'static str, Rule)]),
}

pub(super) use Rule::{Repo, Show, Table, Tables, Url};

/// borgmatic 2.1's options that are harmless to show, from its `schema.yaml`.
/// Commands (`commands`, `before_*`, `after_*`, `on_error`, `*_command`), secrets,
/// key locations, constants, credentials hooks and `extra_borg_options` are not
/// here, so they are masked.
pub(super) const TOP: &[(&str, Rule)] = &[
    ("source_directories", Show),
    ("source_directories_must_exist", Show),
    ("repositories", Tables(REPOSITORY)),
    ("working_directory", Show),
    ("one_file_system", Show),
    ("numeric_ids", Show),
    ("atime", Show),
    ("ctime", Show),
    ("birthtime", Show),
    ("read_special", Show),
    ("flags", Show),
    ("files_changed", Show),
    ("files_cache", Show),
    ("local_path", Show),
    ("remote_path", Show),
    ("patterns", Show),
    ("patterns_from", Show),
    ("exclude_patterns", Show),
    ("exclude_from", Show),
    ("exclude_caches", Show),
    ("exclude_if_present", Show),
    ("keep_exclude_tags", Show),
    ("exclude_nodump", Show),
    ("borgmatic_source_directory", Show),
    ("user_runtime_directory", Show),
    ("user_state_directory", Show),
    ("checkpoint_interval", Show),
    ("checkpoint_volume", Show),
    ("chunker_params", Show),
    ("compression", Show),
    ("recompress", Show),
    ("upload_rate_limit", Show),
    ("upload_buffer_size", Show),
    ("retries", Show),
    ("retry_wait", Show),
    ("temporary_directory", Show),
    ("borg_base_directory", Show),
    ("borg_config_directory", Show),
    ("borg_cache_directory", Show),
    ("borg_security_directory", Show),
    ("use_chunks_archive", Show),
    ("borg_files_cache_ttl", Show),
    (
        "borg_exit_codes",
        Tables(&[("code", Show), ("treat_as", Show)]),
    ),
    ("umask", Show),
    ("lock_wait", Show),
    ("archive_name_format", Show),
    ("match_archives", Show),
    ("archive_hostname", Show),
    ("archive_username", Show),
    ("file_list_format", Show),
    ("archive_list_format", Show),
    ("relocated_repo_access_is_ok", Show),
    ("unknown_unencrypted_repo_access_is_ok", Show),
    ("debug_passphrase", Show),
    ("display_passphrase", Show),
    ("check_i_know_what_i_am_doing", Show),
    ("msgpack_version_check", Show),
    ("unsafe_skip_path_validation_before_create", Show),
    ("keep_within", Show),
    ("keep_secondly", Show),
    ("keep_minutely", Show),
    ("keep_hourly", Show),
    ("keep_daily", Show),
    ("keep_weekly", Show),
    ("keep_monthly", Show),
    ("keep_yearly", Show),
    ("keep_13weekly", Show),
    ("keep_3monthly", Show),
    ("prefix", Show),
    ("compact_threshold", Show),
    ("checks", Tables(CHECK)),
    ("check_repositories", Repo),
    ("check_last", Show),
    ("color", Show),
    ("verbosity", Show),
    ("syslog_verbosity", Show),
    ("log_file_verbosity", Show),
    ("log_file", Show),
    ("log_file_format", Show),
    ("monitoring_verbosity", Show),
    ("log_json", Show),
    ("progress", Show),
    ("statistics", Show),
    ("quick_statistics", Show),
    ("list_details", Show),
    ("default_actions", Show),
    ("skip_actions", Show),
    ("bootstrap", Table(&[("store_config_files", Show)])),
    ("postgresql_databases", Tables(DATABASE)),
    ("mariadb_databases", Tables(DATABASE)),
    ("mysql_databases", Tables(DATABASE)),
    ("mongodb_databases", Tables(DATABASE)),
    ("influxdb_databases", Tables(DATABASE)),
    ("sqlite_databases", Tables(DATABASE)),
    ("openldap_databases", Tables(DATABASE)),
    ("ntfy", Table(&[("server", Url), ("states", Show)])),
    ("pushover", Table(&[("states", Show)])),
    ("zabbix", Table(&[("server", Url), ("states", Show)])),
    (
        "apprise",
        Table(&[
            ("services", Tables(&[("url", Url), ("label", Show)])),
            ("send_logs", Show),
            ("logs_size_limit", Show),
            ("states", Show),
        ]),
    ),
    ("healthchecks", Table(PING)),
    ("watchgoose", Table(PING)),
    (
        "uptime_kuma",
        Table(&[("push_url", Url), ("states", Show), ("verify_tls", Show)]),
    ),
    ("cronitor", Table(&[("ping_url", Url)])),
    ("pagerduty", Table(&[("send_logs", Show)])),
    (
        "loki",
        Table(&[("url", Url), ("tls", Show), ("send_logs", Show)]),
    ),
    (
        "sentry",
        Table(&[
            ("data_source_name_url", Url),
            ("monitor_slug", Show),
            ("environment", Show),
            ("states", Show),
        ]),
    ),
];

pub(super) const REPOSITORY: &[(&str, Rule)] = &[
    ("path", Repo),
    ("label", Show),
    ("encryption", Show),
    ("append_only", Show),
    ("storage_quota", Show),
    ("make_parent_directories", Show),
];

pub(super) const CHECK: &[(&str, Rule)] = &[
    ("name", Show),
    ("frequency", Show),
    ("only_run_on", Show),
    ("max_duration", Show),
    ("count_tolerance_percentage", Show),
    ("data_sample_percentage", Show),
    ("data_tolerance_percentage", Show),
];

pub(super) const DATABASE: &[(&str, Rule)] = &[
    ("name", Show),
    ("label", Show),
    ("hostname", Show),
    ("restore_hostname", Show),
    ("port", Show),
    ("restore_port", Show),
    ("container", Show),
    ("restore_container", Show),
    ("format", Show),
    ("compression", Show),
    ("tls", Show),
    ("restore_tls", Show),
    ("no_owner", Show),
    ("add_drop_database", Show),
    ("events", Show),
    ("routines", Show),
    ("tablespaces", Show),
    ("skip_names", Show),
    ("ssl_mode", Show),
    ("path", Show),
    ("restore_path", Show),
];

pub(super) const PING: &[(&str, Rule)] = &[
    ("ping_url", Url),
    ("verify_tls", Show),
    ("send_logs", Show),
    ("ping_body_limit", Show),
    ("states", Show),
    ("create_slug", Show),
];
