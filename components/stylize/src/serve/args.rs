//! `stylize serve`'s command line: [`ServeArgs`] lives in the contract crate
//! (`kubestyle_manifest::command::serve`), where `pipeline render --serve` writes it.

pub use kubestyle_manifest::command::serve::{SUBCOMMAND, ServeArgs};

/// Whether a command line (without the program name) is `serve …`.
pub fn is_serve(argv: &[std::ffi::OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == SUBCOMMAND)
}
