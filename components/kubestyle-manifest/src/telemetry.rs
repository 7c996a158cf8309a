//! Logging set-up shared by every binary: human-readable lines on stderr, `RUST_LOG` to tune.

/// Install the global subscriber. Default level `info` for kubestyle crates and `warn` for
/// dependencies (the AWS SDK is chatty at `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,kubestyle=info,download=info,upload=info,package_model=info,stylize=info,pipeline=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// How [`finish_as`] tells the user about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A log line (`ERROR … (exit N name)`): the stages, whose stderr is a log.
    Log,
    /// `error: …` on stderr, nothing else: `pipeline`, a command people read.
    Plain,
}

/// Turn a stage's result into the process exit code, logging the error (the message names what
/// went wrong and never carries credentials).
pub fn finish<T, E: crate::error::ExitCoded>(result: Result<T, E>) -> std::process::ExitCode {
    finish_as(result, Report::Log)
}

/// Every binary's exit: success, or the error reported as `report` says and its exit code.
pub fn finish_as<T, E: crate::error::ExitCoded>(
    result: Result<T, E>,
    report: Report,
) -> std::process::ExitCode {
    match result {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            match report {
                Report::Log => {
                    tracing::error!("{e} (exit {code} {})", e.exit_name().unwrap_or("unnamed"))
                }
                Report::Plain => eprintln!("error: {e}"),
            }
            std::process::ExitCode::from(code)
        }
    }
}
