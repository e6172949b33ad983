//! Executors: what actually runs a job. They implement the engine's `Task` and
//! know nothing about transports.
//!
//! Each executor may import `command` (value types), `config`, `jobs` (the `Task`
//! interface) and its siblings; none imports `mqtt`, `http` or `service`.

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
