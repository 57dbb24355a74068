//! The bank simulator over real loopback TCP, against a responder written here with
//! `proto` alone (its own framing loop and the layout encoder), so the simulator is
//! checked by code that shares nothing with it but the codecs.
//!
//! Every assertion is about counts and behaviour, never about speed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use proto::frame::{Check, ETX, FrameConfig, TPDU_LEN, swap_tpdu};
use proto::iso8583::{BUILTIN_LAYOUTS, Layout, Message, Role};
use sim::bank::loopback::Loopback;
use sim::bank::{BankSimConfig, DisconnectKind, LatencyOrigin, Report, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the responder does wrong, per connection. Counts are of financial
/// requests on the connection, from 1.
#[derive(Debug, Clone, Default)]
struct Faults {
    /// Do not answer this request.
    drop: Option<usize>,
    /// Answer this request twice.
    duplicate: Option<usize>,
    /// After answering this request, send a response to nothing.
    unsolicited_after: Option<usize>,
    /// On receiving this request, close the connection (FIN) without answering.
    fin_at: Option<usize>,
    /// On receiving this request, reset the connection (RST) without answering.
    rst_at: Option<usize>,
    /// After answering this request, send an FO 0100 and an 0800 echo.
    fo_after: Option<usize>,
    /// DE39 of the sign-on response.
    sign_on_code: Option<&'static str>,
    /// Apply `fin_at`/`rst_at` on the terminal's first connection only.
    first_connection_only: bool,
    /// Hold the answer to this request for this long.
    delay: Option<(usize, Duration)>,
    /// After answering this request, send a frame whose message does not decode.
    garbage_after: Option<usize>,
    /// After answering this request, send bytes that break the framing.
    bad_frame_after: Option<usize>,
}

/// One message the responder received.
#[derive(Debug, Clone)]
struct Received {
    mti: String,
    fields: BTreeMap<u8, String>,
    tpdu: Option<[u8; TPDU_LEN]>,
}

/// What one connection saw.
#[derive(Debug, Clone, Default)]
struct ConnLog {
    terminal: Option<String>,
    /// Requests received, in order.
    requests: Vec<Received>,
    /// Responses received (answers to the responder's FO requests).
    responses: Vec<Received>,
    /// Bytes arrived between the sign-on and its response.
    sent_before_sign_on_answer: bool,
}

struct Responder {
    framing: FrameConfig,
    layout: &'static Layout,
    faults: HashMap<String, Faults>,
    connections: std::sync::Mutex<HashMap<String, usize>>,
    logs: mpsc::UnboundedSender<ConnLog>,
}

fn value_map(msg: &Message<'_>) -> BTreeMap<u8, String> {
    msg.fields().map(|f| (f.id, f.value().unwrap())).collect()
}

impl Responder {
    /// Starts listening; returns the address and the receiver of connection logs.
    async fn start(
        framing: FrameConfig,
        layout: &str,
        faults: HashMap<String, Faults>,
    ) -> (String, mpsc::UnboundedReceiver<ConnLog>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let this = Arc::new(Self {
            framing,
            layout: Layout::builtin(layout).unwrap(),
            faults,
            connections: Default::default(),
            logs: tx,
        });
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let this = Arc::clone(&this);
                tokio::spawn(async move {
                    let log = this.serve(stream).await;
                    let _ = this.logs.send(log);
                });
            }
        });
        (addr, rx)
    }

    fn frame(&self, tpdu: Option<[u8; TPDU_LEN]>, message: &[u8], out: &mut Vec<u8>) {
        let tpdu = tpdu.map(|t| swap_tpdu(&t));
        self.framing.encode(tpdu.as_ref(), &[], message, out).unwrap();
    }

    fn response(&self, msg: &Message<'_>, code: &str) -> Vec<u8> {
        let mti = msg.mti().response().unwrap();
        let mut fields = value_map(msg);
        fields.insert(39, code.to_owned());
        self.layout.encode_to_vec(mti.as_str(), fields.iter().map(|(k, v)| (*k, v.as_str()))).unwrap()
    }

    async fn serve(&self, mut stream: TcpStream) -> ConnLog {
        let mut log = ConnLog::default();
        let mut faults = Faults::default();
        let mut first_connection = true;
        let mut rbuf = BytesMut::with_capacity(8192);
        let mut financial = 0usize;
        loop {
            match stream.read_buf(&mut rbuf).await {
                Ok(0) | Err(_) => return log,
                Ok(_) => {}
            }
            let mut out = Vec::new();
            while let Check::Frame(info) = self.framing.check(&rbuf).unwrap() {
                let frame = rbuf.split_to(info.total);
                if info.is_keep_alive() {
                    continue;
                }
                let tpdu = info.tpdu.clone().map(|r| <[u8; TPDU_LEN]>::try_from(&frame[r]).unwrap());
                let msg = Message::parse(self.layout, &frame[info.message.clone()]).unwrap();
                let received = Received { mti: msg.mti().to_string(), fields: value_map(&msg), tpdu };
                if msg.mti().role() == Role::Response {
                    log.responses.push(received);
                    continue;
                }
                assert_eq!(msg.mti().role(), Role::Request);
                log.requests.push(received);
                if msg.mti().is_network_management() {
                    let sign_on = msg.value(70).map(Result::unwrap).as_deref() == Some("001");
                    if sign_on {
                        // Anything arriving before the 0810 broke the sign-on rule.
                        let mut probe = [0u8; 1];
                        let early =
                            tokio::time::timeout(Duration::from_millis(150), stream.peek(&mut probe)).await;
                        log.sent_before_sign_on_answer |=
                            !rbuf.is_empty() || matches!(early, Ok(Ok(n)) if n > 0);
                    }
                    let code = if sign_on { self.faults_default_sign_on() } else { "00" };
                    self.frame(tpdu, &self.response(&msg, code), &mut out);
                    continue;
                }
                if log.terminal.is_none() {
                    let terminal = msg.value(41).unwrap().unwrap();
                    let mut conns = self.connections.lock().unwrap();
                    let n = conns.entry(terminal.clone()).or_default();
                    *n += 1;
                    first_connection = *n == 1;
                    faults = self.faults.get(&terminal).cloned().unwrap_or_default();
                    log.terminal = Some(terminal);
                }
                financial += 1;
                let applies = first_connection || !faults.first_connection_only;
                if applies && faults.fin_at == Some(financial) {
                    stream.write_all(&out).await.unwrap();
                    stream.shutdown().await.unwrap();
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink).await;
                    return log;
                }
                if applies && faults.rst_at == Some(financial) {
                    stream.write_all(&out).await.unwrap();
                    stream.set_zero_linger().unwrap();
                    return log;
                }
                if let Some((n, pause)) = faults.delay {
                    if n == financial {
                        stream.write_all(&std::mem::take(&mut out)).await.unwrap();
                        tokio::time::sleep(pause).await;
                    }
                }
                if faults.drop != Some(financial) {
                    self.frame(tpdu, &self.response(&msg, "00"), &mut out);
                }
                if faults.duplicate == Some(financial) {
                    self.frame(tpdu, &self.response(&msg, "00"), &mut out);
                }
                if faults.unsolicited_after == Some(financial) {
                    let terminal = log.terminal.clone().unwrap();
                    let stray =
                        self.layout.encode_to_vec("0110", [(11, "999999"), (39, "00"), (41, &terminal)]);
                    self.frame(tpdu, &stray.unwrap(), &mut out);
                }
                if faults.garbage_after == Some(financial) {
                    self.frame(tpdu, b"0110 not an ISO 8583 message", &mut out);
                }
                if faults.bad_frame_after == Some(financial) {
                    out.extend_from_slice(b"\xFF\xFF\xFF\xFF");
                }
                if faults.fo_after == Some(financial) {
                    let terminal = log.terminal.clone().unwrap();
                    let auth = self.layout.encode_to_vec(
                        "0100",
                        [
                            (2, "4000001234567899"),
                            (3, "000000"),
                            (4, "000000001000"),
                            (7, "0101120000"),
                            (11, "424242"),
                            (12, "120000"),
                            (13, "0101"),
                            (32, "999"),
                            (37, "RRN000424242"),
                            (41, terminal.as_str()),
                            (42, "SWITCHMERCHANT1"),
                            (49, "840"),
                        ],
                    );
                    self.frame(tpdu, &auth.unwrap(), &mut out);
                    let echo =
                        self.layout.encode_to_vec("0800", [(7, "0101120000"), (11, "434343"), (70, "301")]);
                    self.frame(tpdu, &echo.unwrap(), &mut out);
                }
            }
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                return log;
            }
        }
    }

    fn faults_default_sign_on(&self) -> &'static str {
        self.faults.get("*").and_then(|f| f.sign_on_code).unwrap_or("00")
    }
}

