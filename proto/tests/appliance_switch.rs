//! The planned appliance switchover, both sides wired together over a simulated
//! peer link, with virtual time: the happy path, and every abort path (twin refuses,
//! twin dies mid-transfer, count mismatch, the VIP does not move, the VIP moves late).

use std::time::{Duration, Instant};

use proto::appliance_switch::{
    AbortReason, ActiveInput, ActiveOutput, ActivePhase, ActiveSwitch, ApplianceSwitchConfig, PeerMessage,
    StandbyInput, StandbyOutput, StandbyPhase, StandbySwitch,
};

const ID: u64 = 7;

struct Pair {
    now: Instant,
    active: ActiveSwitch,
    standby: Option<StandbySwitch>,
    /// What each side asked its own driver to do (peer messages excluded).
    active_did: Vec<ActiveOutput>,
    standby_did: Vec<StandbyOutput>,
    /// The peer link is cut: messages are lost.
    cut: bool,
}

impl Pair {
    fn start() -> Self {
        let now = Instant::now();
        let mut p = Self {
            now,
            active: ActiveSwitch::start(ID, ApplianceSwitchConfig::default(), now),
            standby: None,
            active_did: Vec::new(),
            standby_did: Vec::new(),
            cut: false,
        };
        p.pump();
        p
    }

    fn standby(&mut self) -> &mut StandbySwitch {
        self.standby.as_mut().expect("the twin got PREPARE")
    }

