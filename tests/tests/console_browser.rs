//! The operator console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver by fantoccini): log in over HTTPS, see the lab's
//! banks with their sessions, switch one bank A→B through the dangerous-action guard, watch
//! the job finish live (server-sent events), and find the switch in the audit log.
//! Screenshots go to `tests/artifacts/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Lab, LabOptions, bank_sim_config, default_banks};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use sim::bank::{self, BankSimConfig};

/// Longest wait for anything the page should show; generous, for a loaded 2-core CI box.
const PATIENCE: Duration = Duration::from_secs(30);

/// chromedriver, killed by its PID when dropped (also when the test fails).
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/test installs it)");
        Self { child, port }
    }

    async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "chromedriver does not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts().join(name), png).unwrap();
}

/// Waits for an element matching `css`.
async fn find(c: &Client, css: &str) -> Element {
    c.wait().at_most(PATIENCE).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Waits until the text of the element matching `css` satisfies `ok`; returns it.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if ok(&text) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{css}: text now {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn is_hidden(e: &Element) -> bool {
    e.attr("class").await.unwrap().unwrap_or_default().split(' ').any(|c| c == "hidden")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_switches_a_bank_through_the_guard_and_finds_it_in_the_audit_log() {
    let options = LabOptions { state_dir: true, tls: true, ..Default::default() };
    let lab = Lab::start_with("console", default_banks(), options).await;
    // The first admin, made as an operator would: `mups user add` on the state directory.
    let password = format!(
        "console-test-{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let args = mups::cli::UserAddArgs {
        state_dir: lab.state_dir().unwrap(),
        role: mups::auth::Role::Admin,
        name: "ada".into(),
        password_file: None,
    };
    mups::auth::admin_cli::user_add(&args, &password, Default::default(), time::OffsetDateTime::now_utc())
        .unwrap();

    // Every bank has signed-on sessions and a little traffic, as in the demo lab.
    let (stop_banks, stopped) = tokio::sync::watch::channel(false);
    let mut sims = Vec::new();
    for b in &lab.banks {
        let cfg = BankSimConfig { sign_on: true, ..bank_sim_config(&lab, b, 2, 20.0) };
        let mut stopped = stopped.clone();
        sims.push(tokio::spawn(bank::run(cfg, async move {
            let _ = stopped.wait_for(|&s| s).await;
        })));
    }
    lab.wait_until("every bank signed on", |s| {
        s.banks.iter().all(|b| {
            b.sessions.len() == 2
                && b.sessions.iter().all(|x| proto::router::app_state_name(x.app_state) == "signed_on")
        })
    })
    .await;

    let driver = Driver::start();
    driver.ready().await;
    let caps = json!({
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            // As root (CI), Chromium needs --no-sandbox; the certificate is self-signed.
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--ignore-certificate-errors", "--window-size=1400,1000"],
        },
    });
    let c = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session in headless Chromium");
    let result = drive(&c, &lab, &password).await;
    let _ = c.close().await;
    drop(driver);
    let _ = stop_banks.send(true);
    for s in sims {
        let _ = s.await;
    }
    lab.stop().await;
    result.unwrap();
}

/// The browser part; its errors are returned so the caller always cleans up.
async fn drive(c: &Client, lab: &Lab, password: &str) -> Result<(), String> {
    let url = lab.console_url();
    assert!(url.starts_with("https://"), "{url}");
    c.goto(&url).await.map_err(|e| e.to_string())?;
    find(c, "#login-form input[name=user]").await.send_keys("ada").await.unwrap();
    find(c, "#login-form input[name=password]").await.send_keys(password).await.unwrap();
    screenshot(c, "01-login.png").await;
    find(c, "#login-form button[type=submit]").await.click().await.unwrap();

    // The banks, each with its sessions: TCP and application level shown apart.
    for b in &lab.banks {
        find(c, &format!("#banks-table tr[data-bank='{}']", b.id)).await;
    }
    let row = wait_text(c, "tr[data-bank='bank-bin']", |t| t.matches("signed on").count() == 2).await;
    assert!(row.contains("TCP up"), "{row}");
    assert_eq!(wait_text(c, "tr[data-bank='bank-bin'] td.node", |t| t.contains('A')).await.trim(), "A");
    wait_text(c, "#whoami", |t| t.contains("ada (admin)")).await;
    wait_text(c, "#live", |t| t == "live").await;
    assert!(find(c, "#live").await.attr("class").await.unwrap().unwrap().contains("on"));
    screenshot(c, "02-banks.png").await;

    // Select one bank; force makes the action dangerous: the guard asks for the target.
    find(c, "#sel-bank-bin").await.click().await.unwrap();
    let form = find(c, "#switch-form").await;
    form.find(Locator::Css("select[name=to]")).await.unwrap().select_by_value("B").await.unwrap();
    form.find(Locator::Css("select[name=mode]")).await.unwrap().select_by_value("force").await.unwrap();
    let guard = find(c, "#switch-guard").await;
    assert!(!is_hidden(&guard).await, "force shows the guard");
    let impact = wait_text(c, "#impact", |t| t.contains("1 bank(s) move to node B")).await;
    assert!(impact.contains("2 session(s) of which 2 signed on"), "{impact}");
    form.find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys("CHG-4242 browser test")
        .await
        .unwrap();
    // Without typing the target the switch is refused by the page, and nothing is sent.
    form.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_text(c, "#switch-error", |t| t == "Type B to confirm.").await;
    form.find(Locator::Css("input[name=confirm]")).await.unwrap().send_keys("B").await.unwrap();
    screenshot(c, "03-guard.png").await;
    form.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();

    // The job's progress arrives over the event stream until it is done.
    wait_text(c, "#job-state", |t| t == "done").await;
    let outcome = wait_text(c, "tr[data-job-bank='bank-bin']", |t| t.contains("switched")).await;
    assert!(outcome.contains("committed"), "{outcome}");
    let summary = find(c, "#job-summary").await.text().await.unwrap();
    assert!(summary.starts_with("1 switched, 0 rolled back, 0 skipped of 1"), "{summary}");
    wait_text(c, "tr[data-bank='bank-bin'] td.node", |t| t.trim() == "B").await;
    screenshot(c, "04-job-done.png").await;
    let snap = lab.snapshot().await;
    let bin = snap.banks.iter().find(|b| b.id == "bank-bin").unwrap();
    assert_eq!((bin.active_node.as_str(), bin.intent_node.as_str()), ("B", "B"));

    // The audit log: who, from where, what, why, and the result.
    find(c, "nav a[data-page='audit']").await.click().await.unwrap();
    let done = wait_text(c, "#audit-table tbody", |t| t.contains("switch.done")).await;
    assert!(done.contains("CHG-4242 browser test"), "{done}");
    assert!(done.contains("switch.start") && done.contains("banks:bank-bin"), "{done}");
    assert!(done.contains("ada (admin)") && done.contains("127.0.0.1"), "{done}");
    assert!(done.contains("1 switched, 0 rolled back"), "{done}");
    assert!(done.contains("login"), "the login is there too: {done}");
    // The export link carries the filter.
    find(c, "#audit-filter input[name=action]").await.send_keys("switch.").await.unwrap();
    find(c, "#audit-filter button[type=submit]").await.click().await.unwrap();
    wait_text(c, "#audit-table tbody", |t| !t.contains("login") && t.contains("switch.done")).await;
    let href = find(c, "#export-csv").await.attr("href").await.unwrap().unwrap();
    assert!(href.contains("action=switch.") && href.contains("format=csv"), "{href}");
    screenshot(c, "05-audit.png").await;

    // This mups runs alone: the appliance page shows it standalone, and offers no switchover.
    find(c, "nav a[data-page='appliance']").await.click().await.unwrap();
    wait_text(c, "#appliance-table tr[data-key='role'] td", |t| t == "standalone").await;
    wait_text(c, "#appliance-role-note", |t| t.contains("no twin")).await;
    assert!(is_hidden(&find(c, "#appliance-form").await).await);
    screenshot(c, "06-appliance.png").await;
    Ok(())
}
