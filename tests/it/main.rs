//! The integration tests: one binary (linked once), one module per area, shared
//! helpers under `helpers/` (a real Mosquitto, real borg and borgmatic repositories,
//! the worker in-process or as a subprocess, MQTT/HTTP clients, sshd, Docker).

mod helpers;

mod admin_ops;
mod api_schema;
mod archive_files;
mod archive_ops;
mod backup;
mod config_inspection;
mod confinement;
mod deployment;
mod docker;
mod dos;
mod edge;
mod exec_policy;
mod faults;
mod home_assistant_core;
mod homeassistant;
mod http;
mod injection;
mod lifecycle;
mod maintenance;
mod nodered;
mod operator;
mod partial;
mod predecessor;
mod quickstart;
mod requests;
mod restore;
mod secrets;
mod stack;
mod startup;
mod streaming;
mod verify;