/// Receives `n` connection logs (the responder finishes a connection shortly after
/// the simulator closes it).
async fn logs(rx: &mut mpsc::UnboundedReceiver<ConnLog>, n: usize) -> Vec<ConnLog> {
    let mut out = Vec::new();
    while out.len() < n {
        let log = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
        out.push(log);
    }
    out
}

fn framing(length: &str, tpdu: bool, etx: bool) -> FrameConfig {
    FrameConfig { tpdu, trailer: etx.then_some(ETX), ..FrameConfig::new(length.parse().unwrap()) }
}

fn config(target: &str, framing: &FrameConfig, layout: &str) -> BankSimConfig {
    BankSimConfig {
        target: target.to_owned(),
        framing: framing.length,
        tpdu: framing.tpdu.then(|| "6000010000".to_owned()),
        etx: framing.trailer.is_some(),
        layout: layout.to_owned(),
        grace: Duration::from_millis(500),
        linger: Duration::from_millis(50),
        ..BankSimConfig::default()
    }
}

fn faults(entries: &[(&str, Faults)]) -> HashMap<String, Faults> {
    entries.iter().map(|(t, f)| ((*t).to_owned(), f.clone())).collect()
}

/// What holds for every report: each request ends exactly once (answered or
/// lost), and the sessions add up to the totals.
fn assert_invariants(r: &Report) {
    let c = &r.counters;
    assert_eq!(c.sent, c.answered + c.lost, "{c:?}");
    assert!(c.late <= c.answered && c.late <= c.timeouts);
    let by_mti: u64 = r.by_mti.values().map(|m| m.sent).sum();
    assert_eq!(by_mti, c.sent);
    let sessions: u64 = r.sessions.iter().map(|s| s.counters.sent).sum();
    assert_eq!(sessions, c.sent);
    let events: u64 = r.sessions.iter().map(|s| s.events.len() as u64).sum();
    assert_eq!(events, r.disconnects.total);
    assert_eq!(r.clean, c.lost + c.duplicates + c.unmatched + c.malformed + r.disconnects.total == 0);
}

