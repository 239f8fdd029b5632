use std::fmt;

use crate::{ErrorCode, FerryError};

/// A validated queue name: 1–80 characters of `[A-Za-z0-9_-]`, plus a `.fifo` suffix (counted in the
/// 80) for FIFO queues. Case-sensitive, as in SQS.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct QueueName(String);

pub const MAX_QUEUE_NAME_LEN: usize = 80;

impl QueueName {
    pub fn parse(name: &str) -> Result<Self, FerryError> {
        let stem = name.strip_suffix(".fifo").unwrap_or(name);
        let valid = !stem.is_empty()
            && name.len() <= MAX_QUEUE_NAME_LEN
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(FerryError::new(
                ErrorCode::InvalidParameterValue,
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn is_fifo(&self) -> bool {
        self.0.ends_with(".fifo")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_sqs_rules() {
        assert!(QueueName::parse("orders-1_a").is_ok());
        assert!(QueueName::parse("orders.fifo").unwrap().is_fifo());
        assert!(QueueName::parse(&"a".repeat(80)).is_ok());
        assert!(QueueName::parse(&"a".repeat(81)).is_err());
        assert!(QueueName::parse(&format!("{}.fifo", "a".repeat(76))).is_err());
        assert!(QueueName::parse("").is_err());
        assert!(QueueName::parse(".fifo").is_err());
        assert!(QueueName::parse("has space").is_err());
        assert!(QueueName::parse("dot.name").is_err());
    }
}
