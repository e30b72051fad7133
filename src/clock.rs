//! Wall-clock time as the pipeline records it: milliseconds since the Unix epoch.

/// Now, in milliseconds since the Unix epoch (0 on a clock set before 1970).
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
