//! Key header parsing (`app::auth::bearer_secret`, `ids::well_formed_secret`): any header
//! value gives a well-formed `rsk_<ULID>` taken from it or a 401; every real secret, in any
//! scheme case and spacing, is found exactly; request ids are accepted only when sane.

use http::{HeaderMap, HeaderValue};
use mesh::app::auth::bearer_secret;
use mesh::ids::{hash_secret, sane_request_id, well_formed_secret, SECRET_PREFIX};

use crate::fuzz::rng::Bytes;

pub fn target(data: &[u8]) {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        headers.insert(http::header::AUTHORIZATION, value.clone());
        match bearer_secret(&headers) {
            Ok(secret) => {
                assert!(well_formed_secret(secret));
                assert_eq!(secret.len(), SECRET_PREFIX.len() + 26);
                assert!(value.to_str().is_ok_and(|v| v.contains(secret)));
                assert_eq!(hash_secret(secret).len(), 64);
            }
            Err(err) => assert_eq!(err.status().as_u16(), 401, "{err:?}"),
        }
    }
    let text = String::from_utf8_lossy(data);
    if well_formed_secret(&text) {
        assert!(text.starts_with(SECRET_PREFIX) && text.len() == 30);
    }
    if sane_request_id(&text) {
        assert!(text.len() <= 128 && !text.contains(['\r', '\n', ' ', '"']));
    }
    // A real secret, framed the way clients send it, is always found.
    let mut input = Bytes::new(data);
    let ulid = ulid::Ulid::from(u128::from(input.u64()) << 64 | u128::from(input.u64()) >> 1);
    let secret = format!("{SECRET_PREFIX}{ulid}");
    let scheme = ["Bearer", "bearer", "BEARER", "bEaReR"][usize::from(input.u8() % 4)];
    let pad = |n: u8| " ".repeat(usize::from(n % 3));
    let framed = format!("{}{scheme} {}{secret}{}", pad(input.u8()), pad(input.u8()), pad(input.u8()));
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&framed) {
        headers.insert(http::header::AUTHORIZATION, value);
        assert_eq!(bearer_secret(&headers).ok(), Some(secret.as_str()), "{framed:?}");
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    [
        "Bearer rsk_01JDEVKEY00000000000000000",
        "bearer   rsk_01ARZ3NDEKTSV4RRFFQ69G5FAV  ",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer rsk_short",
        "Bearer sk-01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "Bearer rsk_8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "req_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub const TOKENS: &[&str] = &["Bearer ", "rsk_", "\t", "\u{80}", "Z", "0", "8"];
