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

/// Checks count option `flag` (as typed: `--top-k`): at least 1.
pub fn check_at_least_one(flag: &str, value: usize) -> Result<(), UsageError> {
    if value == 0 {
        return Err(UsageError::new(format!("{flag} 0: must be at least 1")));
    }
    Ok(())
}

/// Checks number option `flag`: finite and within `[min, max]` (`max` may be infinite: no
/// upper bound). NaN and ±∞ are refused.
pub fn check_finite_within(flag: &str, value: f64, min: f64, max: f64) -> Result<(), UsageError> {
    if !value.is_finite() || value < min || value > max {
        let range = if max.is_infinite() {
            format!("a finite number, at least {min}")
        } else {
            format!("a finite number in [{min}, {max}]")
        };
        return Err(UsageError::new(format!("{flag} {value}: must be {range}")));
    }
    Ok(())
}

/// `message`, then on a line of its own what to do about it: `"{message}\n---> HINT: {hint}"`,
/// the one spelling of a hint in every h5gpt error (after llm.c's).
pub fn with_hint(message: impl std::fmt::Display, hint: impl std::fmt::Display) -> String {
    format!("{message}\n---> HINT: {hint}")
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

/// The exit code of a command's result: 0, or the error printed to stderr as
/// `NAME: error: …` (with its chain of causes, as anyhow's `{:#}` prints it) and the code
/// [`exit_code`] gives it. Every binary's `main` ends here.
pub fn report<E>(name: &str, result: Result<(), E>) -> std::process::ExitCode
where
    E: std::fmt::Display + AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::ExitCode::from(exit_code(e.as_ref()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_hint_puts_the_hint_on_its_own_line() {
        assert_eq!(
            with_hint(
                "x.h5: truncated",
                format_args!("copy it again ({} bytes)", 3)
            ),
            "x.h5: truncated\n---> HINT: copy it again (3 bytes)"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapper(#[source] UsageError);

    #[test]
    fn numeric_checks_name_the_flag_and_refuse_nan() {
        assert!(check_at_least_one("--top-k", 1).is_ok());
        let e = check_at_least_one("--top-k", 0).unwrap_err().to_string();
        assert_eq!(e, "--top-k 0: must be at least 1");
        assert!(check_finite_within("--temperature", 0.0, 0.0, f64::INFINITY).is_ok());
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            let e = check_finite_within("--temperature", bad, 0.0, f64::INFINITY).unwrap_err();
            assert!(e.to_string().starts_with("--temperature "), "{e}");
        }
        assert!(check_finite_within("--mfu", 1.5, 0.0, 1.0).is_err());
    }

    #[test]
    fn usage_errors_are_found_in_the_source_chain() {
        let plain = std::io::Error::other("disk full");
        assert_eq!(exit_code(&plain), RUNTIME);
        assert_eq!(exit_code(&UsageError::new("--lr nan")), USAGE);
        assert_eq!(exit_code(&Wrapper(UsageError::new("--lr nan"))), USAGE);
    }
}
