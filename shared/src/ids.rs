//! Identifiers: request ids, API key secrets (CSPRNG, shown once, stored as SHA-256) and key ids.

use sha2::{Digest, Sha256};
use ulid::Ulid;

/// Prefix of every API key secret.
pub const SECRET_PREFIX: &str = "rsk_";

/// A fresh request id, `req_<ULID>`.
pub fn new_request_id() -> String {
    format!("req_{}", Ulid::new())
}

/// Accepts a caller-supplied `x-request-id` when it is short and made of safe characters.
pub fn sane_request_id(candidate: &str) -> bool {
    !candidate.is_empty()
        && candidate.len() <= 128
        && candidate.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A ULID whose 128 bits all come from the operating system's CSPRNG.
fn random_ulid() -> Result<Ulid, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    // Keep the timestamp part meaningful (creation time), randomness in the remaining 80 bits.
    let now = Ulid::new().timestamp_ms();
    let random = u128::from_be_bytes(bytes) & ((1u128 << 80) - 1);
    Ok(Ulid::from_parts(now, random))
}

/// A new API key: the secret (shown once), its hash (stored) and its public id.
#[derive(Debug, Clone)]
pub struct NewKeySecret {
    pub secret: String,
    pub hash: String,
    pub id: String,
}

/// Creates a key secret `rsk_<ULID>` with 80 bits from the CSPRNG, and a public id `key_<ULID>`.
pub fn new_key_secret() -> Result<NewKeySecret, getrandom::Error> {
    let secret = format!("{SECRET_PREFIX}{}", random_ulid()?);
    let hash = hash_secret(&secret);
    let id = format!("key_{}", random_ulid()?);
    Ok(NewKeySecret { secret, hash, id })
}

/// Hex SHA-256 of a full secret, the only form in which keys are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// True when `secret` has the shape `rsk_<ULID>` (checked before any lookup).
pub fn well_formed_secret(secret: &str) -> bool {
    secret.strip_prefix(SECRET_PREFIX).is_some_and(|rest| rest.len() == 26 && Ulid::from_string(rest).is_ok())
}

/// Prefix of stored response ids (the gateway's own, and OpenAI's passed through).
pub const RESPONSE_ID_PREFIX: &str = "resp_";

/// Prefix of template ids.
pub const TEMPLATE_ID_PREFIX: &str = "tpl_";

/// Longest object id accepted in a path, prefix included. The gateway's ids are the prefix and
/// 26 characters; OpenAI's response ids are about 50.
pub const MAX_OBJECT_ID_LEN: usize = 128;

/// Whether `id` can be an object id with this prefix: the prefix, then letters, digits, `_` or
/// `-`, at most [`MAX_OBJECT_ID_LEN`] bytes in all. Anything else is answered 404 without a
/// store read.
pub fn well_formed_id(prefix: &str, id: &str) -> bool {
    id.len() <= MAX_OBJECT_ID_LEN
        && id.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// A new object id with a prefix (`resp_`, `msg_`, `tpl_`, ...).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", Ulid::new().to_string().to_ascii_lowercase())
}

/// Length of the ULID in the gateway's object ids.
const ULID_LEN: usize = 26;

/// An item id of the response `response_id`: the item prefix (`msg_`, `fc_`, `rs_`, ...), the
/// response's own ULID, then `slot` (`o3` for output item 3, `i0` for input item 0). The stored
/// response that holds an item is thereby known from the item's id alone (`item_reference`).
pub fn item_id(prefix: &str, response_id: &str, slot: &str) -> String {
    let ulid = response_id.strip_prefix(RESPONSE_ID_PREFIX).unwrap_or(response_id);
    format!("{prefix}{ulid}{slot}")
}

/// The id of the response that holds the item `item_id` (see [`item_id`]); `None` for an id the
/// gateway did not mint in that form.
pub fn response_of_item(item_id: &str) -> Option<String> {
    if item_id.len() > MAX_OBJECT_ID_LEN {
        return None;
    }
    let (_, rest) = item_id.split_once('_')?;
    let ulid = rest.get(..ULID_LEN)?;
    let slot = &rest[ULID_LEN..];
    let valid = ulid.bytes().all(|b| b.is_ascii_alphanumeric())
        && Ulid::from_string(&ulid.to_ascii_uppercase()).is_ok()
        && slot.len() >= 2
        && slot.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| format!("{RESPONSE_ID_PREFIX}{ulid}"))
}

/// The tag Mesh gives a provider for abuse monitoring when the client gave none: a hash of the
/// owner (the provider never learns the tenant's name), at most 64 characters as OpenAI's
/// `safety_identifier` allows.
pub fn safety_identifier(owner: &str) -> String {
    let digest = Sha256::digest(format!("mesh-owner:{owner}").as_bytes());
    format!("mesh_{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_well_formed_and_hashed() {
        let key = new_key_secret().unwrap();
        assert!(well_formed_secret(&key.secret));
        assert_eq!(key.hash.len(), 64);
        assert_eq!(key.hash, hash_secret(&key.secret));
        assert!(!well_formed_secret("rsk_short"));
        assert!(!well_formed_secret("sk-01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        let other = new_key_secret().unwrap();
        assert_ne!(key.secret, other.secret);
    }

    #[test]
    fn object_ids_have_a_grammar() {
        assert!(well_formed_id(RESPONSE_ID_PREFIX, &new_id(RESPONSE_ID_PREFIX)));
        assert!(well_formed_id(RESPONSE_ID_PREFIX, "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"));
        assert!(well_formed_id(TEMPLATE_ID_PREFIX, &new_id(TEMPLATE_ID_PREFIX)));
        let longest = format!("tpl_{}", "a".repeat(MAX_OBJECT_ID_LEN - 4));
        assert!(well_formed_id(TEMPLATE_ID_PREFIX, &longest));
        for bad in ["resp_", "resp", "tpl_abc", "resp_a b", "resp_a/b", "resp_ü", "resp_a%2F"] {
            assert!(!well_formed_id(RESPONSE_ID_PREFIX, bad), "{bad}");
        }
        assert!(!well_formed_id(TEMPLATE_ID_PREFIX, &format!("{longest}a")));
        assert!(!well_formed_id(RESPONSE_ID_PREFIX, &format!("resp_{}", "a".repeat(10_000))));
    }

    #[test]
    fn item_ids_name_their_response() {
        let response = new_id(RESPONSE_ID_PREFIX);
        for (prefix, slot) in [("msg_", "o0"), ("fc_", "o12"), ("rs_", "i3")] {
            let id = item_id(prefix, &response, slot);
            assert!(id.starts_with(prefix));
            assert_eq!(response_of_item(&id).as_deref(), Some(response.as_str()), "{id}");
        }
        for bad in ["msg_", "msg", "msg_01jdevkey0000", "msg_01jdevkey00000000000000000", "", "_"] {
            assert_eq!(response_of_item(bad), None, "{bad}");
        }
        assert_eq!(response_of_item(&format!("msg_{}o1/x", &response[5..])), None);
    }

    #[test]
    fn safety_identifiers_hide_the_owner() {
        let tag = safety_identifier("team-a");
        assert!(tag.len() <= 64 && !tag.contains("team-a"));
        assert_eq!(tag, safety_identifier("team-a"));
        assert_ne!(tag, safety_identifier("team-b"));
    }

    #[test]
    fn request_ids_are_sanitised() {
        assert!(sane_request_id("abc-123_x.y"));
        assert!(!sane_request_id("a b"));
        assert!(!sane_request_id(&"x".repeat(200)));
        assert!(new_request_id().starts_with("req_"));
    }
}
