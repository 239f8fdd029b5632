use std::fmt;

/// Every error Ferry can report to a client. The gRPC layer sends the name as the stable Ferry error
/// code; the SQS adapter maps each one to its HTTP status and AWS code in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorCode {
    // Caller errors, as SQS names them.
    QueueDoesNotExist,
    QueueNameExists,
    QueueDeletedRecently,
    PurgeQueueInProgress,
    InvalidParameterValue,
    MissingParameter,
    InvalidAttributeName,
    InvalidAttributeValue,
    InvalidMessageContents,
    ReceiptHandleIsInvalid,
    MessageNotInflight,
    TooManyEntriesInBatchRequest,
    EmptyBatchRequest,
    BatchEntryIdsNotDistinct,
    InvalidBatchEntryId,
    BatchRequestTooLong,
    OverLimit,
    UnsupportedOperation,
    ResourceNotFound,
    // Caller errors of the SQS HTTP endpoint: the wire and authentication, never the broker.
    /// The request names no action, or one SQS does not have.
    InvalidAction,
    /// The request body cannot be decoded (a JSON body that does not parse, or is not UTF-8).
    MalformedRequest,
    /// The request body is larger than the endpoint accepts.
    RequestTooLarge,
    /// A QueueUrl that is not a queue URL.
    InvalidAddress,
    /// The request is not signed with SigV4 (or its signature is malformed) where one is required.
    InvalidSecurity,
    /// The access key of the signature is unknown.
    InvalidClientTokenId,
    /// The signature does not match the request and the access key's secret.
    SignatureDoesNotMatch,
    /// The signature's time is too far from the server's clock.
    RequestExpired,
    /// The caller is authenticated but may not act on this account's queues.
    AccessDenied,
    // Cluster conditions.
    /// No leader with a quorum could take the request (an election, or a majority of replicas down).
    /// Nothing was written.
    Unavailable,
    /// The request was proposed but its outcome is unknown: it may or may not have been committed.
    OutcomeUnknown,
    Internal,
}

impl ErrorCode {
    /// The stable name carried in gRPC error details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueDoesNotExist => "QueueDoesNotExist",
            Self::QueueNameExists => "QueueNameExists",
            Self::QueueDeletedRecently => "QueueDeletedRecently",
            Self::PurgeQueueInProgress => "PurgeQueueInProgress",
            Self::InvalidParameterValue => "InvalidParameterValue",
            Self::MissingParameter => "MissingParameter",
            Self::InvalidAttributeName => "InvalidAttributeName",
            Self::InvalidAttributeValue => "InvalidAttributeValue",
            Self::InvalidMessageContents => "InvalidMessageContents",
            Self::ReceiptHandleIsInvalid => "ReceiptHandleIsInvalid",
            Self::MessageNotInflight => "MessageNotInflight",
            Self::TooManyEntriesInBatchRequest => "TooManyEntriesInBatchRequest",
            Self::EmptyBatchRequest => "EmptyBatchRequest",
            Self::BatchEntryIdsNotDistinct => "BatchEntryIdsNotDistinct",
            Self::InvalidBatchEntryId => "InvalidBatchEntryId",
            Self::BatchRequestTooLong => "BatchRequestTooLong",
            Self::OverLimit => "OverLimit",
            Self::UnsupportedOperation => "UnsupportedOperation",
            Self::ResourceNotFound => "ResourceNotFound",
            Self::InvalidAction => "InvalidAction",
            Self::MalformedRequest => "MalformedRequest",
            Self::RequestTooLarge => "RequestTooLarge",
            Self::InvalidAddress => "InvalidAddress",
            Self::InvalidSecurity => "InvalidSecurity",
            Self::InvalidClientTokenId => "InvalidClientTokenId",
            Self::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            Self::RequestExpired => "RequestExpired",
            Self::AccessDenied => "AccessDenied",
            Self::Unavailable => "Unavailable",
            Self::OutcomeUnknown => "OutcomeUnknown",
            Self::Internal => "Internal",
        }
    }

    pub const ALL: [ErrorCode; 31] = [
        Self::QueueDoesNotExist,
        Self::QueueNameExists,
        Self::QueueDeletedRecently,
        Self::PurgeQueueInProgress,
        Self::InvalidParameterValue,
        Self::MissingParameter,
        Self::InvalidAttributeName,
        Self::InvalidAttributeValue,
        Self::InvalidMessageContents,
        Self::ReceiptHandleIsInvalid,
        Self::MessageNotInflight,
        Self::TooManyEntriesInBatchRequest,
        Self::EmptyBatchRequest,
        Self::BatchEntryIdsNotDistinct,
        Self::InvalidBatchEntryId,
        Self::BatchRequestTooLong,
        Self::OverLimit,
        Self::UnsupportedOperation,
        Self::ResourceNotFound,
        Self::InvalidAction,
        Self::MalformedRequest,
        Self::RequestTooLarge,
        Self::InvalidAddress,
        Self::InvalidSecurity,
        Self::InvalidClientTokenId,
        Self::SignatureDoesNotMatch,
        Self::RequestExpired,
        Self::AccessDenied,
        Self::Unavailable,
        Self::OutcomeUnknown,
        Self::Internal,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }

    /// True when the client caused the error (SQS's `Sender` fault).
    pub fn is_sender_fault(self) -> bool {
        !matches!(
            self,
            Self::Unavailable | Self::OutcomeUnknown | Self::Internal
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with its code and a message meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{code}: {message}")]
pub struct FerryError {
    pub code: ErrorCode,
    pub message: String,
}

impl FerryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn queue_does_not_exist() -> Self {
        Self::new(
            ErrorCode::QueueDoesNotExist,
            "The specified queue does not exist.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }
}
