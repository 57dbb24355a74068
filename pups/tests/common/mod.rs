//! Test harness: a `pups` on loopback, a fake `mups` speaking the local link with
//! `proto::fo_link` over a Unix socket, and bank clients.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use proto::config::ApplianceConfig;
use proto::fo_link::{
    Channel, Data, DataFlags, Direction, FoMessage, Heartbeat, Hello, LinkChannel, PeerRole, SessionDown,
    SessionUp,
};
use proto::frame::FrameConfig;
use pups::codec::{BankCodec, BankFrame};
use pups::local_link::LinkCodec;
use pups::{Pups, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder, FramedRead};

/// The bound on every wait for an event.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `cond` until it holds, for at most [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A socket path unique to this test process and name.
pub fn socket_path(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("pups-test-{}-{n}-{name}.sock", std::process::id()))
}

/// A configuration: `[pups]` keys (heartbeat defaults for tests filled in unless
/// given) and `[[bank]]` tables.
pub fn config(name: &str, pups: &str, banks: &str) -> Arc<ApplianceConfig> {
    let text = config_text(name, pups, banks);
    Arc::new(ApplianceConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// The text of [`config`].
pub fn config_text(name: &str, pups: &str, banks: &str) -> String {
    let mut pups = pups.to_owned();
    if !pups.contains("heartbeat_interval_ms") {
        pups.push_str("\nheartbeat_interval_ms = 100");
    }
    if !pups.contains("heartbeat_misses") {
        pups.push_str("\nheartbeat_misses = 30");
    }
    format!(
        r#"
[appliance]
id = "test-appliance"
local_link = "{}"

[pups]
{pups}

[[fo_node]]
id = "A"
address = "127.0.0.1:7001"

{banks}
"#,
        socket_path(name).display()
    )
}

/// A `[[bank]]` table with the given id, listen address, allowed sources and extra keys.
pub fn bank(id: &str, listen: &str, allow: &str, extra: &str) -> String {
    let framing =
        if extra.contains("framing") { String::new() } else { r#"framing = { length = "u16be" }"#.into() };
    format!(
        r#"
[[bank]]
id = "{id}"
listen = "{listen}"
allow = [{allow}]
layout = "iso87-binary"
active_node = "A"
{framing}
{extra}
"#
    )
}

pub async fn start(cfg: Arc<ApplianceConfig>) -> Pups {
    Pups::start(cfg).await.expect("pups starts")
}

/// One connection of the fake `mups` after its handshake.
struct Link {
    reader: FramedRead<tokio::net::unix::OwnedReadHalf, LinkCodec>,
    writer: OwnedWriteHalf,
    hello: Hello,
}

async fn send(writer: &mut OwnedWriteHalf, message: FoMessage) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    LinkCodec::default().encode(message, &mut buf).unwrap();
    writer.write_all(&buf).await
}

/// Opens one channel: HELLO both ways, then CHANNEL.
async fn open(path: &Path, channel: LinkChannel) -> Link {
    let stream = UnixStream::connect(path).await.expect("connect to the local link");
    let (rd, mut writer) = stream.into_split();
    let mut reader = FramedRead::new(rd, LinkCodec::default());
    let ours = Hello {
        node_id: "fake-mups".into(),
        role: PeerRole::Controller,
        min_version: 1,
        max_version: 1,
        software: "test".into(),
    };
    send(&mut writer, FoMessage::Hello(ours)).await.unwrap();
    let hello = match within("pups HELLO", reader.next()).await {
        Some(Ok(FoMessage::Hello(h))) => h,
        other => panic!("expected HELLO, got {other:?}"),
    };
    assert_eq!(hello.role, PeerRole::Edge);
    assert_eq!(hello.node_id, "test-appliance");
    send(&mut writer, FoMessage::Channel(Channel { channel })).await.unwrap();
    Link { reader, writer, hello }
}

/// A fake `mups`: both channels, heartbeats answered in the background, everything
/// else handed to the test.
pub struct FakeMups {
    data_writer: OwnedWriteHalf,
    control_writer: Arc<Mutex<OwnedWriteHalf>>,
    data_rx: mpsc::UnboundedReceiver<Option<FoMessage>>,
    control_rx: mpsc::UnboundedReceiver<Option<FoMessage>>,
    acks_rx: mpsc::UnboundedReceiver<u64>,
    tasks: Vec<JoinHandle<()>>,
    next_seq: u64,
    /// Clear to stop answering pups's heartbeats.
    pub answer_heartbeats: Arc<AtomicBool>,
    /// The inventory received at attach.
    pub inventory: Vec<SessionUp>,
}

impl FakeMups {
    /// Attaches (data channel first) and reads the inventory.
    pub async fn attach(path: &Path) -> Self {
        let data = open(path, LinkChannel::Data).await;
        let control = open(path, LinkChannel::Control).await;
        let mut mups = Self::from_links(data, control);
        loop {
            match mups.control().await {
                FoMessage::SessionUp(up) => mups.inventory.push(up),
                FoMessage::InventoryEnd(end) => {
                    assert_eq!(end.sessions as usize, mups.inventory.len(), "INVENTORY_END count");
                    break;
                }
                other => panic!("unexpected {other:?} in the inventory"),
            }
        }
        mups
    }

    fn from_links(data: Link, control: Link) -> Self {
        let answer_heartbeats = Arc::new(AtomicBool::new(true));
        let control_writer = Arc::new(Mutex::new(control.writer));
        let (data_tx, data_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let mut reader = data.reader;
        let data_task = tokio::spawn(async move {
            while let Some(Ok(m)) = reader.next().await {
                let _ = data_tx.send(Some(m));
            }
            let _ = data_tx.send(None);
        });
        let mut reader = control.reader;
        let (writer, answer) = (control_writer.clone(), answer_heartbeats.clone());
        let control_task = tokio::spawn(async move {
            while let Some(Ok(m)) = reader.next().await {
                match m {
                    FoMessage::Heartbeat(h) => {
                        if answer.load(Ordering::Relaxed) {
                            let _ = send(&mut *writer.lock().await, FoMessage::HeartbeatAck(h.ack())).await;
                        }
                    }
                    FoMessage::HeartbeatAck(a) => {
                        let _ = acks_tx.send(a.seq);
                    }
                    other => {
                        let _ = control_tx.send(Some(other));
                    }
                }
            }
            let _ = control_tx.send(None);
        });
        Self {
            data_writer: data.writer,
            control_writer,
            data_rx,
            control_rx,
            acks_rx,
            tasks: vec![data_task, control_task],
            next_seq: 1,
            answer_heartbeats,
            inventory: Vec::new(),
        }
    }

    /// The next message on the control channel (heartbeats aside).
    pub async fn control(&mut self) -> FoMessage {
        within("a control message", self.control_rx.recv()).await.flatten().expect("control channel closed")
    }

    /// The next `SESSION_UP`.
    pub async fn session_up(&mut self) -> SessionUp {
        match self.control().await {
            FoMessage::SessionUp(up) => up,
            other => panic!("expected SESSION_UP, got {other:?}"),
        }
    }

    /// The next `SESSION_DOWN`.
    pub async fn session_down(&mut self) -> SessionDown {
        match self.control().await {
            FoMessage::SessionDown(down) => down,
            other => panic!("expected SESSION_DOWN, got {other:?}"),
        }
    }

    /// The next message on the data channel.
    pub async fn data(&mut self) -> Data {
        match within("DATA", self.data_rx.recv()).await.flatten() {
            Some(FoMessage::Data(d)) => d,
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    /// A DATA if one arrives within `d` (for "nothing is forwarded" checks).
    pub async fn data_within(&mut self, d: Duration) -> Option<Data> {
        match tokio::time::timeout(d, self.data_rx.recv()).await {
            Err(_) => None,
            Ok(Some(Some(FoMessage::Data(d)))) => Some(d),
            Ok(other) => panic!("expected DATA or nothing, got {other:?}"),
        }
    }

    /// Waits until pups has closed both channels.
    pub async fn closed_by_pups(&mut self) {
        within("data channel closed", async { while let Some(Some(_)) = self.data_rx.recv().await {} }).await;
        within("control channel closed", async { while let Some(Some(_)) = self.control_rx.recv().await {} })
            .await;
    }

    /// Sends DATA ToBank.
    pub async fn send_to_bank(&mut self, bank: &str, session: u64, message: &[u8]) {
        let data = Data {
            bank_id: bank.into(),
            session_id: session,
            direction: Direction::ToBank,
            correlation_id: 0,
            flags: DataFlags::empty(),
            message: Bytes::copy_from_slice(message),
        };
        send(&mut self.data_writer, FoMessage::Data(data)).await.unwrap();
    }

    /// Sends a message on the control channel.
    pub async fn send_control(&self, message: FoMessage) {
        send(&mut *self.control_writer.lock().await, message).await.unwrap();
    }

    /// A barrier: sends a HEARTBEAT and waits for its ACK, so that every control
    /// message sent before it has been handled by pups.
    pub async fn sync(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.send_control(FoMessage::Heartbeat(Heartbeat { seq, sent_at_micros: 0 })).await;
        within("heartbeat ack", async {
            while let Some(acked) = self.acks_rx.recv().await {
                if acked == seq {
                    return;
                }
            }
            panic!("control channel closed");
        })
        .await;
    }

    /// Drops both connections at once, as a crashing `mups` would.
    pub fn crash(self) {
        drop(self);
    }
}

impl Drop for FakeMups {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens one channel of a second `mups` and returns whether pups closed it.
pub async fn refused(path: &Path, channel: LinkChannel) -> bool {
    let mut link = open(path, channel).await;
    matches!(within("refusal", link.reader.next()).await, None | Some(Err(_)))
}

/// A bank client.
pub struct Bank {
    pub stream: TcpStream,
    codec: BankCodec,
    buf: BytesMut,
}

impl Bank {
    /// Connects to `addr` from an ephemeral port on `from` (or the default source).
    pub async fn connect_from(from: Option<IpAddr>, addr: SocketAddr, framing: FrameConfig) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(ip) = from {
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
        }
        let stream = within("bank connect", socket.connect(addr)).await.expect("bank connects");
        Self { stream, codec: BankCodec::new(framing), buf: BytesMut::new() }
    }

    pub async fn connect(addr: SocketAddr, framing: FrameConfig) -> Self {
        Self::connect_from(None, addr, framing).await
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Frames and writes one message.
    pub async fn send(&mut self, tpdu: Option<[u8; 5]>, header: &[u8], message: &[u8]) {
        let mut out = BytesMut::new();
        let frame = BankFrame::Message {
            tpdu,
            header: Bytes::copy_from_slice(header),
            message: Bytes::copy_from_slice(message),
        };
        self.codec.encode(frame, &mut out).unwrap();
        self.send_raw(&out).await;
    }

    /// Writes a keep-alive.
    pub async fn send_keep_alive(&mut self) {
        let mut out = BytesMut::new();
        self.codec.encode(BankFrame::KeepAlive, &mut out).unwrap();
        self.send_raw(&out).await;
    }

    /// Reads raw bytes until `n` are in.
    pub async fn read_raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let got = within("bank bytes", self.stream.read_buf(&mut self.buf)).await.unwrap();
            assert!(got > 0, "connection closed with {} of {n} bytes", self.buf.len());
        }
        self.buf.split_to(n).to_vec()
    }

    /// Reads one frame.
    pub async fn frame(&mut self) -> BankFrame {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                return frame;
            }
            let got = within("a bank frame", self.stream.read_buf(&mut self.buf)).await.unwrap();
            assert!(got > 0, "connection closed by pups");
        }
    }

    /// Waits until pups closes the connection (EOF or reset), with nothing before.
    pub async fn closed(&mut self) {
        let mut rest = Vec::new();
        match within("bank connection closed", self.stream.read_to_end(&mut rest)).await {
            Ok(_) => assert!(rest.is_empty() && self.buf.is_empty(), "bytes before the close: {rest:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }

    /// Waits for EOF (a graceful close), not a reset.
    pub async fn eof(&mut self) {
        let mut rest = Vec::new();
        within("bank EOF", self.stream.read_to_end(&mut rest)).await.expect("EOF, not a reset");
        assert!(rest.is_empty(), "bytes before EOF: {rest:?}");
    }
}

/// Waits until pups's counters say `mups` is (or is not) attached.
pub async fn attached(stats: &Stats, yes: bool) {
    eventually("attachment state", || stats.link_attached() == yes).await;
}
