//! `mups` in-process against a fake FO node (TCP) and a fake `pups` (Unix socket),
//! both speaking the real wire protocol: routing both ways, heartbeats, node loss,
//! reattach of `pups`, and the HTTP surface.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use mups::link::{self, FoCodec};
use mups::runtime::{self, Mups};
use proto::config::ApplianceConfig;
use proto::fo_link::{
    Channel, Data, DataFlags, Direction, FoLinkDecoder, FoMessage, Hello, InventoryEnd, LinkChannel,
    PeerRole, SessionUp,
};
use proto::iso8583::{Layout, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

const WAIT: Duration = Duration::from_secs(10);

fn layout() -> &'static Layout {
    Layout::builtin("iso87-binary").unwrap()
}

fn hello(role: PeerRole, name: &str) -> FoMessage {
    FoMessage::Hello(Hello {
        node_id: name.into(),
        role,
        min_version: 1,
        max_version: 1,
        software: "test".into(),
    })
}

async fn send<W: AsyncWriteExt + Unpin>(w: &mut W, msg: impl Into<FoMessage>) {
    w.write_all(&msg.into().to_vec().unwrap()).await.unwrap();
}

/// A fake FO node: answers HELLO and heartbeats (unless told to stop), and answers
/// every 0100 with an 0110 carrying DE39 00.
async fn fake_node(listener: TcpListener, mut stop_acks: mpsc::Receiver<()>) {
    let (stream, _) = listener.accept().await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = FramedRead::new(r, FoCodec(FoLinkDecoder::default()));
    let mut acking = true;
    loop {
        tokio::select! {
            msg = r.next() => {
                let Some(Ok(msg)) = msg else { return };
                match msg {
                    FoMessage::Hello(_) => send(&mut w, hello(PeerRole::Node, "A")).await,
                    FoMessage::Heartbeat(hb) if acking => send(&mut w, FoMessage::HeartbeatAck(hb.ack())).await,
                    FoMessage::Data(d) => {
                        let req = Message::parse(layout(), &d.message).unwrap();
                        let stan = req.value(11).unwrap().unwrap();
                        let resp = layout()
                            .encode_to_vec("0110", [(11, stan.as_str()), (39, "00"), (41, "TERM0001")])
                            .unwrap();
                        let answer = Data { direction: Direction::ToBank, message: Bytes::from(resp), ..d };
                        send(&mut w, answer).await;
                    }
                    _ => {}
                }
            }
            Some(()) = stop_acks.recv() => acking = false,
        }
    }
}

struct FakePups {
    control: (FramedRead<tokio::net::unix::OwnedReadHalf, FoCodec>, tokio::net::unix::OwnedWriteHalf),
    data: (FramedRead<tokio::net::unix::OwnedReadHalf, FoCodec>, tokio::net::unix::OwnedWriteHalf),
}

/// Accepts mups's two connections and answers HELLO; reports the inventory.
async fn fake_pups_attach(listener: &UnixListener, sessions: &[u64]) -> FakePups {
    let mut control = None;
    let mut data = None;
    while control.is_none() || data.is_none() {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = FramedRead::new(r, FoCodec(FoLinkDecoder::default()));
        assert!(
            matches!(link::next(&mut r).await.unwrap(), FoMessage::Hello(h) if h.role == PeerRole::Controller)
        );
        send(&mut w, hello(PeerRole::Edge, "pups")).await;
        match link::next(&mut r).await.unwrap() {
            FoMessage::Channel(Channel { channel: LinkChannel::Control }) => control = Some((r, w)),
            FoMessage::Channel(Channel { channel: LinkChannel::Data }) => data = Some((r, w)),
            other => panic!("expected CHANNEL, got {other:?}"),
        }
    }
    let mut pups = FakePups { control: control.unwrap(), data: data.unwrap() };
    for &s in sessions {
        let up = SessionUp {
            session_id: s,
            bank_id: "bank-1".into(),
            peer: "127.0.0.1:40000".into(),
            local: "127.0.0.1:6001".into(),
            opened_at_micros: 0,
        };
        send(&mut pups.control.1, up).await;
    }
    send(&mut pups.control.1, InventoryEnd { sessions: sessions.len() as u32 }).await;
    pups
}

impl FakePups {
    async fn bank_message(&mut self, session: u64, message: Vec<u8>) {
        let data = Data {
            bank_id: "bank-1".into(),
            session_id: session,
            direction: Direction::ToNode,
            correlation_id: 0,
            flags: DataFlags::empty(),
            message: Bytes::from(message),
        };
        send(&mut self.data.1, data).await;
    }

    async fn next_data(&mut self) -> Data {
        loop {
            tokio::select! {
                msg = link::next(&mut self.data.0) => match msg.unwrap() {
                    FoMessage::Data(d) => return d,
                    other => panic!("unexpected on data channel: {other:?}"),
                },
                msg = link::next(&mut self.control.0) => {
                    if let FoMessage::Heartbeat(hb) = msg.unwrap() {
                        send(&mut self.control.1, FoMessage::HeartbeatAck(hb.ack())).await;
                    }
                }
            }
        }
    }
}

