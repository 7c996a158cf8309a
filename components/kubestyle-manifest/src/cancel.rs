//! Stopping cleanly on SIGINT and SIGTERM.
//!
//! Every stage binary calls [`install`] first thing. On the first SIGINT or SIGTERM:
//!
//! 1. the process is marked cancelled ([`signal`]): from then on no [`crate::AtomicFile`] is
//!    created or committed, so no output and no manifest appears after the signal;
//! 2. the temp files of every atomic write in flight are removed;
//! 3. the binary's own clean-up runs (`upload` aborts its in-flight multipart uploads);
//! 4. the process exits with 128 + the signal number: 130 for SIGINT, 143 for SIGTERM, the
//!    shell's and Kubernetes' convention for "stopped by that signal".
//!
//! A second signal during step 3 (2 s or more after the first) exits at once (the temp files
//! are already gone).

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

pub use signal_hook::consts::signal::{SIGINT, SIGTERM};

/// Exit code after SIGINT.
pub const EXIT_SIGINT: u8 = crate::ExitStatus::Interrupted as u8;
/// Exit code after SIGTERM.
pub const EXIT_SIGTERM: u8 = crate::ExitStatus::Terminated as u8;

/// A repeated signal sooner than this after the first is a duplicate, not "exit now".
const REPEAT_IS_DUPLICATE: Duration = Duration::from_secs(2);

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static CLEANED_UP: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// The exit code for a process stopped by `signal`: 128 + its number.
pub fn exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

/// `SIGINT`, `SIGTERM` or the number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".into(),
        SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// The signal that cancelled this process, if one did.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub fn is_cancelled() -> bool {
    signal().is_some()
}

/// The error a refused step returns once the process is cancelled.
pub fn interrupted(signal: i32) -> crate::StageError {
    crate::StageError::Internal(format!("interrupted by {}", signal_name(signal)))
}

/// `Err` once the process is cancelled (for loops that want to stop early).
pub fn check() -> Result<(), crate::StageError> {
    match signal() {
        Some(s) => Err(interrupted(s)),
        None => Ok(()),
    }
}

/// Mark the process cancelled by `signal` and remove the temp files of every atomic write in
/// flight. Later atomic writes are refused. Returns false when it already was cancelled.
pub fn cancel(signal: i32) -> bool {
    let first = SIGNAL
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    crate::atomic::remove_live_temps();
    first
}

/// Handle SIGINT and SIGTERM as described in the module docs. `before_exit` is the binary's
/// own clean-up (it runs on the signal thread after the temp files are removed); it should
/// bound its own time.
pub fn install(before_exit: impl FnOnce(i32) + Send + 'static) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("kubestyle-signals".into())
        .spawn(move || {
            let mut first: Option<(i32, std::time::Instant)> = None;
            let mut before_exit = Some(before_exit);
            for sig in signals.forever() {
                if let Some((s, at)) = first {
                    // The same signal twice at once is one stop: a terminal's Ctrl-C reaches
                    // `pipeline run` and its stage, and `pipeline run` forwards it too.
                    if at.elapsed() < REPEAT_IS_DUPLICATE {
                        continue;
                    }
                    tracing::warn!("{} again: exiting now", signal_name(sig));
                    std::process::exit(exit_code(s).into());
                }
                first = Some((sig, std::time::Instant::now()));
                tracing::warn!(
                    "{} received: stopping, removing temp files (exit {})",
                    signal_name(sig),
                    exit_code(sig)
                );
                cancel(sig);
                let hook = before_exit.take();
                // On its own thread, so that a second signal is still heard.
                std::thread::spawn(move || {
                    if let Some(h) = hook {
                        h(sig);
                    }
                    let (done, cv) = &CLEANED_UP;
                    *done.lock().unwrap_or_else(PoisonError::into_inner) = true;
                    cv.notify_all();
                    std::process::exit(exit_code(sig).into());
                });
            }
        })?;
    Ok(())
}

/// The exit code of a stage's main: [`crate::telemetry::finish`] of its result — unless a
/// signal cancelled the process: then wait (at most `max_wait`) for the clean-up to finish and
/// return 128 + the signal number. Work that fails *because* of the cancellation (a refused
/// commit) must not exit with that failure's code.
pub fn finish<T, E: crate::error::ExitCoded>(result: Result<T, E>, max_wait: Duration) -> ExitCode {
    let Some(sig) = signal() else {
        return crate::telemetry::finish(result);
    };
    let (done, cv) = &CLEANED_UP;
    let guard = done.lock().unwrap_or_else(PoisonError::into_inner);
    let (guard, _) = cv
        .wait_timeout_while(guard, max_wait, |d| !*d)
        .unwrap_or_else(PoisonError::into_inner);
    if *guard {
        // The signal thread is exiting with that code: one exit, not two racing.
        drop(guard);
        loop {
            std::thread::park();
        }
    }
    tracing::warn!(
        "clean-up after {} took over {max_wait:?}: exiting anyway",
        signal_name(sig)
    );
    ExitCode::from(exit_code(sig))
}

/// [`install`], or the exit code of the failure to install it.
pub fn install_or_exit(before_exit: impl FnOnce(i32) + Send + 'static) -> Result<(), ExitCode> {
    install(before_exit).map_err(|e| {
        crate::telemetry::finish(Err::<(), _>(crate::StageError::Internal(format!(
            "cannot handle SIGINT/SIGTERM: {e}"
        ))))
    })
}
