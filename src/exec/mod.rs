//! Executors: what actually runs a job. They implement the engine's `Task` and
//! know nothing about transports.
//!
//! Each executor may import `domain` (value types), `config`, `jobs` (the `Task`
//! interface) and its siblings; besides, the borgmatic executor imports `askpass`
//! and `borg_config` (ssh keys), `docker_exec` imports `docker`, and the exec policy
//! `redact` (quoting). None imports `command`, `mqtt`, `http` or `service`.

pub mod borgmatic;
pub mod borgmatic_log;
pub mod deny;
pub mod docker_exec;
pub mod policy;
pub mod process;
pub mod restored;
pub mod roots;
pub mod skipped;
pub mod ssh;
pub mod verify;

#[cfg(test)]
mod argv_props;
