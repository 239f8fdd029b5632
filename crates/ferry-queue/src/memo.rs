//! What the readers of one replica know about when it holds something to receive, shared by all of
//! them.
//!
//! Every long poll of a partition on a node wakes at each of the partition's applies, and receive
//! rounds ask too. Each used to look at the state itself, and to learn when to wake each scanned the
//! visibility index ahead of now, past the deletion marks of every message received and deleted
//! within its visibility timeout (thousands at a high rate). The memo keeps one answer per applied
//! command, and what is known of the index ahead of now across commands. It stays exact because the
//! replica reports the index entries of every command it applies ([`crate::Applied::indexed`]).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use crate::machine::{has_receivable_message, next_visibility_change};
use crate::{Indexed, StateStore, StoreError};

/// Entry times remembered between scans. Sends index what is receivable at once (forgotten at the
/// next look), receives what comes due a visibility timeout later (past the horizon, so not
/// remembered): a few suffice. Also bounds what a scan in progress collects.
const REMEMBERED: usize = 32;

#[derive(Debug, Default)]
pub struct ReceivableMemo {
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    /// Counts applied commands and replaced states: what was seen at one version says nothing of
    /// the next.
    version: u64,
    ahead: Option<Ahead>,
    empty: Option<Empty>,
    receivable: Option<Receivable>,
    /// The index scan whose result will be kept, with what the commands applied since it started
    /// indexed: under load an apply lands during nearly every scan, and a result dropped for that
    /// would have every caller scan again.
    scan: Option<Scan>,
    scans_started: u64,
}

/// The index after `read_at`: every entry before `horizon` is at one of `entries` (or was removed
/// since). At `horizon` (the earliest entry the last scan found, or a time given up) the index must
/// be read again; `None`: nothing lies beyond.
#[derive(Debug)]
struct Ahead {
    read_at: u64,
    horizon: Option<u64>,
    entries: BTreeSet<u64>,
}

/// At `version` nothing was receivable before `until`.
#[derive(Debug, Clone, Copy)]
struct Empty {
    version: u64,
    until: u64,
}

/// At `version` something was receivable at `at`, and so at every later time until the next
/// command: what is due stays due, and only a command takes it.
#[derive(Debug, Clone, Copy)]
struct Receivable {
    version: u64,
    at: u64,
}

#[derive(Debug)]
struct Scan {
    id: u64,
    indexed: Vec<Indexed>,
    /// More commands indexed entries than `indexed` holds: the scan's result is not kept.
    overflowed: bool,
}

impl Ahead {
    fn add(&mut self, span: Indexed) {
        if span.latest <= self.read_at {
            return; // receivable from the start, never due
        }
        if span.earliest != span.latest {
            // Times between the two are not known: look again once the first comes due.
            self.lower_horizon(span.earliest.max(self.read_at + 1));
            return;
        }
        let at = span.earliest;
        if self.horizon.is_some_and(|horizon| at >= horizon) {
            return;
        }
        self.entries.insert(at);
        if self.entries.len() > REMEMBERED {
            let latest = self.entries.pop_last().expect("more than the limit");
            self.lower_horizon(latest);
        }
    }

    fn lower_horizon(&mut self, at: u64) {
        self.horizon = Some(self.horizon.map_or(at, |horizon| horizon.min(at)));
    }

    /// The earliest entry after `now_ms` at the earliest, if known without reading the index.
    fn due_after(&mut self, now_ms: u64) -> Option<Option<u64>> {
        if now_ms < self.read_at || self.horizon.is_some_and(|horizon| horizon <= now_ms) {
            return None;
        }
        while self.entries.first().is_some_and(|at| *at <= now_ms) {
            self.entries.pop_first();
        }
        Some(self.entries.first().copied().or(self.horizon))
    }
}

impl ReceivableMemo {
    /// Records a command applied to the replica, which indexed messages at `indexed`. Called after
    /// its writes are visible to readers, before anyone is told of it.
    pub fn applied(&self, indexed: Option<Indexed>) {
        let mut known = self.lock();
        known.version += 1;
        let Some(span) = indexed else {
            return;
        };
        if let Some(ahead) = known.ahead.as_mut() {
            ahead.add(span);
        }
        if let Some(scan) = known.scan.as_mut() {
            if scan.indexed.len() < REMEMBERED {
                scan.indexed.push(span);
            } else {
                scan.overflowed = true;
            }
        }
    }

    /// Forgets what was known: the replica's state was replaced whole (a snapshot installed).
    pub fn replaced(&self) {
        let mut known = self.lock();
        known.version += 1;
        known.ahead = None;
        known.scan = None;
    }

    /// When the next delayed or in-flight message after `now_ms` comes due, at the earliest (a
    /// message may have been deleted since). Reads the index only when that is not known.
    pub fn next_due<S: StateStore + ?Sized>(
        &self,
        store: &S,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let id = {
            let mut known = self.lock();
            if let Some(due) = known
                .ahead
                .as_mut()
                .and_then(|ahead| ahead.due_after(now_ms))
            {
                return Ok(due);
            }
            known.scans_started += 1;
            let id = known.scans_started;
            known.scan = Some(Scan {
                id,
                indexed: Vec::new(),
                overflowed: false,
            });
            id
        };
        // Scanned without the lock, which the apply path takes. A command applied meanwhile may
        // have indexed a message the scan did not see: what it reported is added.
        let scanned = next_visibility_change(store, now_ms)?;
        let mut known = self.lock();
        let Some(scan) = known.scan.take_if(|scan| scan.id == id && !scan.overflowed) else {
            // A later scan replaced this one, the state was replaced, or too much was indexed.
            return Ok(scanned);
        };
        let mut ahead = Ahead {
            read_at: now_ms,
            horizon: scanned,
            entries: BTreeSet::new(),
        };
        for span in scan.indexed {
            ahead.add(span);
        }
        let due = ahead.entries.first().copied().or(ahead.horizon);
        known.ahead = Some(ahead);
        Ok(due)
    }

    /// Whether a receive at `now_ms` would take (or dead-letter) anything; see
    /// [`has_receivable_message`]. Its answer does not depend on `max_receive_count` (a message
    /// past the limit is dead-lettered by the receive that finds it), and `fifo` is the queue's, so
    /// one answer serves every caller. Nothing receivable at one time means nothing at any earlier
    /// time, and at later times until the next message comes due; something receivable means
    /// something at every later time until the next command.
    pub fn has_receivable<S: StateStore + ?Sized>(
        &self,
        store: &S,
        now_ms: u64,
        fifo: bool,
        max_receive_count: Option<u32>,
    ) -> Result<bool, StoreError> {
        let version = {
            let known = self.lock();
            let empty_now = known
                .empty
                .is_some_and(|empty| empty.version == known.version && now_ms < empty.until);
            if empty_now {
                return Ok(false);
            }
            let receivable_now = known.receivable.is_some_and(|receivable| {
                receivable.version == known.version && now_ms >= receivable.at
            });
            if receivable_now {
                return Ok(true);
            }
            known.version
        };
        if has_receivable_message(store, now_ms, fifo, max_receive_count)? {
            let mut known = self.lock();
            if known.version == version {
                known.receivable = Some(Receivable {
                    version,
                    at: now_ms,
                });
            }
            return Ok(true);
        }
        let until = self.next_due(store, now_ms)?.unwrap_or(u64::MAX);
        let mut known = self.lock();
        if known.version == version {
            known.empty = Some(Empty { version, until });
        }
        Ok(false)
    }

    fn lock(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}
