//! Request ids: accepted from the client when well formed, generated otherwise.
//!
//! The id ends up in the logs, so its alphabet is restricted: a client cannot smuggle message
//! text, line breaks or log-format characters through it.

/// Response (and request) header that carries the id.
pub const HEADER: &str = "x-request-id";

/// Longest accepted id, in bytes.
pub const MAX_LEN: usize = 128;

/// Place in a request that carries a client's request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The [`HEADER`] request header.
    Header,
    /// The `request_id` field of the JSON body.
    Body,
}

/// Returns whether `id` is 1 to [`MAX_LEN`] ASCII letters, digits, `-`, `_`, `.` or `:`.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Generates a random id (UUID v4).
pub fn generate() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_id_formats_and_rejects_the_rest() {
        assert!(is_valid(&generate()));
        assert!(is_valid("chat-42:msg.7_b"));
        for bad in ["", "a b", "id\nforged log line", "é", "{\"json\":1}", &"x".repeat(MAX_LEN + 1)] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }
}
