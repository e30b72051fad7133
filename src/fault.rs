//! Whose fault an error is, and whether retrying can help (after arroyo's error
//! domains). Every library error says it; the stages use it to choose between a dead
//! letter, a retry, the upstream order and stopping, and the binary its exit code
//! through [`Failure`], which only a classified error converts into.

use std::error::Error;
use std::fmt;

use serde::Serialize;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The input is wrong: a malformed event, a bad setting, a missing or corrupt file,
    /// too little data. Its owner must fix it; the same input fails again.
    Input,
    /// An outside system failed (broker, disk, network): retrying later can help.
    External,
    /// A bug in eglr (or a model that computes garbage): retrying does not help.
    Bug,
}

impl Fault {
    /// Whether retrying the same operation later can succeed.
    pub fn retryable(self) -> bool {
        self == Fault::External
    }

    /// The process exit code of a command that failed with this fault, from BSD's
    /// sysexits: 65 (`EX_DATAERR`) bad input, 75 (`EX_TEMPFAIL`) an outside system (a
    /// supervisor may restart later), 70 (`EX_SOFTWARE`) a bug.
    pub fn exit_code(self) -> u8 {
        match self {
            Fault::Input => 65,
            Fault::External => 75,
            Fault::Bug => 70,
        }
    }

    /// The fault of an I/O error: a path that is missing, unreadable or holds the wrong
    /// thing is the input's; anything else (a full disk, a lost mount) is external.
    pub fn of_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound | PermissionDenied | InvalidInput | InvalidData | AlreadyExists
            | IsADirectory | NotADirectory => Fault::Input,
            _ => Fault::External,
        }
    }
}

/// An error that knows whose fault it is.
pub trait HasFault {
    fn fault(&self) -> Fault;
}

/// A file or socket that fails: see [`Fault::of_io`].
impl HasFault for std::io::Error {
    fn fault(&self) -> Fault {
        Fault::of_io(self)
    }
}

/// JSON that does not parse or does not match its type is the input's; a failed write
/// under the encoder is the file's (see [`Fault::of_io`]).
impl HasFault for serde_json::Error {
    fn fault(&self) -> Fault {
        match self.io_error_kind() {
            Some(kind) => Fault::of_io(&std::io::Error::from(kind)),
            None => Fault::Input,
        }
    }
}

/// A task that panicked or was cancelled under us is a bug.
impl HasFault for tokio::task::JoinError {
    fn fault(&self) -> Fault {
        Fault::Bug
    }
}

/// Model arithmetic fails on a bug (shapes, dtypes) or garbage weights, except where
/// the machine fails under it: an accelerator out of memory, lost or gone, or a file
/// that cannot be read. Those are outside failures: a supervisor's retry (later, with
/// less load, or on another device) can help.
impl HasFault for candle_core::Error {
    fn fault(&self) -> Fault {
        use candle_core::Error;
        match self {
            Error::Context { inner, .. }
            | Error::WithPath { inner, .. }
            | Error::WithBacktrace { inner, .. } => inner.fault(),
            Error::Cuda(e) if accelerator_failed(&e.to_string()) => Fault::External,
            Error::Io(e) => Fault::of_io(e),
            _ => Fault::Bug,
        }
    }
}

/// CUDA driver and cuBLAS statuses that say the device failed rather than the
/// program: out of memory, unavailable, gone, or broken. (cudarc's errors show their
/// status by name.)
const ACCELERATOR_FAILURES: [&str; 8] = [
    "CUDA_ERROR_OUT_OF_MEMORY",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDA_ERROR_DEVICE_UNAVAILABLE",
    "CUDA_ERROR_DEVICES_UNAVAILABLE",
    "CUDA_ERROR_NO_DEVICE",
    "CUDA_ERROR_ECC_UNCORRECTABLE",
    "CUDA_ERROR_LAUNCH_TIMEOUT",
    "CUDA_ERROR_SYSTEM_NOT_READY",
];

fn accelerator_failed(message: &str) -> bool {
    ACCELERATOR_FAILURES.iter().any(|s| message.contains(s))
}

/// A failed command, as the binary reports it: what it was doing (outermost first), the
/// error, and whose fault that is.
///
/// Only errors that say whose fault they are convert into it, so `?` on a new error
/// type that does not implement [`HasFault`] does not compile, and no failure reaches
/// the exit code unclassified:
///
/// ```
/// use eglr::fault::{Failure, Fault};
/// let failure: Failure = std::io::Error::from(std::io::ErrorKind::NotFound).into();
/// assert_eq!(failure.fault(), Fault::Input);
/// ```
///
/// ```compile_fail
/// use eglr::fault::Failure;
/// // `std::fmt::Error` does not say whose fault it is.
/// let failure: Failure = std::fmt::Error.into();
/// ```
///
/// The binary's own checks (arguments that contradict each other) say their fault
/// explicitly with [`Failure::input`].
pub struct Failure {
    fault: Fault,
    context: Vec<String>,
    error: Box<dyn Error + Send + Sync + 'static>,
}

