//! Quiet groups: an idle group stops ticking, so a node with a thousand idle queues does not spend
//! its CPU on a thousand election timers and heartbeats.
//!
//! openraft ticks every group at 13/64 of the heartbeat interval and its leader heartbeats every
//! follower; with 1,100 groups that kept the three nodes of one machine at a whole core between them
//! while doing nothing. Multi-raft systems quiesce idle groups instead, and so does Ferry:
//!
//! - A leader whose group has had no proposal for [`QUIET_AFTER`], whose followers all hold its
//!   whole log and whose follower nodes it hears from, stops its tick and tells each follower
//!   (a `Quiesce` call); a follower that still follows it with the same log, all of it applied,
//!   stops its tick too.
//! - Each node pings every peer it has sent nothing to for [`PING_INTERVAL`], so it knows which peers
//!   it hears from even when no group is busy ([`PeerLiveness`]). That one failure detector per
//!   node pair stands in for the election timers of the quiet groups.
//! - A quiet group ticks again on any proposal, read barrier or Raft call it receives (but see
//!   [`STALE_HEARTBEAT_WINDOW`]), and when the sweep finds that the node it follows, or a node that
//!   follows it, has gone silent for [`SILENCE_TIMEOUT`] or restarted since the group went quiet. A follower woken that way has heard nothing for long, so
//!   its first tick starts an election.
//!
//! - The same sweep makes a ticking follower campaign (a pre-vote) once its leader's node has been
//!   silent past the voters' lease and it hears a majority ([`Verdict::Campaign`]): the other
//!   voters would refuse it earlier, and its own timer may fire seconds later.
//!
//! Raft's safety never depends on timers, only its progress does; the cost of a wrong guess here is
//! an election, or a failover slower by up to [`SILENCE_TIMEOUT`] plus one sweep.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferry_types::NodeId;
use serde::{Deserialize, Serialize};

/// A group with no proposal for this long may go quiet.
pub(crate) const QUIET_AFTER: Duration = Duration::from_secs(3);
/// How often a node looks for groups to quiet or wake.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// A peer not heard from for this long is taken for down (the shortest election timeout).
pub(crate) const SILENCE_TIMEOUT: Duration = Duration::from_millis(1_500);
/// A node sends a peer an empty batch after this long without sending it anything.
pub(crate) const PING_INTERVAL: Duration = Duration::from_millis(300);
/// A peer not heard from for this long (two pings missed) is not sent work that could go elsewhere.
pub(crate) const LIVELY_WITHIN: Duration =
    Duration::from_millis(2 * PING_INTERVAL.as_millis() as u64);
/// A heartbeat this soon after a follower went quiet may have left its leader before the leader
/// stopped ticking: it does not wake the follower, which would then hear nothing more and start an
/// election. (Appends with entries and votes always wake it.)
const STALE_HEARTBEAT_WINDOW: Duration = Duration::from_millis(500);

