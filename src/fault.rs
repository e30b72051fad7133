//! Whose fault an error is, and whether retrying can help (after arroyo's error
//! domains). Every library error says it; the stages use it to choose between a dead
//! letter, a retry, the upstream order and stopping, and the binary its exit code.

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
}
