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

/// Make a panic (a bug) in any thread exit the process with 1 (`internal`) and one line on
/// stderr, after the usual clean-up (the temp files of atomic writes in flight removed, so no
/// half-written file stays): never Rust's 101, never an abort, never a thread that dies while
/// the others go on. Every binary installs it first thing.
///
/// The line is the panic's message and place, its line breaks folded, and nothing else: no
/// backtrace, no values the panicking code did not put in its message. libjpeg's fatal errors
/// unwind with `resume_unwind`, which runs no hook, and stay the decoder's own to catch.
pub fn install_panic_hook(report: Report) {
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = format!("internal error: bug: {msg}{place}").replace(['\n', '\r'], " ");
        crate::atomic::remove_live_temps_from_panic();
        let code = crate::ExitStatus::Internal;
        // Straight to stderr: the subscriber may be what panicked.
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = match report {
            Report::Log => writeln!(err, "ERROR {line} (exit {} {})", code.code(), code.name()),
            Report::Plain => writeln!(err, "error: {line}"),
        };
        drop(err);
        std::process::exit(code.code().into());
    }));
}