fn assert_clean_counts(r: &Report, requests: u64) {
    assert_invariants(r);
    let c = &r.counters;
    assert!(r.clean, "{}", serde_json::to_string_pretty(r).unwrap());
    assert_eq!((c.sent, c.answered), (requests, requests));
    assert_eq!((c.lost, c.duplicates, c.unmatched, c.malformed, c.late), (0, 0, 0, 0, 0));
    assert_eq!(r.disconnects.total, 0);
    let netmgmt = r.by_mti.get("0800").map_or(0, |m| m.sent);
    assert_eq!(r.latency_us.count, requests - netmgmt, "latency covers financial requests only");
}

/// Several sessions, every layout, several framings: every request answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_and_framing_is_answered_exactly_once() {
    let framings =
        [framing("u16be", false, false), framing("ascii4", false, true), framing("bcd2", true, false)];
    for layout in BUILTIN_LAYOUTS {
        for f in &framings {
            let (addr, mut rx) = Responder::start(f.clone(), layout, HashMap::new()).await;
            let cfg = BankSimConfig {
                sessions: 3,
                pipeline: 4,
                requests: Some(301),
                mix: sim::bank::parse_mix("0100:1,0200:1,0400:1").unwrap(),
                ..config(&addr, f, layout)
            };
            let r = run(cfg, pending()).await.unwrap();
            assert_clean_counts(&r, 301);
            // 101 + 100 + 100 requests, each session cycling 0100, 0200, 0400.
            let shares: Vec<(u64, u64)> =
                ["0100", "0200", "0400"].iter().map(|m| (r.by_mti[*m].sent, r.by_mti[*m].answered)).collect();
            assert_eq!(shares, [(102, 102), (100, 100), (99, 99)], "{layout}");
            assert_eq!(r.response_codes.get("00"), Some(&301));
            let logs = logs(&mut rx, 3).await;
            let mut terminals = HashSet::new();
            let mut total = 0;
            for log in &logs {
                let terminal = log.terminal.clone().unwrap();
                assert!(terminals.insert(terminal.clone()), "DE41 shared between sessions");
                assert_eq!(terminal.len(), 8);
                let mut stans = HashSet::new();
                let mut originals = HashSet::new();
                for req in &log.requests {
                    total += 1;
                    assert_eq!(req.fields[&41], terminal);
                    assert!(stans.insert(req.fields[&11].clone()), "STAN reused within a session");
                    for id in [2, 3, 4, 7, 11, 12, 13, 22, 32, 37, 41, 42, 49] {
                        assert!(req.fields.contains_key(&id), "{layout} {} lacks DE{id}", req.mti);
                    }
                    assert_eq!(req.tpdu, f.tpdu.then_some([0x60, 0, 1, 0, 0]));
                    if req.mti == "0400" {
                        // DE90 names an earlier request of the session.
                        let de90 = &req.fields[&90];
                        assert!(originals.contains(&de90[..10]), "{layout} reversal of unknown {de90}");
                    } else {
                        originals.insert(format!("{}{}", req.mti, req.fields[&11]));
                    }
                }
            }
            assert_eq!(total, 301);
        }
    }
}

