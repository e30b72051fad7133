//! Cross-field checks of a pipeline file's sections. Each section lives with the module
//! that uses it and checks itself; `config` names the file and the origin of a bad key.

/// A failed check: (the full key, what is wrong with its value).
pub type Problem = (&'static str, String);

/// `Ok` when `ok`, else the problem with `key`, its message built only when needed.
pub fn check(ok: bool, key: &'static str, message: impl FnOnce() -> String) -> Result<(), Problem> {
    if ok {
        Ok(())
    } else {
        Err((key, message()))
    }
}
