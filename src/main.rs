use std::process::ExitCode;

use clap::Parser;
use figment::providers::Serialized;
use wallet::cli::{Cli, Command};
use wallet::config::Config;
use wallet::telemetry::LogOutput;

/// Every request allocates and frees many small buffers across threads, where the system
/// allocator spent about a tenth of `serve`'s CPU (perf, one hot wallet).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(
        cli.global.config.as_deref(),
        Serialized::defaults(cli.config_overrides()),
    ) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let output = match cli.command {
        Command::Serve(_) | Command::Work(_) | Command::Run { .. } => LogOutput::Queued,
        Command::Migrate(_)
        | Command::Bench(_)
        | Command::Token(_)
        | Command::Verify(_)
        | Command::Lag(_)
        | Command::Reposition(_) => LogOutput::Immediate,
    };
    // Held to the end: dropping it writes the log lines still queued.
    let _log = match wallet::telemetry::init(&config.log, output) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve(_) => wallet::startup::serve(config),
        Command::Work(_) => wallet::startup::work(config),
        Command::Migrate(_) => wallet::startup::migrate(config),
        Command::Run { .. } => wallet::startup::run(config),
        Command::Bench(flags) => {
            wallet::startup::bench(flags.scenarios(&config.database), flags.json)
        }
        Command::Token(command) => wallet::startup::token(config, command),
        Command::Verify(flags) => wallet::startup::verify(config, flags.json),
        Command::Lag(flags) => wallet::startup::lag(config, flags.json),
        Command::Reposition(flags) => wallet::startup::reposition(config, flags.partition),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
