//! borgmatic-mqtt: lets Node-RED, Home Assistant and HTTP clients drive borgmatic
//! safely over MQTT.
//!
//! # Layout
//! - [`config`]: settings (one struct per TOML section, figment layers, `_FILE`
//!   secrets) and the start-up guards.
//! - [`domain`]: validated value types, ids, job states, roles, secrets; imports nothing.
//! - [`auth`]: tokens and roles, compared in constant time.
//! - [`command`]: the wire envelope and responses (re-exports the command model).
//! - [`commands`]: the command table and one file per command group (fields, checks, handler).
//! - [`service`]: one request in, one response out; knows no transport.
//! - [`jobs`]: the job engine, its log buffers, events and SQLite store.
//! - [`exec`]: executors that run as job tasks and the only argv builders:
//!   `borgmatic/` (action, argv, task, outcome, version), `verify/` (the restore
//!   drill), `docker_exec`, `ssh`, `process`; `policy/` and `deny/` (what
//!   `container/exec` may run); `roots` (confined paths), `skipped`, `restored`.
//! - [`borg_config`]: reading borgmatic configurations (locations, the redacted
//!   `config/show` copy, ssh identity files); [`locks`]: borg's lock files.
//! - [`mqtt`]: the MQTT adapter (topics, connection, dispatch, publishing).
//! - [`http`]: the HTTP sidecar (REST mirror, SSE, health, metrics, OpenAPI).
//! - [`docker`], [`aio`]: the Docker engine and Nextcloud AIO specifics.
//! - [`health`]: repository health from the repository itself (probes).
//! - [`emergency`]: what is stuck, and `emergency/stop`.
//! - [`ssh_keys`], [`askpass`]: SSH keys of remote repositories and the askpass
//!   helper that unlocks them.
//! - [`metrics`]: Prometheus metrics from job results (link status passed in).
//! - [`redact`]: scrubbing secrets from any outgoing text.
//! - [`reconcile`]: start-up repair of what a killed worker left behind.
//! - [`startup`], [`telemetry`]: wiring, shutdown order, tracing.
//!
//! Each module's header says what it may import; `scripts/import-cycles --edges`
//! prints what it does import.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aio;
pub mod askpass;
pub mod auth;
pub mod borg_config;
pub mod command;
pub mod commands;
pub mod config;
pub mod docker;
pub mod domain;
pub mod emergency;
pub mod exec;
pub mod health;
pub mod http;
pub mod jobs;
pub mod locks;
pub mod metrics;
pub mod mqtt;
pub mod reconcile;
pub mod redact;
pub mod service;
pub mod ssh_keys;
pub mod startup;
pub mod telemetry;
