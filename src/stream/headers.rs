//! The Kafka record headers eglr reads and writes: the W3C trace context passed from a
//! request to its result (so a trace spans the re-ranking stage), a result's identity
//! (consumers can route or filter without decoding JSON), and a dead letter's original
//! headers with its provenance.

use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

/// Longest trace header passed through. Trace Context bounds `tracestate` at 512
/// characters and `traceparent` is 55; a longer value is not one and is dropped.
const MAX_TRACE_HEADER_BYTES: usize = 512;

/// The most bytes of a request's own headers a dead letter copies; the producer's
/// message size keeps room for them (see `serve::max_dead_letter_payload`).
pub const MAX_COPIED_HEADER_BYTES: usize = 32 * 1024;

/// What a header costs in a record beyond its key and value, at most (two length
/// varints of up to 5 bytes in the record format).
const HEADER_FRAMING_BYTES: usize = 10;

/// A request's W3C Trace Context (<https://www.w3.org/TR/trace-context/>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The trace context of a request's headers. An invalid `traceparent` is dropped
    /// and `tracestate` with it (Trace Context §4.3: without a valid parent the state
    /// means nothing); the headers come from outside, so nothing here can fail.
    pub fn from_headers(headers: Option<&BorrowedHeaders>) -> Self {
        let value = |key: &str| {
            headers?
                .iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value)
                .filter(|v| v.len() <= MAX_TRACE_HEADER_BYTES)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        };
        match value("traceparent").filter(|t| is_traceparent(t)) {
            Some(parent) => Self {
                traceparent: Some(parent),
                tracestate: value("tracestate"),
            },
            None => Self::default(),
        }
    }
}

/// Whether `value` is a `traceparent` of Trace Context §3.2: `version-traceid-parentid-
/// flags` in lower-case hex of 2, 32, 16 and 2 digits, trace and parent ids not all
/// zero, version not `ff`. A later version may append fields after the flags.
fn is_traceparent(value: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let not_zero = |s: &str| s.bytes().any(|b| b != b'0');
    let mut fields = value.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let rest_allowed = version != "00" || fields.next().is_none();
    hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && not_zero(trace)
        && hex(parent, 16)
        && not_zero(parent)
        && hex(flags, 2)
        && rest_allowed
}

/// A result's headers: its request id and model version, its content type, and the
/// request's trace context.
pub fn result_headers(request_id: &str, model_version: &str, trace: &TraceContext) -> OwnedHeaders {
    let fixed = [
        ("request_id", Some(request_id)),
        ("model_version", Some(model_version)),
        ("content-type", Some("application/json")),
        ("traceparent", trace.traceparent.as_deref()),
        ("tracestate", trace.tracestate.as_deref()),
    ];
    fixed
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// The request's own headers, in order, as far as [`MAX_COPIED_HEADER_BYTES`] allows,
/// then `provenance`; a header that does not fit is left out and counted in
/// `headers.dropped`.
pub fn dead_letter_headers(
    original: Option<&BorrowedHeaders>,
    provenance: &[(&str, &str)],
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    let (mut room, mut dropped) = (MAX_COPIED_HEADER_BYTES, 0usize);
    for h in original.into_iter().flat_map(|o| o.iter()) {
        // Each header also costs its record framing: a few varint bytes.
        let size = h.key.len() + h.value.map_or(0, <[u8]>::len) + HEADER_FRAMING_BYTES;
        if size > room {
            dropped += 1;
            continue;
        }
        room -= size;
        headers = headers.insert(h);
    }
    let dropped = dropped.to_string();
    let count = (dropped != "0").then_some(("headers.dropped", dropped.as_str()));
    provenance
        .iter()
        .copied()
        .chain(count)
        .fold(headers, |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_follows_the_specification() {
        assert!(is_traceparent(VALID));
        // A later version may carry more fields; version 00 may not.
        assert!(is_traceparent(&format!("01{}-extra", &VALID[2..])));
        assert!(!is_traceparent(&format!("{VALID}-extra")));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(!is_traceparent(bad), "{bad:?} accepted");
        }
    }

    fn keys(h: &OwnedHeaders) -> Vec<String> {
        h.iter()
            .map(|x| {
                let value = x.value.map(String::from_utf8_lossy).unwrap_or_default();
                format!("{}={value}", x.key)
            })
            .collect()
    }

    #[test]
    fn a_result_carries_its_identity_and_only_the_trace_it_was_given() {
        let trace = TraceContext {
            traceparent: Some(VALID.into()),
            tracestate: None,
        };
        assert_eq!(
            keys(&result_headers("r1", "v000002", &trace)),
            [
                "request_id=r1",
                "model_version=v000002",
                "content-type=application/json",
                &format!("traceparent={VALID}"),
            ]
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_headers_that_fit_and_counts_the_rest() {
        let big = vec![b'x'; MAX_COPIED_HEADER_BYTES];
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "tenant",
                value: Some("a"),
            })
            .insert(Header {
                key: "blob",
                value: Some(&big),
            })
            .insert(Header {
                key: "tenant",
                value: Some("b"),
            });
        let h = dead_letter_headers(Some(original.as_borrowed()), &[("error.kind", "x")]);
        assert_eq!(
            keys(&h),
            ["tenant=a", "tenant=b", "error.kind=x", "headers.dropped=1"]
        );
        let none = dead_letter_headers(None, &[("error.kind", "x")]);
        assert_eq!(keys(&none), ["error.kind=x"]);
    }
}
