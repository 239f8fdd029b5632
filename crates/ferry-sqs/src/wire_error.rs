//! How each Ferry error code appears on the SQS wire: one table from [`ErrorCode`] to the HTTP
//! status, the JSON `__type` shape, the legacy Query code and the fault side (SQS-REFERENCE §1.7).

use axum::http::StatusCode;
use ferry_types::ErrorCode;

/// Who caused an error, as the `Type` of a Query error and the second half of `x-amzn-query-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Sender,
    Receiver,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sender => "Sender",
            Self::Receiver => "Receiver",
        }
    }
}

/// An error code's wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError {
    pub status: StatusCode,
    /// The namespace of the JSON protocol's `__type` (`namespace#shape`).
    pub namespace: &'static str,
    /// The Smithy shape name, also what SDKs report as the `QueryErrorCode`.
    pub shape: &'static str,
    /// The Query protocol's `<Code>`, also the code of `x-amzn-query-error` and of batch entries.
    pub code: &'static str,
    pub fault: Fault,
}

const SQS: &str = "com.amazonaws.sqs#";
const CORAL: &str = "com.amazon.coral.service#";

impl WireError {
    /// The JSON protocol's `__type`.
    pub fn type_name(&self) -> String {
        format!("{}{}", self.namespace, self.shape)
    }
}

/// The one mapping from error code to wire form. Shapes that SQS models live in the
/// `com.amazonaws.sqs` namespace; errors raised before an action runs (protocol, authentication)
/// in AWS's common `com.amazon.coral.service` namespace.
pub fn wire_error(code: ErrorCode) -> WireError {
    use ErrorCode as E;
    let (status, namespace, shape, legacy) = match code {
        E::QueueDoesNotExist => (
            400,
            SQS,
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
        ),
        E::QueueNameExists => (400, SQS, "QueueNameExists", "QueueAlreadyExists"),
        E::QueueDeletedRecently => (
            400,
            SQS,
            "QueueDeletedRecently",
            "AWS.SimpleQueueService.QueueDeletedRecently",
        ),
        E::PurgeQueueInProgress => (
            403,
            SQS,
            "PurgeQueueInProgress",
            "AWS.SimpleQueueService.PurgeQueueInProgress",
        ),
        E::InvalidParameterValue => (
            400,
            SQS,
            "InvalidParameterValueException",
            "InvalidParameterValue",
        ),
        E::MissingParameter => (
            400,
            SQS,
            "MissingRequiredParameterException",
            "MissingParameter",
        ),
        E::InvalidAttributeName => (400, SQS, "InvalidAttributeName", "InvalidAttributeName"),
        E::InvalidAttributeValue => (400, SQS, "InvalidAttributeValue", "InvalidAttributeValue"),
        E::InvalidMessageContents => (400, SQS, "InvalidMessageContents", "InvalidMessageContents"),
        E::ReceiptHandleIsInvalid => (404, SQS, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid"),
        E::MessageNotInflight => (
            400,
            SQS,
            "MessageNotInflight",
            "AWS.SimpleQueueService.MessageNotInflight",
        ),
        E::TooManyEntriesInBatchRequest => (
            400,
            SQS,
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        ),
        E::EmptyBatchRequest => (
            400,
            SQS,
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
        ),
        E::BatchEntryIdsNotDistinct => (
            400,
            SQS,
            "BatchEntryIdsNotDistinct",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        ),
        E::InvalidBatchEntryId => (
            400,
            SQS,
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
        ),
        E::BatchRequestTooLong => (
            400,
            SQS,
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
        ),
        E::OverLimit => (403, SQS, "OverLimit", "OverLimit"),
        E::UnsupportedOperation => (
            400,
            SQS,
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
        ),
        E::ResourceNotFound => (
            404,
            SQS,
            "ResourceNotFoundException",
            "ResourceNotFoundException",
        ),
        E::InvalidAddress => (404, SQS, "InvalidAddress", "InvalidAddress"),
        E::InvalidSecurity => (403, SQS, "InvalidSecurity", "InvalidSecurity"),
        E::InvalidAction => (400, CORAL, "UnknownOperationException", "InvalidAction"),
        E::MalformedRequest => (
            400,
            CORAL,
            "SerializationException",
            "SerializationException",
        ),
        E::RequestTooLarge => (
            413,
            CORAL,
            "RequestEntityTooLargeException",
            "RequestEntityTooLarge",
        ),
        E::InvalidClientTokenId => (
            403,
            CORAL,
            "UnrecognizedClientException",
            "InvalidClientTokenId",
        ),
        E::SignatureDoesNotMatch => (
            403,
            CORAL,
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
        ),
        E::RequestExpired => (400, CORAL, "RequestExpired", "RequestExpired"),
        E::AccessDenied => (403, CORAL, "AccessDeniedException", "AccessDenied"),
        E::Unavailable => (503, SQS, "ServiceUnavailable", "ServiceUnavailable"),
        // Both answer InternalError (SDKs retry it); the message tells an unknown outcome apart.
        E::OutcomeUnknown | E::Internal => (500, SQS, "InternalError", "InternalError"),
    };
    WireError {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        namespace,
        shape,
        code: legacy,
        fault: if code.is_sender_fault() {
            Fault::Sender
        } else {
            Fault::Receiver
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_examples_map_exactly() {
        let missing = wire_error(ErrorCode::QueueDoesNotExist);
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert_eq!(missing.type_name(), "com.amazonaws.sqs#QueueDoesNotExist");
        assert_eq!(missing.code, "AWS.SimpleQueueService.NonExistentQueue");
        assert_eq!(missing.fault, Fault::Sender);

        let purge = wire_error(ErrorCode::PurgeQueueInProgress);
        assert_eq!(purge.status, StatusCode::FORBIDDEN);
        assert_eq!(wire_error(ErrorCode::ReceiptHandleIsInvalid).status, 404);
        let invalid = wire_error(ErrorCode::InvalidParameterValue);
        assert_eq!(
            (invalid.type_name().as_str(), invalid.code),
            (
                "com.amazonaws.sqs#InvalidParameterValueException",
                "InvalidParameterValue"
            )
        );
        let unavailable = wire_error(ErrorCode::Unavailable);
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.fault, Fault::Receiver);
    }

    #[test]
    fn every_code_has_a_wire_form() {
        for code in ErrorCode::ALL {
            let wire = wire_error(code);
            assert!(wire.namespace.ends_with('#') && !wire.shape.is_empty());
            assert!(!wire.code.is_empty());
            assert_eq!(
                wire.status.is_server_error(),
                wire.fault == Fault::Receiver,
                "{code}: server errors are exactly the Receiver faults"
            );
        }
    }
}