    /// Moves every output: peer messages to the other side, the rest to the logs.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.active.poll_output() {
                moved = true;
                match out {
                    ActiveOutput::ToPeer(m) if self.cut => drop(m),
                    ActiveOutput::ToPeer(PeerMessage::Prepare { switch_id }) => {
                        self.standby =
                            Some(StandbySwitch::start(switch_id, ApplianceSwitchConfig::default(), self.now));
                    }
                    ActiveOutput::ToPeer(m) => {
                        let now = self.now;
                        self.standby().handle(now, StandbyInput::Peer(m));
                    }
                    other => self.active_did.push(other),
                }
            }
            if let Some(standby) = self.standby.as_mut() {
                while let Some(out) = standby.poll_output() {
                    moved = true;
                    match out {
                        StandbyOutput::ToPeer(m) if self.cut => drop(m),
                        StandbyOutput::ToPeer(m) => self.active.handle(self.now, ActiveInput::Peer(m)),
                        other => self.standby_did.push(other),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn active_in(&mut self, input: ActiveInput) {
        self.active.handle(self.now, input);
        self.pump();
    }

    fn standby_in(&mut self, input: StandbyInput) {
        let now = self.now;
        self.standby().handle(now, input);
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.active.handle_timeout(self.now);
        if let Some(s) = self.standby.as_mut() {
            s.handle_timeout(self.now);
        }
        self.pump();
    }

    /// Runs both sides up to "the twin holds every snapshot", with `n` sessions.
    fn up_to_holding(n: u32) -> Self {
        let mut p = Self::start();
        p.standby_in(StandbyInput::Locked);
        assert_eq!(p.active.phase(), ActivePhase::Quiescing);
        p.advance(Duration::from_millis(3));
        p.active_in(ActiveInput::Quiesced);
        p.advance(Duration::from_millis(2));
        p.active_in(ActiveInput::Checkpointed { sessions: n });
        p.standby_in(StandbyInput::Received(n));
        p.active_in(ActiveInput::Shipped);
        p
    }

    fn active_outcome(&self) -> proto::appliance_switch::ApplianceOutcome {
        self.active_did
            .iter()
            .find_map(|o| match o {
                ActiveOutput::Finished(outcome) => Some(outcome.clone()),
                _ => None,
            })
            .expect("the active side finished")
    }

    fn standby_outcome(&self) -> proto::appliance_switch::ApplianceOutcome {
        self.standby_did
            .iter()
            .find_map(|o| match o {
                StandbyOutput::Finished(outcome) => Some(outcome.clone()),
                _ => None,
            })
            .expect("the twin finished")
    }
}

#[test]
fn happy_path_hands_every_session_over_and_the_vip_follows() {
    let mut p = Pair::up_to_holding(200);
    assert_eq!(p.standby().phase(), StandbyPhase::Holding);
    assert_eq!(p.active.phase(), ActivePhase::MovingVip);
    assert_eq!(
        p.active_did,
        [
            ActiveOutput::Quiesce,
            ActiveOutput::Checkpoint,
            ActiveOutput::Ship,
            ActiveOutput::SetVrrpFault(true)
        ]
    );
    // keepalived moves the VIP: the twin restores, takes over, serves.
    p.advance(Duration::from_millis(60));
    p.active_in(ActiveInput::VipHere(false));
    p.standby_in(StandbyInput::VipHere(true));
    p.standby_in(StandbyInput::Restored { restored: 200, failed: 0 });
    p.standby_in(StandbyInput::TookOver);
    // The twin unlocks only once the active has closed its copies and sent on
    // what it held (its mups says so when its pups answers CloseFrozen).
    assert!(!p.standby_did.contains(&StandbyOutput::Serve));
    assert_eq!(p.standby().phase(), StandbyPhase::TakingOver);
    p.advance(Duration::from_millis(4));
    p.standby_in(StandbyInput::Peer(PeerMessage::Closed { switch_id: ID }));
    assert!(p.standby_did.contains(&StandbyOutput::Serve));

    assert!(p.active_did.contains(&ActiveOutput::CloseFrozen));
    assert!(!p.active_did.contains(&ActiveOutput::Thaw));
    let a = p.active_outcome();
    assert!(a.committed && a.aborted.is_none(), "{a:?}");
    assert_eq!(a.sessions, 200);
    assert_eq!(a.times.quiesce_micros, Some(3_000));
    assert_eq!(a.times.checkpoint_micros, Some(2_000));
    assert_eq!(a.times.vip_micros, Some(60_000));
    assert_eq!(
        p.standby_did
            .iter()
            .filter(|o| !matches!(o, StandbyOutput::Finished(_)))
            .cloned()
            .collect::<Vec<_>>(),
        [StandbyOutput::Lock, StandbyOutput::Restore, StandbyOutput::TakeOver, StandbyOutput::Serve]
    );
    let s = p.standby_outcome();
    assert!(s.committed && s.aborted.is_none(), "{s:?}");
    assert_eq!(s.sessions, 200);
}

#[test]
fn the_twin_refusing_to_prepare_aborts_before_anything_is_frozen() {
    let mut p = Pair::start();
    p.standby_in(StandbyInput::Failed("nft lock failed".into()));
    let a = p.active_outcome();
    assert!(!a.committed);
    assert!(
        matches!(&a.aborted, Some(AbortReason::Peer { detail }) if detail.contains("nft lock failed")),
        "{a:?}"
    );
    assert!(!p.active_did.contains(&ActiveOutput::Quiesce), "nothing frozen");
    assert!(!p.active_did.contains(&ActiveOutput::Thaw), "so nothing to thaw");
    assert!(p.standby_did.contains(&StandbyOutput::Discard));
}

#[test]
fn the_twin_dying_mid_transfer_thaws_the_sessions_here() {
    let mut p = Pair::start();
    p.standby_in(StandbyInput::Locked);
    p.active_in(ActiveInput::Quiesced);
    p.active_in(ActiveInput::Checkpointed { sessions: 50 });
    p.cut = true;
    p.active_in(ActiveInput::PeerLost);
    let a = p.active_outcome();
    assert_eq!(a.aborted, Some(AbortReason::PeerLost));
    assert_eq!(p.active_did.last().map(|o| matches!(o, ActiveOutput::Finished(_))), Some(true));
    assert!(p.active_did.contains(&ActiveOutput::Thaw));
    assert!(!p.active_did.contains(&ActiveOutput::SetVrrpFault(true)), "the VIP was never asked to move");
}

#[test]
fn silence_from_the_twin_times_out_at_every_step_before_the_vip() {
    // Prepare: no READY.
    let mut p = Pair::start();
    p.advance(Duration::from_secs(3));
    assert!(
        matches!(p.active_outcome().aborted, Some(AbortReason::Timeout { ref phase }) if phase == "preparing")
    );
    // Shipping: no HOLDING (the twin never stored the snapshots).
    let mut p = Pair::start();
    p.standby_in(StandbyInput::Locked);
    p.active_in(ActiveInput::Quiesced);
    p.active_in(ActiveInput::Checkpointed { sessions: 5 });
    p.active_in(ActiveInput::Shipped);
    p.advance(Duration::from_secs(4));
    let a = p.active_outcome();
    assert!(matches!(a.aborted, Some(AbortReason::Timeout { ref phase }) if phase == "shipping"), "{a:?}");
    assert!(p.active_did.contains(&ActiveOutput::Thaw));
    assert!(p.standby_did.contains(&StandbyOutput::Discard), "the twin forgets what it got");
}

#[test]
fn a_slow_quiesce_hands_the_rest_over_instead_of_aborting() {
    let mut p = Pair::start();
    p.standby_in(StandbyInput::Locked);
    p.advance(Duration::from_millis(600));
    assert_eq!(p.active.phase(), ActivePhase::Checkpointing);
    assert_eq!(p.active_did, [ActiveOutput::Quiesce, ActiveOutput::Checkpoint]);
}

#[test]
fn a_count_mismatch_aborts_on_both_sides() {
    let mut p = Pair::start();
    p.standby_in(StandbyInput::Locked);
    p.active_in(ActiveInput::Quiesced);
    p.active_in(ActiveInput::Checkpointed { sessions: 10 });
    p.standby_in(StandbyInput::Received(11));
    p.active_in(ActiveInput::Shipped);
    assert!(matches!(p.standby_outcome().aborted, Some(AbortReason::CountMismatch { sent: 10, held: 11 })));
    assert!(!p.active_outcome().committed);
    assert!(p.active_did.contains(&ActiveOutput::Thaw));
}

#[test]
fn when_the_vip_does_not_move_the_active_takes_it_back_and_only_then_tells_the_twin() {
    let mut p = Pair::up_to_holding(20);
    p.advance(Duration::from_secs(4));
    assert_eq!(p.active.phase(), ActivePhase::AwaitingVipBack);
    assert_eq!(p.active_did.last(), Some(&ActiveOutput::SetVrrpFault(false)));
    // The twin still holds the snapshots: the VIP could still reach it.
    assert_eq!(p.standby().phase(), StandbyPhase::Holding);
    assert!(!p.active_did.contains(&ActiveOutput::Thaw));
    p.active_in(ActiveInput::VipHere(true));
    let a = p.active_outcome();
    assert_eq!(a.aborted, Some(AbortReason::VipStayed));
    assert!(p.active_did.contains(&ActiveOutput::Thaw));
    assert!(!p.active_did.contains(&ActiveOutput::CloseFrozen));
    assert!(p.standby_did.contains(&StandbyOutput::Discard));
    assert!(!p.standby_did.contains(&StandbyOutput::Restore));
}

#[test]
fn a_vip_that_moves_after_the_active_gave_up_still_means_the_twin_serves() {
    let mut p = Pair::up_to_holding(20);
    p.advance(Duration::from_secs(4));
    assert_eq!(p.active.phase(), ActivePhase::AwaitingVipBack);
    p.standby_in(StandbyInput::VipHere(true));
    p.active_in(ActiveInput::VipHere(false));
    assert!(p.active_did.contains(&ActiveOutput::CloseFrozen));
    assert!(!p.active_did.contains(&ActiveOutput::Thaw), "never both serving");
    assert!(p.active_outcome().committed);
    assert!(p.standby_did.contains(&StandbyOutput::Restore));
}

#[test]
fn a_vip_that_leaves_us_for_nobody_comes_back_and_the_sessions_thaw() {
    let mut p = Pair::up_to_holding(20);
    // Our keepalived goes FAULT as asked; the twin's never takes the VIP.
    p.active_in(ActiveInput::VipHere(false));
    assert_eq!(p.active.phase(), ActivePhase::MovingVip, "gone from here is not taken there");
    assert!(!p.active_did.contains(&ActiveOutput::CloseFrozen));
    p.advance(Duration::from_secs(4));
    assert_eq!(p.active.phase(), ActivePhase::AwaitingVipBack);
    p.active_in(ActiveInput::VipHere(true));
    assert_eq!(p.active_outcome().aborted, Some(AbortReason::VipStayed));
    assert!(p.active_did.contains(&ActiveOutput::Thaw));
    assert!(p.standby_did.contains(&StandbyOutput::Discard));
}

#[test]
fn an_operator_cancel_is_honoured_until_the_vip_is_asked_to_move() {
    let mut p = Pair::start();
    p.standby_in(StandbyInput::Locked);
    p.active_in(ActiveInput::Cancel);
    assert_eq!(p.active_outcome().aborted, Some(AbortReason::Cancelled));
    assert!(p.active_did.contains(&ActiveOutput::Thaw));
    assert!(p.standby_did.contains(&StandbyOutput::Discard));

    let mut p = Pair::up_to_holding(3);
    p.active_in(ActiveInput::Cancel);
    assert_eq!(p.active.phase(), ActivePhase::MovingVip, "too late to cancel");
}

#[test]
fn messages_of_another_switchover_are_ignored() {
    let mut p = Pair::start();
    p.active_in(ActiveInput::Peer(PeerMessage::Ready { switch_id: ID + 1 }));
    assert_eq!(p.active.phase(), ActivePhase::Preparing);
    p.active_in(ActiveInput::Peer(PeerMessage::Abort { switch_id: ID + 1, reason: "old".into() }));
    assert_eq!(p.active.phase(), ActivePhase::Preparing);
}

#[test]
fn the_twin_serves_without_the_actives_closed_after_close_wait_and_at_once_if_it_came_first() {
    // The word does not come: serve after close_wait, committed all the same.
    let mut p = Pair::up_to_holding(10);
    p.standby_in(StandbyInput::VipHere(true));
    p.standby_in(StandbyInput::Restored { restored: 10, failed: 0 });
    p.standby_in(StandbyInput::TookOver);
    let wait = ApplianceSwitchConfig::default().close_wait;
    p.advance(wait - Duration::from_millis(1));
    assert!(!p.standby_did.contains(&StandbyOutput::Serve));
    p.advance(Duration::from_millis(1));
    assert!(p.standby_did.contains(&StandbyOutput::Serve));
    let s = p.standby_outcome();
    assert!(s.committed && s.aborted.is_none(), "{s:?}");

    // The word comes before the takeover is done: serve as soon as it is.
    let mut p = Pair::up_to_holding(10);
    p.standby_in(StandbyInput::VipHere(true));
    p.standby_in(StandbyInput::Peer(PeerMessage::Closed { switch_id: ID }));
    p.standby_in(StandbyInput::Restored { restored: 10, failed: 0 });
    assert!(!p.standby_did.contains(&StandbyOutput::Serve));
    p.standby_in(StandbyInput::TookOver);
    assert!(p.standby_did.contains(&StandbyOutput::Serve));
}
