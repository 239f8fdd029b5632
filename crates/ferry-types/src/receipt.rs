//! Receipt handles: a versioned binary record naming the partition, the message and the receive that
//! produced it, authenticated with an HMAC under a cluster secret so that a forged or corrupted handle
//! is rejected before any lookup, and base64url-encoded for clients.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{ErrorCode, FerryError, GroupId};

const VERSION: u8 = 2;
const MAC_LEN: usize = 16;
const BODY_LEN: usize = 1 + 8 + 8 + 8 + 8 + 8;

/// What a receipt handle points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceiptKey {
    /// The queue's catalog id: a handle of one queue is invalid on another.
    pub queue_id: u64,
    /// The partition (Raft group) holding the message.
    pub group: GroupId,
    /// The message's sequence number within the partition.
    pub seq: u64,
    /// Identifies the receive that issued the handle; a later receive issues a new token.
    pub token: u64,
    /// The visible time that receive gave the message, where the partition finds its state.
    pub indexed_at: u64,
}

/// Encodes and verifies receipt handles under one cluster secret.
#[derive(Clone)]
pub struct ReceiptHandle {
    secret: Vec<u8>,
}

impl ReceiptHandle {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    pub fn encode(&self, key: &ReceiptKey) -> String {
        let mut raw = Vec::with_capacity(BODY_LEN + MAC_LEN);
        raw.push(VERSION);
        raw.extend_from_slice(&key.queue_id.to_be_bytes());
        raw.extend_from_slice(&key.group.0.to_be_bytes());
        raw.extend_from_slice(&key.seq.to_be_bytes());
        raw.extend_from_slice(&key.token.to_be_bytes());
        raw.extend_from_slice(&key.indexed_at.to_be_bytes());
        let mac = self.mac(&raw);
        raw.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(&self, handle: &str) -> Result<ReceiptKey, FerryError> {
        let invalid = || {
            FerryError::new(
                ErrorCode::ReceiptHandleIsInvalid,
                format!(
                    "The input receipt handle \"{}\" is not a valid receipt handle.",
                    shorten(handle)
                ),
            )
        };
        let raw = URL_SAFE_NO_PAD
            .decode(handle.as_bytes())
            .map_err(|_| invalid())?;
        if raw.len() != BODY_LEN + MAC_LEN || raw[0] != VERSION {
            return Err(invalid());
        }
        let (body, mac) = raw.split_at(BODY_LEN);
        self.hasher(body)
            .verify_truncated_left(mac)
            .map_err(|_| invalid())?;
        let word =
            |i: usize| u64::from_be_bytes(body[1 + 8 * i..9 + 8 * i].try_into().expect("8 bytes"));
        Ok(ReceiptKey {
            queue_id: word(0),
            group: GroupId(word(1)),
            seq: word(2),
            token: word(3),
            indexed_at: word(4),
        })
    }

    fn mac(&self, body: &[u8]) -> Vec<u8> {
        self.hasher(body).finalize().into_bytes()[..MAC_LEN].to_vec()
    }

    fn hasher(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(body);
        mac
    }
}

/// Never echo a whole handle back: it is a credential for the message.
fn shorten(handle: &str) -> String {
    handle.chars().take(12).collect::<String>() + if handle.len() > 12 { "…" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_reject_tampering() {
        let codec = ReceiptHandle::new(b"secret".to_vec());
        let key = ReceiptKey {
            queue_id: 7,
            group: GroupId(42),
            seq: 9,
            token: 1234,
            indexed_at: 1_800_000_000_000,
        };
        let handle = codec.encode(&key);
        assert_eq!(codec.decode(&handle).unwrap(), key);

        let mut tampered = handle.clone().into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        let err = codec
            .decode(std::str::from_utf8(&tampered).unwrap())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ReceiptHandleIsInvalid);

        assert!(ReceiptHandle::new(b"other".to_vec())
            .decode(&handle)
            .is_err());
        assert!(codec.decode("not a handle").is_err());
        assert!(codec.decode("").is_err());
    }
}