#[tokio::test]
async fn a_dropped_response_is_lost() {
    let f = framing("u16be", false, false);
    let (addr, _rx) = Responder::start(
        f.clone(),
        "iso87-ascii",
        faults(&[("SIM00002", Faults { drop: Some(5), ..Default::default() })]),
    )
    .await;
    let cfg =
        BankSimConfig { sessions: 2, pipeline: 3, requests: Some(40), ..config(&addr, &f, "iso87-ascii") };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    let c = &r.counters;
    assert!(!r.clean);
    assert_eq!((c.sent, c.answered, c.lost, c.duplicates, c.unmatched), (40, 39, 1, 0, 0));
    assert_eq!(r.sessions[1].counters.lost, 1);
    assert_eq!(r.sessions[0].counters.lost, 0);
    assert_eq!(r.disconnects.total, 0);
}

#[tokio::test]
async fn a_second_response_is_a_duplicate() {
    let f = framing("ascii4", false, false);
    let (addr, _rx) = Responder::start(
        f.clone(),
        "iso87-ebcdic",
        faults(&[("SIM00001", Faults { duplicate: Some(3), ..Default::default() })]),
    )
    .await;
    let cfg =
        BankSimConfig { sessions: 2, pipeline: 2, requests: Some(20), ..config(&addr, &f, "iso87-ebcdic") };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    let c = &r.counters;
    assert!(!r.clean);
    assert_eq!((c.sent, c.answered, c.lost, c.duplicates, c.unmatched), (20, 20, 0, 1, 0));
    assert_eq!(r.sessions[0].counters.duplicates, 1);
}

#[tokio::test]
async fn a_response_to_nothing_is_unmatched() {
    let f = framing("bcd2", true, false);
    let (addr, _rx) = Responder::start(
        f.clone(),
        "iso87-bcd",
        faults(&[("SIM00001", Faults { unsolicited_after: Some(2), ..Default::default() })]),
    )
    .await;
    let cfg =
        BankSimConfig { sessions: 1, pipeline: 1, requests: Some(10), ..config(&addr, &f, "iso87-bcd") };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    let c = &r.counters;
    assert!(!r.clean);
    assert_eq!((c.sent, c.answered, c.lost, c.duplicates, c.unmatched), (10, 10, 0, 0, 1));
}

/// One session closed with FIN, one reset with RST, one left alone.
#[tokio::test]
async fn fin_and_rst_are_reported_by_kind() {
    let f = framing("u16be", false, false);
    let (addr, _rx) = Responder::start(
        f.clone(),
        "iso87-binary",
        faults(&[
            ("SIM00001", Faults { fin_at: Some(3), ..Default::default() }),
            ("SIM00002", Faults { rst_at: Some(4), ..Default::default() }),
        ]),
    )
    .await;
    let cfg =
        BankSimConfig { sessions: 3, pipeline: 1, requests: Some(30), ..config(&addr, &f, "iso87-binary") };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    assert!(!r.clean);
    assert_eq!(r.disconnects.total, 2);
    assert_eq!((r.disconnects.fin, r.disconnects.rst), (1, 1));
    let s = &r.sessions;
    assert_eq!(s[0].events.len(), 1);
    assert_eq!(s[0].events[0].kind, DisconnectKind::Fin);
    assert_eq!(s[0].events[0].in_flight, 1);
    assert_eq!(s[1].events[0].kind, DisconnectKind::Rst);
    assert!(s[2].events.is_empty());
    // The request the peer took with it is lost; the rest were never sent.
    assert_eq!((s[0].counters.sent, s[0].counters.answered, s[0].counters.lost), (3, 2, 1));
    assert_eq!((s[1].counters.sent, s[1].counters.answered, s[1].counters.lost), (4, 3, 1));
    assert_eq!((s[2].counters.sent, s[2].counters.answered, s[2].counters.lost), (10, 10, 0));
    assert_eq!(r.counters.lost, 2);
    assert!(!s[1].events[0].at.is_empty());
}