fn config(dir: &std::path::Path, node: std::net::SocketAddr) -> Arc<ApplianceConfig> {
    let text = format!(
        r#"
[appliance]
id = "test"
local_link = "{sock}"
[mups]
api_token = "secret-token"
node_heartbeat_interval_ms = 50
node_heartbeat_misses = 3
reconnect_min_ms = 20
[[fo_node]]
id = "A"
address = "{node}"
[[bank]]
id = "bank-1"
listen = "127.0.0.1:1"
allow = ["127.0.0.0/8"]
framing = {{ length = "u16be" }}
layout = "iso87-binary"
active_node = "A"
request_timeout_ms = 5000
"#,
        sock = dir.join("pups.sock").display()
    );
    Arc::new(ApplianceConfig::from_toml_str(&text).unwrap())
}

async fn http_get(mups: &Mups, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(mups.http_addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn wait_for(
    mups: &Mups,
    mut pred: impl FnMut(&mups::driver::Snapshot) -> bool,
) -> mups::driver::Snapshot {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snap = mups::http::snapshot(&mups.router).await.unwrap();
        if pred(&snap) {
            return snap;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not reached: {snap:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mups-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn routes_bank_requests_through_the_node_and_back() {
    let dir = temp_dir("route");
    let node_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(&dir, node_listener.local_addr().unwrap());
    let (_stop_tx, stop_rx) = mpsc::channel(1);
    tokio::spawn(fake_node(node_listener, stop_rx));
    let pups_listener = UnixListener::bind(dir.join("pups.sock")).unwrap();
    let mups = runtime::start(cfg, Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let mut pups = fake_pups_attach(&pups_listener, &[11]).await;
    wait_for(&mups, |s| s.pups_attached && s.nodes[0].up && s.banks[0].sessions.len() == 1).await;

    for i in 0..50u32 {
        let stan = format!("{:06}", i + 1);
        let req =
            layout().encode_to_vec("0100", [(2, "4761739001010010"), (11, &stan), (41, "TERM0001")]).unwrap();
        pups.bank_message(11, req).await;
        let d = tokio::time::timeout(WAIT, pups.next_data()).await.unwrap();
        assert_eq!((d.session_id, d.direction), (11, Direction::ToBank));
        let resp = Message::parse(layout(), &d.message).unwrap();
        assert_eq!(resp.mti().as_str(), "0110");
        assert_eq!(resp.value(11).unwrap().unwrap(), stan);
    }
    let snap = wait_for(&mups, |s| s.banks[0].counters.responses_to_bank == 50).await;
    assert_eq!(snap.banks[0].inflight, 0);
    assert_eq!(snap.banks[0].counters.timeouts, 0);

    // HTTP: health, metrics, and the token on /api.
    assert_eq!(http_get(&mups, "/healthz", None).await.0, 200);
    let (status, body) = http_get(&mups, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#"mups_messages_total{bank="bank-1",node="A",direction="to_node"} 50"#), "{body}");
    assert!(body.contains(r#"mups_responses_total{bank="bank-1",node="A",rc="00"} 50"#), "{body}");
    assert!(body.contains("mups_response_duration_seconds_bucket"), "{body}");
    assert_eq!(http_get(&mups, "/api/v1/state", None).await.0, 401);
    assert_eq!(http_get(&mups, "/api/v1/state", Some("wrong")).await.0, 401);
    let (status, body) = http_get(&mups, "/api/v1/state", Some("secret-token")).await;
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["banks"][0]["active_node"], "A");
    assert_eq!(http_get(&mups, "/readyz", None).await.0, 200);
    mups.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_silent_node_goes_down_and_pups_reattaches_with_its_inventory() {
    let dir = temp_dir("down");
    let node_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(&dir, node_listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = mpsc::channel(1);
    tokio::spawn(fake_node(node_listener, stop_rx));
    let pups_listener = UnixListener::bind(dir.join("pups.sock")).unwrap();
    let mups = runtime::start(cfg, Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let pups = fake_pups_attach(&pups_listener, &[1, 2]).await;
    wait_for(&mups, |s| s.nodes[0].up && s.banks[0].sessions.len() == 2).await;

    // The node stops answering heartbeats: down after 3 × 50 ms, well within the wait.
    stop_tx.send(()).await.unwrap();
    wait_for(&mups, |s| !s.nodes[0].up).await;
    assert_eq!(http_get(&mups, "/readyz", None).await.0, 503);

    // pups goes away and comes back with only session 2: session 1 is gone.
    drop(pups);
    wait_for(&mups, |s| !s.pups_attached).await;
    let _pups = fake_pups_attach(&pups_listener, &[2]).await;
    let snap = wait_for(&mups, |s| s.pups_attached && s.banks[0].sessions.len() == 1).await;
    assert_eq!(snap.banks[0].sessions[0].id, 2);
    mups.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
