//! `vc5d`: see `vc5d --help` and the README.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let log = vc5::logbuf::LogBuffer::default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(log.layer())
        .init();
    let args = vc5::daemon::Args::parse();
    match vc5::daemon::run(args, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vc5d: {e:#}");
            ExitCode::FAILURE
        }
    }
}