/// A response after the timeout is late: it still answers its request.
#[tokio::test]
async fn a_response_after_the_timeout_is_late() {
    let f = framing("u16be", false, false);
    let slow = Faults { delay: Some((2, Duration::from_millis(900))), ..Default::default() };
    let (addr, _rx) = Responder::start(f.clone(), "iso87-ascii", faults(&[("SIM00001", slow)])).await;
    let cfg = BankSimConfig {
        requests: Some(4),
        timeout: Duration::from_millis(300),
        grace: Duration::from_secs(5),
        ..config(&addr, &f, "iso87-ascii")
    };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    let c = &r.counters;
    assert!(c.late >= 1 && c.timeouts >= c.late, "{c:?}");
    assert_eq!((c.sent, c.answered, c.lost), (4, 4, 0));
    assert!(r.clean, "late responses alone do not make a run unclean");
}

/// A message that does not decode is counted; bytes that break the framing end
/// the session.
#[tokio::test]
async fn malformed_messages_and_broken_framing_are_reported() {
    let f = framing("ascii4", false, false);
    let (addr, _rx) = Responder::start(
        f.clone(),
        "iso87-ascii",
        faults(&[
            ("SIM00001", Faults { garbage_after: Some(1), ..Default::default() }),
            ("SIM00002", Faults { bad_frame_after: Some(2), ..Default::default() }),
        ]),
    )
    .await;
    let cfg = BankSimConfig { sessions: 2, requests: Some(10), ..config(&addr, &f, "iso87-ascii") };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    assert!(!r.clean);
    assert_eq!(r.counters.malformed, 1);
    assert_eq!(r.sessions[0].counters.answered, 5);
    assert_eq!(r.disconnects.framing_error, 1);
    assert_eq!(r.sessions[1].events[0].kind, DisconnectKind::FramingError);
    assert_eq!(r.sessions[1].counters.answered, 2);
}

/// With `reconnect`, a dropped session comes back and signs on again, and the drop
/// is still reported.
#[tokio::test]
async fn reconnect_still_reports_the_disconnect() {
    let f = framing("u16be", false, false);
    let (addr, _rx) = Responder::start(
        f.clone(),
        "iso87-ascii",
        faults(&[(
            "SIM00001",
            Faults { fin_at: Some(2), first_connection_only: true, ..Default::default() },
        )]),
    )
    .await;
    let cfg = BankSimConfig {
        sessions: 1,
        requests: Some(6),
        sign_on: true,
        reconnect: true,
        reconnect_delay: Duration::from_millis(20),
        ..config(&addr, &f, "iso87-ascii")
    };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    assert!(!r.clean);
    let s = &r.sessions[0];
    assert_eq!(s.connects, 2);
    assert_eq!(r.disconnects.fin, 1);
    assert_eq!(r.by_mti["0800"].sent, 2, "signs on at each connect");
    // 6 financial requests sent in all, the one in flight at the FIN lost.
    assert_eq!(r.counters.sent - r.by_mti["0800"].sent, 6);
    assert_eq!(r.counters.lost, 1);
}

