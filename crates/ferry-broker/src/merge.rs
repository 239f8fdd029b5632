//! Commands that merge: concurrent sends, deletes, visibility changes and standard-queue receives of
//! one partition are folded into one command (one log entry), and its result is split back.

use ferry_queue::{
    HandleRef, NewMessage, QueueCommand, QueueResult, ReceiveCommand, VisibilityChange,
};

/// Which commands may share a log entry: the same kind, and for receives the same parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MergeKey {
    Send,
    Delete,
    ChangeVisibility,
    Receive {
        visibility_timeout_s: u32,
        max_receive_count: Option<u32>,
    },
}

impl MergeKey {
    /// The metric label of the kind.
    pub fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Delete => "delete",
            Self::ChangeVisibility => "change_visibility",
            Self::Receive { .. } => "receive",
        }
    }
}

/// One caller's part of a merged command.
#[derive(Debug)]
pub(crate) enum Part {
    Send(Vec<NewMessage>),
    Delete(Vec<HandleRef>),
    ChangeVisibility(Vec<VisibilityChange>),
    Receive { max: u32 },
}

impl Part {
    /// Splits a command into its merge key and part, if it is of a kind that merges. FIFO receives
    /// and receives with an attempt id never merge: their messages must go to one caller.
    pub fn of(command: QueueCommand) -> Result<(MergeKey, Part), QueueCommand> {
        match command {
            QueueCommand::Send { messages } | QueueCommand::SendWithFairGroups { messages } => {
                Ok((MergeKey::Send, Part::Send(messages)))
            }
            QueueCommand::Delete { handles } => Ok((MergeKey::Delete, Part::Delete(handles))),
            QueueCommand::ChangeVisibility { changes } => {
                Ok((MergeKey::ChangeVisibility, Part::ChangeVisibility(changes)))
            }
            QueueCommand::Receive(receive) if !receive.fifo && receive.attempt_id.is_none() => {
                Ok((
                    MergeKey::Receive {
                        visibility_timeout_s: receive.visibility_timeout_s,
                        max_receive_count: receive.max_receive_count,
                    },
                    Part::Receive { max: receive.max },
                ))
            }
            other => Err(other),
        }
    }

    /// Entries this part adds to the merged command (messages, handles, or messages to receive).
    pub fn len(&self) -> usize {
        match self {
            Self::Send(messages) => messages.len(),
            Self::Delete(handles) => handles.len(),
            Self::ChangeVisibility(changes) => changes.len(),
            Self::Receive { max } => *max as usize,
        }
    }

    /// Bytes of message bodies this part carries.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Send(messages) => messages.iter().map(|m| m.body.len()).sum(),
            _ => 0,
        }
    }
}

/// Folds parts (all of `key`'s kind) into one command, in order.
pub(crate) fn merge(key: MergeKey, parts: Vec<Part>) -> QueueCommand {
    let mut messages = Vec::new();
    let mut handles = Vec::new();
    let mut changes = Vec::new();
    let mut max = 0;
    for part in parts {
        match part {
            Part::Send(more) => messages.extend(more),
            Part::Delete(more) => handles.extend(more),
            Part::ChangeVisibility(more) => changes.extend(more),
            Part::Receive { max: more } => max += more,
        }
    }
    match key {
        MergeKey::Send => QueueCommand::send(messages),
        MergeKey::Delete => QueueCommand::Delete { handles },
        MergeKey::ChangeVisibility => QueueCommand::ChangeVisibility { changes },
        MergeKey::Receive {
            visibility_timeout_s,
            max_receive_count,
        } => QueueCommand::Receive(ReceiveCommand {
            max,
            visibility_timeout_s,
            fifo: false,
            max_receive_count,
            attempt_id: None,
        }),
    }
}

/// Splits a merged result into each part's, given each part's length, in order. A receive hands
/// out its messages first come first served, each part up to its own maximum.
pub(crate) fn split(result: QueueResult, lengths: &[usize]) -> Option<Vec<QueueResult>> {
    fn chunks<T>(items: Vec<T>, lengths: &[usize], exact: bool) -> Option<Vec<Vec<T>>> {
        if exact && items.len() != lengths.iter().sum::<usize>() {
            return None;
        }
        let mut items = items.into_iter();
        Some(
            lengths
                .iter()
                .map(|n| items.by_ref().take(*n).collect())
                .collect(),
        )
    }
    Some(match result {
        QueueResult::Sent(sent) => chunks(sent, lengths, true)?
            .into_iter()
            .map(QueueResult::Sent)
            .collect(),
        QueueResult::Deleted(outcomes) => chunks(outcomes, lengths, true)?
            .into_iter()
            .map(QueueResult::Deleted)
            .collect(),
        QueueResult::VisibilityChanged(outcomes) => chunks(outcomes, lengths, true)?
            .into_iter()
            .map(QueueResult::VisibilityChanged)
            .collect(),
        QueueResult::Received(received) => chunks(received, lengths, false)?
            .into_iter()
            .map(QueueResult::Received)
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_queue::DeleteOutcome;

    #[test]
    fn results_split_back_in_order() {
        let deleted = QueueResult::Deleted(vec![
            DeleteOutcome::Deleted,
            DeleteOutcome::NotFound,
            DeleteOutcome::StaleHandle,
        ]);
        assert_eq!(
            split(deleted, &[1, 2]).unwrap(),
            vec![
                QueueResult::Deleted(vec![DeleteOutcome::Deleted]),
                QueueResult::Deleted(vec![DeleteOutcome::NotFound, DeleteOutcome::StaleHandle])
            ]
        );
        assert!(
            split(QueueResult::Deleted(vec![DeleteOutcome::Deleted]), &[1, 1]).is_none(),
            "a short result is refused"
        );
        let none = split(QueueResult::Received(Vec::new()), &[10, 10]).unwrap();
        assert_eq!(
            none,
            vec![
                QueueResult::Received(Vec::new()),
                QueueResult::Received(Vec::new())
            ]
        );
    }

    #[test]
    fn fifo_and_attempt_receives_do_not_merge() {
        let receive = |fifo, attempt_id: Option<&str>| {
            QueueCommand::Receive(ReceiveCommand {
                max: 1,
                visibility_timeout_s: 30,
                fifo,
                max_receive_count: None,
                attempt_id: attempt_id.map(str::to_owned),
            })
        };
        assert!(Part::of(receive(false, None)).is_ok());
        assert!(Part::of(receive(true, None)).is_err());
        assert!(Part::of(receive(false, Some("a"))).is_err());
    }
}
