//! Switchover commands at the node: `SYNC_BEGIN`, `CONTEXT`, `ACTIVATE`,
//! `DEACTIVATE` (`docs/fo-link-protocol.md`, "Switchover"), with the test hooks
//! that delay, refuse or swallow them.
//!
//! Every command is checked against the bank's state first ([`Shared::check`]):
//! a refusal is a `NACK` with the protocol's reason and changes nothing. An
//! accepted command is `ACK`ed before its effects are queued, so a source's
//! `CONTEXT`s and `SYNC_END` follow its `ACK` on the link, as in the protocol's
//! sequence. How in-flight entries move between owned and held is described in
//! the `node` module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::fo_link::{
    Ack, Activate, Context, Deactivate, Direction, FoMessage, Nack, NackReason, SyncBegin, SyncEnd,
};
use proto::iso8583::{Message, Role};
use tracing::{debug, info};

use super::config::CommandKind;
use super::node::{InFlight, Originated, Shared, State, SyncInfo, SyncSide, instant_of, later, unix_micros};
use super::rules::{Decision, decide};
use super::stats::Stats;

/// A switchover command, received.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    SyncBegin(SyncBegin),
    Context(Context),
    Activate(Activate),
    Deactivate(Deactivate),
}

impl Command {
    pub(super) fn kind(&self) -> CommandKind {
        match self {
            Self::SyncBegin(_) => CommandKind::SyncBegin,
            Self::Context(_) => CommandKind::Context,
            Self::Activate(_) => CommandKind::Activate,
            Self::Deactivate(_) => CommandKind::Deactivate,
        }
    }

    pub(super) fn header(&self) -> (u64, &str, u64) {
        match self {
            Self::SyncBegin(m) => (m.cmd_id, &m.bank_id, m.switch_id),
            Self::Context(m) => (m.cmd_id, &m.bank_id, m.switch_id),
            Self::Activate(m) => (m.cmd_id, &m.bank_id, m.switch_id),
            Self::Deactivate(m) => (m.cmd_id, &m.bank_id, m.switch_id),
        }
    }
}

/// Why a command is refused.
type Refusal = (NackReason, String);

impl State {
    fn reply(&mut self, link: u64, cmd: &Command, result: Result<(), Refusal>) {
        let (cmd_id, bank_id, switch_id) = cmd.header();
        let msg = match result {
            Ok(()) => {
                self.stats.acks_sent += 1;
                FoMessage::Ack(Ack { cmd_id, bank_id: bank_id.to_owned(), switch_id })
            }
            Err((reason, detail)) => {
                self.stats.nacks_sent += 1;
                info!(link, cmd = %cmd.kind(), cmd_id, bank = bank_id, switch_id, ?reason, %detail, "NACK");
                FoMessage::Nack(Nack { cmd_id, bank_id: bank_id.to_owned(), switch_id, reason, detail })
            }
        };
        self.send(link, &msg);
    }
}

