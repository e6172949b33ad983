//! `borgmatic-mqtt`: settings → telemetry → run until a signal.
//!
//! Uses the library's `config`, `telemetry`, `startup` and `askpass` (the binary's
//! second mode).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use borgmatic_mqtt::config::Settings;
use borgmatic_mqtt::{startup, telemetry};

#[derive(Parser)]
#[command(version, about = "Drive borgmatic backups over MQTT and HTTP")]
struct Cli {
    /// TOML configuration file (default: /etc/borgmatic-mqtt/config.toml when it exists).
    #[arg(long, global = true, env = "BORGMATIC_MQTT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the worker (the default).
    Run,
    /// Print the effective configuration (secrets redacted) and every problem.
    CheckConfig,
}

fn main() -> ExitCode {
    // Everything the worker writes (job store, audit trail, keys, run dirs) is for
    // its own user only; borg's own default umask is the same.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Started by ssh as SSH_ASKPASS: answer the prompt and nothing else.
    if borgmatic_mqtt::askpass::requested() {
        use std::os::unix::ffi::OsStrExt;
        let prompt = std::env::args_os().nth(1).unwrap_or_default();
        return ExitCode::from(borgmatic_mqtt::askpass::run(prompt.as_bytes()) as u8);
    }
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(problems) => {
            eprintln!("configuration error:");
            for p in problems {
                eprintln!("  - {p}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::CheckConfig => runtime.block_on(check_config(settings)),
        Cmd::Run => {
            telemetry::init(
                settings.log.format,
                &settings.log.level.clone(),
                std::io::stderr,
            );
            let run = async {
                let listener = startup::bind(&settings).await?;
                startup::run(settings, listener, startup::signal()).await
            };
            match runtime.block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("{e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

async fn check_config(settings: Settings) -> ExitCode {
    let (problems, version) = startup::preflight(&settings).await;
    let mut shown = serde_json::to_value(&settings).unwrap_or_default();
    if let Some(obj) = shown.as_object_mut() {
        obj.insert("effective_base_topic".into(), settings.base_topic().into());
        obj.insert(
            "borgmatic_version".into(),
            version.map(|v| v.to_string()).into(),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
    if problems.is_empty() {
        eprintln!("configuration OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("configuration problems:");
        for p in problems {
            eprintln!("  - {p}");
        }
        ExitCode::FAILURE
    }
}
