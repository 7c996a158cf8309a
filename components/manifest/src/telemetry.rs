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

/// Turn a stage's result into the process exit code, logging the error (the message names what
/// went wrong and never carries credentials).
pub fn finish<T>(result: Result<T, crate::StageError>) -> std::process::ExitCode {
    match result {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let status = e.exit_status();
            tracing::error!("{e} (exit {} {})", status.code(), status.name());
            status.into()
        }
    }
}