/// Milliseconds on this process's monotonic clock, from 1 (0 means "never" below).
pub(crate) fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Whether a group ticks, and when it last did something.
#[derive(Debug)]
pub(crate) struct Activity {
    last_active_ms: AtomicU64,
    /// When the group went quiet; 0 while it ticks.
    quiet_since_ms: AtomicU64,
    /// When this replica last campaigned on the sweep's word; 0 if never.
    campaigned_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            last_active_ms: AtomicU64::new(clock_ms()),
            quiet_since_ms: AtomicU64::new(0),
            campaigned_ms: AtomicU64::new(0),
        }
    }

    /// Records activity; true if the group was quiet and must tick again.
    pub(crate) fn touch(&self) -> bool {
        self.hold_until(clock_ms());
        self.end_quiet()
    }

    /// Records a heartbeat at `now_ms`: a touch, except just after the group went quiet (see
    /// [`STALE_HEARTBEAT_WINDOW`]); true if the group must tick again.
    pub(crate) fn heartbeat(&self, now_ms: u64) -> bool {
        match self.quiet_since() {
            Some(since)
                if now_ms.saturating_sub(since) < STALE_HEARTBEAT_WINDOW.as_millis() as u64 =>
            {
                false
            }
            _ => self.touch(),
        }
    }

    /// Keeps the group from going quiet until `QUIET_AFTER` past `until_ms`.
    pub(crate) fn hold_until(&self, until_ms: u64) {
        self.last_active_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    pub(crate) fn quiet_since(&self) -> Option<u64> {
        Some(self.quiet_since_ms.load(Ordering::Acquire)).filter(|&at| at != 0)
    }

    pub(crate) fn idle_for(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.last_active_ms.load(Ordering::Acquire)))
    }

    /// Marks the group quiet as of `decided_ms`, when it was found idle. The caller stops the tick
    /// next and then calls [`Activity::still_quiet`]: a touch in between may have re-enabled the
    /// tick before the stop.
    pub(crate) fn begin_quiet(&self, decided_ms: u64) {
        self.quiet_since_ms.store(decided_ms, Ordering::Release);
    }

    /// After the tick was stopped: false if the group was touched since the decision (the caller
    /// must make it tick again).
    pub(crate) fn still_quiet(&self, since_ms: u64) -> bool {
        self.quiet_since_ms.load(Ordering::Acquire) == since_ms
            && self.last_active_ms.load(Ordering::Acquire) < since_ms
    }

    /// Marks the group ticking; true if it was quiet.
    pub(crate) fn end_quiet(&self) -> bool {
        self.quiet_since_ms.swap(0, Ordering::AcqRel) != 0
    }

    /// Records a campaign started at `now_ms`.
    pub(crate) fn campaigned(&self, now_ms: u64) {
        self.campaigned_ms.store(now_ms, Ordering::Release);
    }

    /// Whether the last campaign, if any, was at least [`CAMPAIGN_BACKOFF`] before `now_ms`.
    fn may_campaign(&self, now_ms: u64) -> bool {
        match self.campaigned_ms.load(Ordering::Acquire) {
            0 => true,
            at => now_ms.saturating_sub(at) >= CAMPAIGN_BACKOFF.as_millis() as u64,
        }
    }
}

/// When this node last heard from each peer, and since when from the peer's current process.
#[derive(Debug, Default)]
pub(crate) struct PeerLiveness {
    peers: Mutex<HashMap<NodeId, Heard>>,
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    last_ms: u64,
    boot: u64,
    /// When the first message of this boot arrived.
    boot_seen_ms: u64,
    /// The newest queue command format this boot announced.
    command_format: u32,
}

impl PeerLiveness {
    pub(crate) fn heard(&self, node: NodeId, boot: u64, command_format: u32) {
        self.heard_at(node, boot, command_format, clock_ms());
    }

    fn heard_at(&self, node: NodeId, boot: u64, command_format: u32, now: u64) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let heard = peers.entry(node).or_insert(Heard {
            last_ms: now,
            boot,
            boot_seen_ms: now,
            command_format,
        });
        heard.last_ms = now;
        if heard.boot != boot {
            heard.boot = boot;
            heard.boot_seen_ms = now;
        }
        heard.command_format = command_format;
    }

    /// The newest queue command format `node` announced last, if it was heard from.
    pub(crate) fn command_format(&self, node: NodeId) -> Option<u32> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&node).map(|heard| heard.command_format)
    }

    /// Whether `node` was heard within [`SILENCE_TIMEOUT`] of `now_ms` and has not restarted since
    /// `since_ms`.
    pub(crate) fn steady(&self, node: NodeId, now_ms: u64, since_ms: u64) -> bool {
        self.heard_within(node, now_ms, SILENCE_TIMEOUT)
            .is_some_and(|heard| heard.boot_seen_ms <= since_ms)
    }

    /// Whether `me`, counting itself, heard a majority of `nodes` within [`SILENCE_TIMEOUT`] of
    /// `now_ms`.
    pub(crate) fn majority_heard(
        &self,
        me: NodeId,
        nodes: impl IntoIterator<Item = NodeId>,
        now_ms: u64,
    ) -> bool {
        let (mut heard, mut all) = (0, 0);
        for node in nodes {
            all += 1;
            heard += usize::from(node == me || self.steady(node, now_ms, u64::MAX));
        }
        heard * 2 > all
    }

    /// Whether `node` was heard within [`LIVELY_WITHIN`] of `now_ms`.
    pub(crate) fn lively(&self, node: NodeId, now_ms: u64) -> bool {
        self.heard_within(node, now_ms, LIVELY_WITHIN).is_some()
    }

    fn heard_within(&self, node: NodeId, now_ms: u64, within: Duration) -> Option<Heard> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .get(&node)
            .filter(|heard| now_ms.saturating_sub(heard.last_ms) < within.as_millis() as u64)
            .copied()
    }
}

/// What a replica knows of its group, read from openraft's metrics.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupView {
    pub me: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// On a leader: each follower's matched log index.
    pub followers: Vec<(NodeId, Option<u64>)>,
    pub voters: Vec<NodeId>,
}

