//! Exit codes shared by every h5gpt binary: 0 for success, [`USAGE`] (2, as clap uses) for a
//! bad flag or value, [`RUNTIME`] (1) for a failure while running. A panic is a bug and never
//! the answer to bad input.

/// Exit code of a usage error: a bad flag, a value out of range, options that conflict.
pub const USAGE: u8 = 2;

/// Exit code of a runtime failure: unreadable or corrupt data, a held lock, a failed write.
pub const RUNTIME: u8 = 1;

/// A bad command line or configuration value; the binaries exit with [`USAGE`] on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    /// A usage error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        UsageError(message.into())
    }
}

/// The exit code for `error`: [`USAGE`] when it or any error in its source chain is a
/// [`UsageError`], else [`RUNTIME`].
pub fn exit_code(error: &(dyn std::error::Error + 'static)) -> u8 {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<UsageError>() {
            return USAGE;
        }
        next = e.source();
    }
    RUNTIME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapper(#[source] UsageError);

    #[test]
    fn usage_errors_are_found_in_the_source_chain() {
        let plain = std::io::Error::other("disk full");
        assert_eq!(exit_code(&plain), RUNTIME);
        assert_eq!(exit_code(&UsageError::new("--lr nan")), USAGE);
        assert_eq!(exit_code(&Wrapper(UsageError::new("--lr nan"))), USAGE);
    }
}