/// The switch sends the bank an 0100 and an 0800 echo: both answered with the
/// response MTI and the echoed STAN, and counted.
#[tokio::test]
async fn fo_requests_are_answered() {
    let f = framing("u16be", true, true);
    let (addr, mut rx) = Responder::start(
        f.clone(),
        "iso87-ascii",
        faults(&[("SIM00001", Faults { fo_after: Some(1), ..Default::default() })]),
    )
    .await;
    let cfg =
        BankSimConfig { sessions: 1, pipeline: 1, requests: Some(5), ..config(&addr, &f, "iso87-ascii") };
    let r = run(cfg, pending()).await.unwrap();
    assert!(r.clean, "{}", serde_json::to_string_pretty(&r).unwrap());
    assert_eq!((r.counters.fo_requests, r.counters.fo_answered), (2, 2));
    assert_eq!((r.counters.sent, r.counters.answered), (5, 5));
    let log = logs(&mut rx, 1).await.remove(0);
    let answers: Vec<(&str, &str)> =
        log.responses.iter().map(|m| (m.mti.as_str(), m.fields[&11].as_str())).collect();
    assert_eq!(answers, [("0110", "424242"), ("0810", "434343")]);
    for a in &log.responses {
        assert_eq!(a.fields[&39], "00");
        // The answer's TPDU is the request's, swapped back: the responder sent
        // 60 00 00 00 01 (the simulator's own, swapped).
        assert_eq!(a.tpdu, Some([0x60, 0, 1, 0, 0]));
    }
    assert_eq!(log.responses[0].fields[&4], "000000001000");
    assert_eq!(log.responses[0].fields[&41], "SIM00001");
    assert_eq!(log.responses[1].fields[&70], "301");
}

#[tokio::test]
async fn sign_on_comes_before_any_financial_request() {
    let f = framing("ascii4", false, false);
    let (addr, mut rx) = Responder::start(f.clone(), "iso87-ebcdic", HashMap::new()).await;
    let cfg = BankSimConfig {
        sessions: 2,
        pipeline: 4,
        requests: Some(20),
        sign_on: true,
        ..config(&addr, &f, "iso87-ebcdic")
    };
    let r = run(cfg, pending()).await.unwrap();
    assert_clean_counts(&r, 22);
    assert_eq!((r.by_mti["0800"].sent, r.by_mti["0800"].answered), (2, 2));
    assert_eq!(r.latency_us.count, 20, "network management is not in the latency");
    for log in logs(&mut rx, 2).await {
        let first = &log.requests[0];
        assert_eq!((first.mti.as_str(), first.fields[&70].as_str()), ("0800", "001"));
        assert!(log.requests[1..].iter().all(|m| m.mti != "0800"));
        assert!(!log.sent_before_sign_on_answer, "financial traffic before the 0810");
    }
}

#[tokio::test]
async fn a_refused_sign_on_ends_the_session() {
    let f = framing("u16be", false, false);
    let (addr, _rx) = Responder::start(
        f.clone(),
        "iso87-ascii",
        faults(&[("*", Faults { sign_on_code: Some("91"), ..Default::default() })]),
    )
    .await;
    let cfg = BankSimConfig { requests: Some(5), sign_on: true, ..config(&addr, &f, "iso87-ascii") };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    assert!(!r.clean);
    assert_eq!(r.disconnects.sign_on_failed, 1);
    assert_eq!(r.sessions[0].events[0].kind, DisconnectKind::SignOnRejected);
    assert_eq!(r.counters.sent, 1, "no financial request after a refused sign-on");
}

#[tokio::test]
async fn connect_failures_are_reported() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let f = framing("u16be", false, false);
    let cfg = BankSimConfig {
        sessions: 2,
        requests: Some(4),
        ..config(&format!("127.0.0.1:{port}"), &f, "iso87-ascii")
    };
    let r = run(cfg, pending()).await.unwrap();
    assert_invariants(&r);
    assert!(!r.clean);
    assert_eq!((r.disconnects.total, r.disconnects.connect_failed), (2, 2));
    assert_eq!(r.counters.sent, 0);
}

/// Shutdown ends sending; what is in flight is still answered.
#[tokio::test]
async fn shutdown_stops_sending_and_drains() {
    let f = framing("u16be", false, false);
    let (addr, _rx) = Responder::start(f.clone(), "iso87-binary", HashMap::new()).await;
    let cfg = BankSimConfig { sessions: 2, pipeline: 8, ..config(&addr, &f, "iso87-binary") };
    let r = run(cfg, tokio::time::sleep(Duration::from_millis(300))).await.unwrap();
    assert!(r.counters.sent > 0);
    assert_clean_counts(&r, r.counters.sent);
}