/// The sweep's verdict on one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    /// Stop ticking and tell the followers.
    Quiesce,
    /// Tick again: a peer it depends on went silent or restarted.
    Wake,
    /// A follower that has not heard its leader for longer than the voters' lease and hears a
    /// majority of the voters: start an election now rather than when its own timer, randomised
    /// between 1.5 and 3 s and refused while the lease runs, next fires (a killed leader was
    /// replaced 4.6–5.1 s after the kill, docs/benchmarks.md twenty-sixth pass).
    Campaign,
}

/// How long past the voters' lease a follower waits for its leader before it campaigns: the other
/// voters heard the leader a little after it did.
const LEASE_MARGIN_MS: u64 = 200;
/// Between two campaigns of one replica. A follower that still names the silent leader after its
/// campaign had its pre-vote refused: the other voters still hear that leader (a follower cut off
/// from its leader alone). Trying again at every sweep made three times the calls openraft's own
/// election timer makes (133 campaigns in one CI partition suite); this is that timer's shortest
/// timeout. (A pre-vote that passes starts an election, after which the replica no longer names
/// the silent leader and the sweep no longer campaigns for it: openraft's timer retries a split
/// vote.)
const CAMPAIGN_BACKOFF: Duration = Duration::from_millis(crate::multi::ELECTION_MIN_MS);

/// Decides whether a group goes quiet or wakes, at `now_ms`.
pub(crate) fn verdict(
    view: &GroupView,
    activity: &Activity,
    liveness: &PeerLiveness,
    now_ms: u64,
) -> Verdict {
    let leading = view.leader == Some(view.me);
    match activity.quiet_since() {
        Some(since) => {
            let peers_steady = if leading {
                view.followers
                    .iter()
                    .all(|(node, _)| liveness.steady(*node, now_ms, since))
            } else {
                view.leader
                    .is_some_and(|leader| liveness.steady(leader, now_ms, since))
            };
            if peers_steady {
                Verdict::Keep
            } else {
                Verdict::Wake
            }
        }
        None => {
            let settled = leading
                && activity.idle_for(now_ms) >= QUIET_AFTER
                && view.last_log_index.is_some()
                && view.last_applied_index == view.last_log_index
                && !view.followers.is_empty()
                && view.followers.iter().all(|(node, matched)| {
                    *matched == view.last_log_index && liveness.steady(*node, now_ms, now_ms)
                });
            if settled {
                Verdict::Quiesce
            } else if leader_gone(view, liveness, now_ms) && activity.may_campaign(now_ms) {
                Verdict::Campaign
            } else {
                Verdict::Keep
            }
        }
    }
}

/// Whether this voter's leader has been silent past the voters' lease while a majority of the
/// voters, counting this one, are heard: an election would succeed.
fn leader_gone(view: &GroupView, liveness: &PeerLiveness, now_ms: u64) -> bool {
    let lease = Duration::from_millis(crate::multi::ELECTION_MAX_MS + LEASE_MARGIN_MS);
    let Some(leader) = view.leader.filter(|&leader| leader != view.me) else {
        return false;
    };
    view.voters.contains(&view.me)
        && liveness.heard_within(leader, now_ms, lease).is_none()
        && liveness.majority_heard(view.me, view.voters.iter().copied(), now_ms)
}

/// The leader's word that a group went quiet: a follower stops ticking only if it still follows
/// that leader in that term, holds the same log and has applied all of it. The leader sends this
/// only once it has applied its whole log, so every entry is committed; but a follower learns that
/// from the leader's next heartbeat, and a quiet leader sends none. A follower that restarted with
/// the last entry in its log but not yet the news of its commit would otherwise stay behind until
/// the group's next write, and its node would not see those messages (a drain through it waited
/// 90 s in vain): it refuses, the leader ticks again, and its heartbeats bring the commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QuiesceRequest {
    pub leader: NodeId,
    pub term: u64,
    pub last_log_index: u64,
}