impl<E: HasFault + Error + Send + Sync + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            fault: error.fault(),
            context: Vec::new(),
            error: Box::new(error),
        }
    }
}

/// The message of a failure the binary raised itself.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

impl Failure {
    /// A failure with its fault said by whoever raised it.
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        Self {
            fault,
            context: Vec::new(),
            error: Box::new(Message(message.into())),
        }
    }

    /// The user's input is wrong (arguments, files named on the command line).
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(Fault::Input, message)
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// The same failure, said to have happened while doing `what`.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.context.insert(0, what.to_string());
        self
    }

    /// What was being done, the error and its causes, each said once: library errors
    /// quote their cause in their own message, so a cause the message before it
    /// already quotes is not repeated.
    pub fn report(&self) -> String {
        let mut causes: Vec<String> = self.context.clone();
        let mut cause: Option<&(dyn Error + 'static)> = Some(self.error.as_ref());
        while let Some(e) = cause {
            causes.push(e.to_string());
            cause = e.source();
        }
        let mut out = String::new();
        for text in causes {
            if !out.contains(&text) {
                if !out.is_empty() {
                    out += ": ";
                }
                out += &text;
            }
        }
        out
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.fault, self.report())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.report())
    }
}

/// `context` and `with_context` on results whose error converts into a [`Failure`],
/// keeping its fault.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T, Failure>;
    fn with_context<W: fmt::Display>(self, what: impl FnOnce() -> W) -> Result<T, Failure>;
}

impl<T, E: Into<Failure>> Context<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T, Failure> {
        self.map_err(|e| e.into().context(what))
    }

    fn with_context<W: fmt::Display>(self, what: impl FnOnce() -> W) -> Result<T, Failure> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_only_external_faults_are_retryable() {
        let all = [Fault::Input, Fault::External, Fault::Bug];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(|f| f.exit_code()).collect();
        assert_eq!(codes.len(), 3);
        assert!(
            !codes.contains(&1),
            "1 stays the code of an unclassified error"
        );
        assert_eq!(all.map(Fault::retryable), [false, true, false]);
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(Fault::of_io(&missing), Fault::Input);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Fault::of_io(&reset), Fault::External);
    }

    /// A device out of memory or lost is the machine's failure (retry), with context
    /// around it or not; a shape mismatch or another CUDA status is a bug.
    #[test]
    fn an_accelerator_that_fails_is_an_outside_failure_and_a_shape_error_a_bug() {
        let cuda = |status: &str| {
            candle_core::Error::Cuda(Box::new(std::io::Error::other(format!(
                "DriverError({status}, \"...\")"
            ))))
        };
        assert_eq!(cuda("CUDA_ERROR_OUT_OF_MEMORY").fault(), Fault::External);
        assert_eq!(
            cuda("CUDA_ERROR_DEVICE_UNAVAILABLE")
                .context("decoding a batch")
                .fault(),
            Fault::External
        );
        assert_eq!(cuda("CUDA_ERROR_INVALID_VALUE").fault(), Fault::Bug);
        let shapes =
            candle_core::Tensor::zeros((2, 3), candle_core::DType::F32, &candle_core::Device::Cpu)
                .and_then(|a| a.matmul(&a))
                .expect_err("a shape mismatch");
        assert_eq!(shapes.fault(), Fault::Bug);
    }

    /// A failure keeps its error's fault through any context, and says each cause once.
    #[test]
    fn a_failure_keeps_its_fault_and_says_each_cause_once() {
        let missing: Result<(), _> = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let failure = missing
            .context("reading x.toml")
            .context("loading the pipeline")
            .expect_err("failed");
        assert_eq!(failure.fault(), Fault::Input);
        assert_eq!(failure.fault().exit_code(), 65);
        assert!(
            failure
                .report()
                .starts_with("loading the pipeline: reading x.toml: "),
            "{failure}"
        );
        let quoted = Failure::new(Fault::External, "disk gone").context("cannot read x: disk gone");
        assert_eq!(quoted.report(), "cannot read x: disk gone");
        assert_eq!(quoted.fault(), Fault::External);
    }
}
