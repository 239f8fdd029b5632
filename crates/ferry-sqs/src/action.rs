//! The closed set of SQS actions, by their wire names.

/// Every action of the SQS API (2012-11-05), in the order of the reference's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    AddPermission,
    CancelMessageMoveTask,
    ChangeMessageVisibility,
    ChangeMessageVisibilityBatch,
    CreateQueue,
    DeleteMessage,
    DeleteMessageBatch,
    DeleteQueue,
    GetQueueAttributes,
    GetQueueUrl,
    ListDeadLetterSourceQueues,
    ListMessageMoveTasks,
    ListQueueTags,
    ListQueues,
    PurgeQueue,
    ReceiveMessage,
    RemovePermission,
    SendMessage,
    SendMessageBatch,
    SetQueueAttributes,
    StartMessageMoveTask,
    TagQueue,
    UntagQueue,
}

impl Action {
    pub const ALL: [Action; 23] = [
        Self::AddPermission,
        Self::CancelMessageMoveTask,
        Self::ChangeMessageVisibility,
        Self::ChangeMessageVisibilityBatch,
        Self::CreateQueue,
        Self::DeleteMessage,
        Self::DeleteMessageBatch,
        Self::DeleteQueue,
        Self::GetQueueAttributes,
        Self::GetQueueUrl,
        Self::ListDeadLetterSourceQueues,
        Self::ListMessageMoveTasks,
        Self::ListQueueTags,
        Self::ListQueues,
        Self::PurgeQueue,
        Self::ReceiveMessage,
        Self::RemovePermission,
        Self::SendMessage,
        Self::SendMessageBatch,
        Self::SetQueueAttributes,
        Self::StartMessageMoveTask,
        Self::TagQueue,
        Self::UntagQueue,
    ];

    /// The name in `Action=` and `X-Amz-Target: AmazonSQS.<name>`, and in the XML element names.
    pub fn name(self) -> &'static str {
        match self {
            Self::AddPermission => "AddPermission",
            Self::CancelMessageMoveTask => "CancelMessageMoveTask",
            Self::ChangeMessageVisibility => "ChangeMessageVisibility",
            Self::ChangeMessageVisibilityBatch => "ChangeMessageVisibilityBatch",
            Self::CreateQueue => "CreateQueue",
            Self::DeleteMessage => "DeleteMessage",
            Self::DeleteMessageBatch => "DeleteMessageBatch",
            Self::DeleteQueue => "DeleteQueue",
            Self::GetQueueAttributes => "GetQueueAttributes",
            Self::GetQueueUrl => "GetQueueUrl",
            Self::ListDeadLetterSourceQueues => "ListDeadLetterSourceQueues",
            Self::ListMessageMoveTasks => "ListMessageMoveTasks",
            Self::ListQueueTags => "ListQueueTags",
            Self::ListQueues => "ListQueues",
            Self::PurgeQueue => "PurgeQueue",
            Self::ReceiveMessage => "ReceiveMessage",
            Self::RemovePermission => "RemovePermission",
            Self::SendMessage => "SendMessage",
            Self::SendMessageBatch => "SendMessageBatch",
            Self::SetQueueAttributes => "SetQueueAttributes",
            Self::StartMessageMoveTask => "StartMessageMoveTask",
            Self::TagQueue => "TagQueue",
            Self::UntagQueue => "UntagQueue",
        }
    }

    /// The action with this exact (case-sensitive, as in SQS) name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_through_its_name() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.name()), Some(action));
        }
        assert_eq!(Action::parse("sendmessage"), None);
        assert_eq!(Action::parse(""), None);
    }
}