/// With a rate, latency counts from the intended send time; idle sessions echo.
#[tokio::test]
async fn paced_run_with_idle_echo() {
    let f = framing("u16be", false, false);
    let (addr, _rx) = Responder::start(f.clone(), "iso87-ascii", HashMap::new()).await;
    let cfg = BankSimConfig {
        sessions: 2,
        rate: 400.0,
        pipeline: 2,
        requests: Some(40),
        ..config(&addr, &f, "iso87-ascii")
    };
    let r = run(cfg, pending()).await.unwrap();
    assert_clean_counts(&r, 40);
    assert_eq!(r.latency_us.measured_from, LatencyOrigin::IntendedSend);
    assert_eq!(r.service_latency_us.measured_from, LatencyOrigin::ActualSend);
    assert_eq!(r.service_latency_us.count, 40);
    assert!(r.service_latency_us.max <= r.latency_us.max);

    let idle = BankSimConfig {
        requests: Some(0),
        duration: Some(Duration::from_millis(600)),
        echo_idle: Some(Duration::from_millis(100)),
        ..config(&addr, &f, "iso87-ascii")
    };
    // requests = 0 ends sending at once: echo only while sending is open.
    let r = run(idle, pending()).await.unwrap();
    assert!(r.clean);
    assert_eq!(r.counters.sent, 0);
    let idle = BankSimConfig {
        rate: 1.0,
        duration: Some(Duration::from_millis(800)),
        echo_idle: Some(Duration::from_millis(100)),
        ..config(&addr, &f, "iso87-ascii")
    };
    let r = run(idle, pending()).await.unwrap();
    assert!(r.clean, "{}", serde_json::to_string_pretty(&r).unwrap());
    let echo = r.by_mti["0800"];
    assert!(echo.sent >= 1);
    assert_eq!(echo.answered, echo.sent);
}

/// The loopback peer answers every layout correctly (checked by the simulator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_answers_every_layout() {
    for layout in BUILTIN_LAYOUTS {
        let f = framing("u16be", true, false);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let lb = Arc::new(Loopback::new(f.clone(), Layout::builtin(layout).unwrap(), "00").unwrap());
        let server = tokio::spawn(Arc::clone(&lb).serve(listener));
        let cfg = BankSimConfig {
            sessions: 4,
            pipeline: 16,
            requests: Some(2000),
            sign_on: true,
            mix: sim::bank::parse_mix("0100:2,0200:2,0400:1").unwrap(),
            ..config(&addr, &f, layout)
        };
        let r = run(cfg, pending()).await.unwrap();
        assert_clean_counts(&r, 2004);
        server.abort();
    }
}

/// Several targets: the sessions are spread over them in turn, one report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_spread_over_several_targets() {
    let f = framing("u16be", false, false);
    let layout = Layout::builtin("iso87-binary").unwrap();
    let mut peers = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let lb = Arc::new(Loopback::new(f.clone(), layout, "00").unwrap());
        let server = tokio::spawn(Arc::clone(&lb).serve(listener));
        peers.push((addr, lb, server));
    }
    let cfg = BankSimConfig {
        sessions: 6,
        pipeline: 2,
        requests: Some(600),
        more_targets: peers[1..].iter().map(|p| p.0.clone()).collect(),
        ..config(&peers[0].0, &f, "iso87-binary")
    };
    let r = run(cfg, pending()).await.unwrap();
    assert_clean_counts(&r, 600);
    for (addr, lb, server) in peers {
        let stats = lb.stats();
        assert_eq!(stats.connections.load(std::sync::atomic::Ordering::Relaxed), 2, "{addr}");
        assert_eq!(stats.answered.load(std::sync::atomic::Ordering::Relaxed), 200, "{addr}");
        server.abort();
    }
}

/// The report is JSON with the documented top-level shape.
#[tokio::test]
async fn report_serializes() {
    let f = framing("u16be", false, false);
    let (addr, _rx) = Responder::start(f.clone(), "iso87-ascii", HashMap::new()).await;
    let cfg = BankSimConfig { requests: Some(3), ..config(&addr, &f, "iso87-ascii") };
    let r = run(cfg, pending()).await.unwrap();
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    for key in [
        "config",
        "started_at",
        "duration_s",
        "window_s",
        "throughput",
        "counters",
        "by_mti",
        "response_codes",
        "latency_us",
        "service_latency_us",
        "disconnects",
        "sessions",
        "clean",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["clean"], true);
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}
