//! borgmatic-mqtt: lets Node-RED, Home Assistant and HTTP clients drive borgmatic
//! safely over MQTT.
//!
//! # Layout
//! - [`config`]: settings (figment layers, `_FILE` secrets) and start-up guards.
//! - [`domain`]: validated value types, ids, job states, roles, secrets; imports nothing.
//! - [`auth`]: tokens and roles, compared in constant time.
//! - [`command`]: the wire envelope and responses (re-exports the command model).
//! - [`commands`]: the command table and one file per command group (fields, checks, handler).
//! - [`service`]: one request in, one response out; knows no transport.
//! - [`jobs`]: the job engine, its log buffers, events and SQLite store.
//! - [`exec`]: executors (borgmatic process) that run as job tasks.
//! - [`mqtt`]: the MQTT adapter (topics, connection, dispatch, publishing).
//! - [`http`]: the HTTP sidecar (REST mirror, SSE, health, metrics, OpenAPI).
//! - [`docker`], [`aio`]: the Docker engine and Nextcloud AIO specifics.
//! - [`metrics`]: Prometheus metrics from job results.
//! - [`redact`]: scrubbing secrets from any outgoing text.
//! - [`startup`], [`telemetry`]: wiring, shutdown order, tracing.
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
pub mod redact;
pub mod service;
pub mod ssh_keys;
pub mod startup;
pub mod telemetry;