impl QuiesceRequest {
    pub(crate) fn accepted_by(&self, follower: &GroupView) -> bool {
        follower.leader == Some(self.leader)
            && follower.leader != Some(follower.me)
            && follower.term == self.term
            && follower.last_log_index == Some(self.last_log_index)
            && follower.last_applied_index == Some(self.last_log_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test times, in ms on the process clock: peers are heard at `HEARD`, the group was last
    /// active at `ACTIVE`, and `NOW` is past the quiet delay.
    const ACTIVE: u64 = 1_000;
    const HEARD: u64 = 10_000;
    const NOW: u64 = HEARD + 100;

    fn leader_view(matched: Option<u64>) -> GroupView {
        GroupView {
            me: 1,
            leader: Some(1),
            term: 4,
            last_log_index: Some(10),
            last_applied_index: Some(10),
            followers: vec![(2, Some(10)), (3, matched)],
            voters: vec![1, 2, 3],
        }
    }

    fn follower_view() -> GroupView {
        GroupView {
            me: 2,
            followers: Vec::new(),
            ..leader_view(Some(10))
        }
    }

    fn idle_activity() -> Activity {
        let activity = Activity::new();
        activity.last_active_ms.store(ACTIVE, Ordering::Release);
        activity
    }

    fn live_peers() -> PeerLiveness {
        let liveness = PeerLiveness::default();
        for node in [1, 2, 3] {
            liveness.heard_at(node, 7, 0, 1);
            liveness.heard_at(node, 7, 0, HEARD);
        }
        liveness
    }

    #[test]
    fn an_idle_leader_with_every_follower_caught_up_goes_quiet() {
        let liveness = live_peers();
        let activity = idle_activity();
        let judge = |view: &GroupView| verdict(view, &activity, &liveness, NOW);
        assert_eq!(judge(&leader_view(Some(10))), Verdict::Quiesce);
        // A follower behind, or one never heard of: keep ticking (heartbeats carry it along).
        assert_eq!(judge(&leader_view(Some(9))), Verdict::Keep);
        assert_eq!(judge(&leader_view(None)), Verdict::Keep);
        let mut stranger = leader_view(Some(10));
        stranger.followers.push((4, Some(10)));
        assert_eq!(judge(&stranger), Verdict::Keep);
        // A follower never decides on its own.
        assert_eq!(judge(&follower_view()), Verdict::Keep);
        // A recent proposal keeps the leader ticking.
        activity.hold_until(NOW - 1);
        assert_eq!(judge(&leader_view(Some(10))), Verdict::Keep);
    }

    #[test]
    fn a_quiet_group_wakes_when_a_peer_it_depends_on_goes_silent_or_restarts() {
        let liveness = live_peers();
        let activity = idle_activity();
        activity.begin_quiet(HEARD - 1);
        let judge = |view: &GroupView, now: u64| verdict(view, &activity, &liveness, now);
        assert_eq!(judge(&follower_view(), NOW), Verdict::Keep);
        assert_eq!(judge(&leader_view(Some(10)), NOW), Verdict::Keep);
        // Silent for the timeout.
        let silent = HEARD + SILENCE_TIMEOUT.as_millis() as u64;
        assert_eq!(judge(&follower_view(), silent), Verdict::Wake);
        assert_eq!(judge(&leader_view(Some(10)), silent), Verdict::Wake);
        // No leader known.
        let leaderless = GroupView {
            leader: None,
            ..follower_view()
        };
        assert_eq!(judge(&leaderless, NOW), Verdict::Wake);
        // The leader restarted after the group went quiet: heard again, but from a new process.
        liveness.heard_at(1, 8, 0, NOW);
        assert_eq!(judge(&follower_view(), NOW), Verdict::Wake);
        // A follower node restarted: its leader wakes so that heartbeats reach the new process.
        liveness.heard_at(3, 8, 0, NOW);
        assert_eq!(judge(&leader_view(Some(10)), NOW), Verdict::Wake);
    }

    #[test]
    fn a_follower_campaigns_once_its_leader_is_silent_past_the_lease_and_a_majority_is_heard() {
        let liveness = live_peers();
        let ticking = Activity::new();
        let judge = |view: &GroupView, now: u64| verdict(view, &ticking, &liveness, now);
        let past_lease = HEARD + crate::multi::ELECTION_MAX_MS + LEASE_MARGIN_MS;
        assert_eq!(judge(&follower_view(), past_lease - 1), Verdict::Keep);
        // Node 3, the other voter, is heard; node 1, the leader, is not.
        liveness.heard_at(3, 7, 0, past_lease - 100);
        assert_eq!(
            judge(&follower_view(), past_lease - 1),
            Verdict::Keep,
            "lease still runs"
        );
        assert_eq!(judge(&follower_view(), past_lease), Verdict::Campaign);
        let learner = GroupView {
            voters: vec![1, 3],
            ..follower_view()
        };
        assert_eq!(judge(&learner, past_lease), Verdict::Keep, "not a voter");
        // Without the other voter no election can win.
        let later = past_lease + SILENCE_TIMEOUT.as_millis() as u64;
        assert_eq!(judge(&follower_view(), later), Verdict::Keep);
    }

    #[test]
    fn a_refused_campaign_is_not_repeated_before_the_backoff() {
        let liveness = live_peers();
        let ticking = Activity::new();
        let judge = |now: u64| verdict(&follower_view(), &ticking, &liveness, now);
        let past_lease = HEARD + crate::multi::ELECTION_MAX_MS + LEASE_MARGIN_MS;
        liveness.heard_at(3, 7, 0, past_lease);
        assert_eq!(judge(past_lease), Verdict::Campaign);
        ticking.campaigned(past_lease);
        let backoff = CAMPAIGN_BACKOFF.as_millis() as u64;
        // The other voter is still heard and the leader still named, not heard: refused.
        liveness.heard_at(3, 7, 0, past_lease + backoff);
        assert_eq!(judge(past_lease + backoff - 1), Verdict::Keep);
        assert_eq!(judge(past_lease + backoff), Verdict::Campaign);
    }

    #[test]
    fn a_peer_two_pings_silent_is_not_lively_long_before_it_counts_as_down() {
        let liveness = PeerLiveness::default();
        assert!(!liveness.lively(2, HEARD), "never heard from");
        liveness.heard_at(2, 7, 0, HEARD);
        let missed_two = HEARD + LIVELY_WITHIN.as_millis() as u64;
        assert!(liveness.lively(2, missed_two - 1));
        assert!(!liveness.lively(2, missed_two));
        assert!(
            liveness.steady(2, missed_two, u64::MAX),
            "not yet taken for down"
        );
    }

    #[test]
    fn a_peer_reads_the_command_format_its_current_process_announced() {
        let liveness = PeerLiveness::default();
        assert_eq!(liveness.command_format(2), None, "never heard from");
        liveness.heard_at(2, 7, 1, HEARD);
        assert_eq!(liveness.command_format(2), Some(1));
        // Restarted on an earlier build, which announces nothing.
        liveness.heard_at(2, 8, 0, NOW);
        assert_eq!(liveness.command_format(2), Some(0));
    }

    #[test]
    fn a_touch_between_quieting_and_stopping_the_tick_is_not_lost() {
        let activity = idle_activity();
        let since = ACTIVE + 1;
        activity.begin_quiet(since);
        assert!(activity.still_quiet(since));
        // A proposal arrives after the mark, before the sweep stopped the tick.
        assert!(activity.touch());
        assert!(!activity.still_quiet(since));
        assert!(!activity.end_quiet());
    }

    #[test]
    fn a_touch_after_the_sweep_found_the_group_idle_keeps_it_ticking() {
        let activity = idle_activity();
        let decided = NOW;
        // A proposal lands after the verdict and before the sweep marks the group.
        activity.hold_until(decided + 5);
        activity.begin_quiet(decided);
        assert!(!activity.still_quiet(decided));
    }

    #[test]
    fn a_heartbeat_sent_before_the_leader_stopped_does_not_wake_a_follower() {
        let activity = idle_activity();
        activity.begin_quiet(HEARD);
        assert!(!activity.heartbeat(HEARD + 100));
        assert_eq!(activity.quiet_since(), Some(HEARD));
        // Later, a heartbeat means the leader ticks again.
        assert!(activity.heartbeat(HEARD + STALE_HEARTBEAT_WINDOW.as_millis() as u64));
        assert_eq!(activity.quiet_since(), None);
        // A ticking group only records it.
        assert!(!activity.heartbeat(NOW));
    }

    #[test]
    fn a_follower_quiesces_only_for_its_leader_in_its_term_with_the_same_log_applied() {
        let request = QuiesceRequest {
            leader: 1,
            term: 4,
            last_log_index: 10,
        };
        assert!(request.accepted_by(&follower_view()));
        for stale in [
            QuiesceRequest {
                leader: 3,
                ..request.clone()
            },
            QuiesceRequest {
                term: 3,
                ..request.clone()
            },
            QuiesceRequest {
                last_log_index: 11,
                ..request.clone()
            },
        ] {
            assert!(!stale.accepted_by(&follower_view()));
        }
        let uncommitted = GroupView {
            last_applied_index: Some(9),
            ..follower_view()
        };
        assert!(
            !request.accepted_by(&uncommitted),
            "the last entry not yet applied"
        );
        assert!(!request.accepted_by(&leader_view(Some(10))));
    }
}