impl Shared {
    /// Handles a command received on `link`: at once, or after the hook's delay.
    pub(super) fn on_command(self: &Arc<Self>, link: u64, command: Command) {
        let delay = {
            let mut st = self.lock();
            Stats::bump(&mut st.stats.commands_received, command.kind().name());
            st.hooks.delay_ms_on.get(&command.kind()).copied().unwrap_or(0)
        };
        if delay == 0 {
            self.execute(link, &command);
        } else {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                tokio::select! {
                    () = shared.token.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(delay)) => shared.execute(link, &command),
                }
            });
        }
    }

    /// Carries out a switchover command (after any hook delay) and replies.
    fn execute(self: &Arc<Self>, link: u64, cmd: &Command) {
        let mut st = self.lock();
        let kind = cmd.kind();
        let (cmd_id, bank, switch_id) = cmd.header();
        info!(link, cmd = %kind, cmd_id, bank, switch_id, "command");
        if st.hooks.ignore_on.contains(&kind) {
            st.stats.commands_ignored += 1;
            return;
        }
        if st.hooks.nack_on.contains(&kind) {
            let reason = NackReason::from_code(st.hooks.nack_reason);
            st.reply(link, cmd, Err((reason, format!("{kind} refused by the nack_on test hook"))));
            return;
        }
        if let Err(refusal) = self.check(&st, cmd) {
            st.reply(link, cmd, Err(refusal));
            return;
        }
        st.reply(link, cmd, Ok(()));
        match cmd {
            Command::SyncBegin(m) => self.sync_begin(&mut st, link, m),
            Command::Context(m) => self.take_context(&mut st, link, m),
            Command::Activate(m) => self.activate(&mut st, m),
            Command::Deactivate(m) => self.deactivate(&mut st, m),
        }
    }

    /// Whether the command can be carried out in the bank's state.
    fn check(&self, st: &State, cmd: &Command) -> Result<(), Refusal> {
        let (_, bank_id, switch_id) = cmd.header();
        let Some(bank) = st.banks.get(bank_id) else {
            return Err((
                NackReason::UnknownBank,
                format!("node {} does not serve {bank_id}", self.cfg.node_id),
            ));
        };
        let other_switch = |s: &SyncInfo| {
            Err((NackReason::BadState, format!("bank is in switchover {}, not {switch_id}", s.switch_id)))
        };
        match cmd {
            Command::SyncBegin(m) => match bank.sync {
                Some(s) if s.switch_id != switch_id => {
                    Err((NackReason::Busy, format!("bank is in switchover {}", s.switch_id)))
                }
                Some(s) if s.side != SyncSide::from(m.role) => {
                    Err((NackReason::BadState, format!("already {:?} of this switchover", s.side)))
                }
                _ => Ok(()),
            },
            Command::Context(m) => {
                match bank.sync {
                    Some(SyncInfo { switch_id: s, side: SyncSide::Target }) if s == switch_id => {}
                    Some(s) if s.switch_id != switch_id => return other_switch(&s),
                    _ => return Err((NackReason::BadState, "not a target of this switchover".to_owned())),
                }
                match m.direction {
                    Direction::ToNode => {
                        let layout =
                            self.layouts.get(bank_id).ok_or((NackReason::UnknownBank, String::new()))?;
                        match Message::parse(layout, &m.message) {
                            Ok(msg) if msg.mti().role() == Role::Request => Ok(()),
                            Ok(msg) => {
                                Err((NackReason::BadState, format!("MTI {} is not a request", msg.mti())))
                            }
                            Err(e) => Err((NackReason::Internal, format!("message does not parse: {e}"))),
                        }
                    }
                    Direction::ToBank if m.correlation_id == 0 => {
                        Err((NackReason::BadState, "correlation id 0".to_owned()))
                    }
                    Direction::ToBank => Ok(()),
                }
            }
            Command::Activate(_) | Command::Deactivate(_) => match bank.sync {
                Some(s) if s.switch_id != switch_id => other_switch(&s),
                _ => Ok(()),
            },
        }
    }

    fn sync_begin(&self, st: &mut State, link: u64, m: &SyncBegin) {
        let side = SyncSide::from(m.role);
        if let Some(b) = st.banks.get_mut(&m.bank_id) {
            b.sync = Some(SyncInfo { switch_id: m.switch_id, side });
        }
        if side == SyncSide::Target {
            return;
        }
        let mut contexts = Vec::new();
        for e in st.inflight.values_mut().filter(|e| e.bank == m.bank_id) {
            e.owned = false;
            contexts.push(Context {
                cmd_id: m.cmd_id,
                bank_id: m.bank_id.clone(),
                switch_id: m.switch_id,
                correlation_id: e.correlation_id,
                session_id: e.session_id,
                direction: Direction::ToNode,
                matching_key: e.matching_key.clone(),
                received_at_micros: e.received_at_micros,
                deadline_micros: e.deadline_micros,
                message: e.message.clone(),
            });
        }
        for (corr, o) in st.originated.iter_mut().filter(|(_, o)| o.bank == m.bank_id) {
            o.owned = false;
            contexts.push(Context {
                cmd_id: m.cmd_id,
                bank_id: m.bank_id.clone(),
                switch_id: m.switch_id,
                correlation_id: *corr,
                session_id: 0,
                direction: Direction::ToBank,
                matching_key: o.matching_key.clone(),
                received_at_micros: o.sent_at_micros,
                deadline_micros: o.deadline_micros,
                message: o.message.clone(),
            });
        }
        let count = contexts.len();
        for c in contexts {
            if st.send(link, &FoMessage::Context(c)) {
                st.stats.contexts_sent += 1;
            }
        }
        let params = self.runtime_params(st, &m.bank_id);
        let end = SyncEnd {
            cmd_id: m.cmd_id,
            bank_id: m.bank_id.clone(),
            switch_id: m.switch_id,
            context_count: u32::try_from(count).unwrap_or(u32::MAX),
            params,
        };
        if st.send(link, &FoMessage::SyncEnd(end)) {
            st.stats.sync_ends_sent += 1;
        }
        info!(link, bank = %m.bank_id, switch_id = m.switch_id, contexts = count, "handed the bank's in-flight requests over");
    }

    /// The bank's runtime parameters for `SYNC_END`: those received with the last
    /// `ACTIVATE`, with ours (`stan_base`, `source_node`) replacing any of the same name.
    fn runtime_params(&self, st: &State, bank: &str) -> Vec<(String, String)> {
        let Some(b) = st.banks.get(bank) else { return Vec::new() };
        let ours = [
            ("stan_base".to_owned(), b.next_stan.to_string()),
            ("source_node".to_owned(), self.cfg.node_id.clone()),
        ];
        let mut params: Vec<(String, String)> =
            b.params.iter().filter(|(k, _)| !ours.iter().any(|(o, _)| o == k)).cloned().collect();
        params.extend(ours);
        params
    }

    fn take_context(self: &Arc<Self>, st: &mut State, link: u64, m: &Context) {
        st.stats.contexts_received += 1;
        let now = Instant::now();
        let now_micros = unix_micros();
        match m.direction {
            Direction::ToNode => {
                let Some(layout) = self.layouts.get(&m.bank_id) else { return };
                let Ok(msg) = Message::parse(layout, &m.message) else { return };
                let (decision, hit) = decide(&st.rules, &m.bank_id, &msg);
                if let Some(i) = hit {
                    let label = st.rules[i].label(i);
                    Stats::bump(&mut st.stats.rule_hits, &label);
                }
                match decision {
                    Decision::Respond { code, delay } => {
                        let due = later(instant_of(m.received_at_micros, now, now_micros), delay);
                        if !delay.is_zero() {
                            st.stats.delayed += 1;
                        }
                        let entry = InFlight {
                            bank: m.bank_id.clone(),
                            session_id: m.session_id,
                            correlation_id: m.correlation_id,
                            matching_key: m.matching_key.clone(),
                            received_at_micros: m.received_at_micros,
                            deadline_micros: m.deadline_micros,
                            message: m.message.clone(),
                            link,
                            due,
                            code,
                            owned: self.cfg.answer_before_activate,
                        };
                        self.hold(st, entry);
                    }
                    // A taken-over request did not come on a link of ours: "close" drops it too.
                    Decision::Drop | Decision::Close => st.stats.dropped_by_rule += 1,
                }
            }
            // The other node's correlation ids are its own namespace: one may equal one of
            // ours. Its bank response goes to the node that sent the request (mups
            // routes it there), so such a context is acknowledged but not tracked here.
            Direction::ToBank if st.originated.contains_key(&m.correlation_id) => {
                st.stats.contexts_not_tracked += 1;
                debug!(bank = %m.bank_id, correlation_id = m.correlation_id,
                       "context of a request the other node originated: its id is one of ours, not tracked");
            }
            Direction::ToBank => {
                let deadline = instant_of(m.deadline_micros, now, now_micros);
                st.originated.insert(
                    m.correlation_id,
                    Originated {
                        bank: m.bank_id.clone(),
                        matching_key: m.matching_key.clone(),
                        sent_at_micros: m.received_at_micros,
                        deadline_micros: m.deadline_micros,
                        deadline,
                        message: m.message.clone(),
                        owned: false,
                    },
                );
                self.arm_timeout(m.correlation_id, deadline);
            }
        }
    }

    fn activate(&self, st: &mut State, m: &Activate) {
        if let Some(b) = st.banks.get_mut(&m.bank_id) {
            b.active = true;
            b.sync = None;
            if let Some(stan) =
                m.params.iter().rev().find(|(k, _)| k == "stan_base").and_then(|(_, v)| v.parse().ok())
            {
                if (1..=999_999).contains(&stan) {
                    b.next_stan = stan;
                }
            }
            b.params = m.params.clone();
        }
        let now = Instant::now();
        let mut due = Vec::new();
        for (id, e) in st.inflight.iter_mut().filter(|(_, e)| e.bank == m.bank_id) {
            e.owned = true;
            if e.due <= now {
                due.push(*id);
            }
        }
        for id in due {
            if let Some(e) = st.inflight.remove(&id) {
                self.answer(st, e);
            }
        }
        let mut expired = Vec::new();
        for (corr, o) in st.originated.iter_mut().filter(|(_, o)| o.bank == m.bank_id) {
            o.owned = true;
            if o.deadline <= now {
                expired.push(*corr);
            }
        }
        for corr in expired {
            st.originated.remove(&corr);
            st.stats.originated_timed_out += 1;
        }
        info!(bank = %m.bank_id, switch_id = m.switch_id, "bank activated");
    }

    fn deactivate(&self, st: &mut State, m: &Deactivate) {
        if let Some(b) = st.banks.get_mut(&m.bank_id) {
            b.active = false;
            b.sync = None;
        }
        let before = st.inflight.len() + st.originated.len();
        st.inflight.retain(|_, e| e.bank != m.bank_id);
        st.originated.retain(|_, o| o.bank != m.bank_id);
        let dropped = before - st.inflight.len() - st.originated.len();
        st.stats.inflight_dropped += dropped as u64;
        info!(bank = %m.bank_id, switch_id = m.switch_id, dropped, "bank deactivated");
    }
}
