//! The browser for the browser tests: starts `/usr/bin/chromedriver` on a port it picks
//! itself (`--port=0`, read back from the line it prints), opens one headless Chromium
//! session through fantoccini, and offers the handful of steps the tests use (navigate,
//! run JS, find/click/type, screenshot, viewport and theme emulation, the console).
//! Every wait polls with a deadline; nothing sleeps for a fixed time to "let things settle".

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element, error::CmdError};
use http::Method;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;
use url::Url;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a `wait_*` keeps polling before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Browser {
    client: Client,
    /// The session to end: taken by `close`, or by `drop` after a panic.
    open: Option<Client>,
    driver: Child,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Panics with a clear message
    /// when chromedriver is not installed: the browser tests must not pass silently.
    pub async fn start() -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's Chromium and chromedriver \
             ({CHROMIUM}, {CHROMEDRIVER}): apt-get install -y chromium chromium-driver"
        );
        let (mut driver, port) = spawn_driver().await;
        let profile = tempfile::tempdir().expect("profile dir");
        let connected = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities(&profile))
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match connected {
            Ok(client) => Browser {
                open: Some(client.clone()),
                client,
                driver,
                _profile: profile,
            },
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("WebDriver could not open a Chromium session: {e}");
            }
        }
    }

    pub async fn goto(&self, url: &str) {
        ok("navigate", self.client.goto(url).await);
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        ok("execute", self.client.execute(script, arg_list(args)).await)
    }

    /// Polls `script` until it returns something truthy; returns that value.
    pub async fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        let args = arg_list(args);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = match self.client.execute(script, args.clone()).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => v,
                Err(e) => Value::String(e.to_string()),
            };
            if tokio::time::Instant::now() >= deadline {
                let page = self.page_summary().await;
                panic!("timed out waiting for {what} (last value: {last})\npage: {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `css` matches an element; returns its text.
    pub async fn wait_for(&self, css: &str) -> String {
        let v = self
            .wait_js(
                &format!("`{css}`"),
                "const e = document.querySelector(arguments[0]); return e ? [e.textContent] : null;",
                json!([css]),
            )
            .await;
        v[0].as_str().unwrap_or_default().to_string()
    }

    /// Waits until `css` matches an element whose text contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str) -> String {
        let v = self
            .wait_js(
                &format!("`{css}` containing {text:?}"),
                "for (const e of document.querySelectorAll(arguments[0])) \
                   if (e.textContent.includes(arguments[1])) return [e.textContent]; \
                 return null;",
                json!([css, text]),
            )
            .await;
        v[0].as_str().unwrap_or_default().to_string()
    }

    /// Waits for the element, then returns it.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(css).await;
        let found = self.client.find(Locator::Css(css)).await;
        ok(&format!("find `{css}`"), found)
    }

    /// A real click (the element is scrolled into view and must be interactable).
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        ok(&format!("click `{css}`"), e.click().await);
    }

    /// Clears the field, then types `text` with real key events.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        ok(&format!("clear `{css}`"), e.clear().await);
        ok(&format!("type into `{css}`"), e.send_keys(text).await);
    }

    /// Viewport size through Chrome's device emulation (a 375 px window is below the
    /// minimum a desktop window may have).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// Emulates the system colour scheme (`light` / `dark`).
    pub async fn color_scheme(&self, scheme: &str) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// A Chrome DevTools command through chromedriver's `goog/cdp/execute` extension.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let body = json!({"cmd": cmd, "params": params});
        let r = self
            .client
            .issue_cmd(Extension::post("goog/cdp/execute", body));
        ok(cmd, r.await)
    }

    /// Two animation frames: layout, ResizeObserver redraws and paint have happened.
    pub async fn settle(&self) {
        let script = "const done = arguments[arguments.length - 1]; \
             requestAnimationFrame(() => requestAnimationFrame(() => done(true)));";
        ok("settle", self.client.execute_async(script, vec![]).await);
    }

    /// PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let png = ok("screenshot", self.client.screenshot().await);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// The browser console (errors such as CSP violations show up here), through
    /// chromedriver's `se/log` extension.
    pub async fn console(&self) -> Vec<String> {
        let log = Extension::post("se/log", json!({"type": "browser"}));
        let v = ok("console log", self.client.issue_cmd(log).await);
        let entries = v.as_array().map(Vec::as_slice).unwrap_or_default();
        entries
            .iter()
            .map(|e| {
                let level = e["level"].as_str().unwrap_or("");
                format!("{level} {}", e["message"].as_str().unwrap_or(""))
            })
            .collect()
    }

    /// Ends the session (Chromium quits), then stops chromedriver.
    pub async fn close(mut self) {
        self.end_session().await;
        self.stop_driver();
    }

    async fn end_session(&mut self) {
        if let Some(client) = self.open.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
        }
    }

    fn stop_driver(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    async fn page_summary(&self) -> String {
        let script = "return location.href + '\\n' + document.body.innerText.slice(0, 1500);";
        match self.client.execute(script, vec![]).await {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for Browser {
    /// A test that panicked never reaches `close`; its session is ended here, because
    /// Chromium outlives a killed chromedriver. The tests run on tokio's multi-thread
    /// runtime, where this worker may block while another drives fantoccini's session.
    fn drop(&mut self) {
        if self.open.is_some() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                    tokio::task::block_in_place(|| rt.block_on(self.end_session()));
                }
            }
        }
        self.stop_driver();
    }
}

/// Spawns chromedriver on a port of its choosing and reads that port from the line it
/// prints: "ChromeDriver was started successfully on port N." It is printed once the
/// server listens. The rest of its output is drained so a later write never blocks.
async fn spawn_driver() -> (Child, u16) {
    let mut driver = Command::new(CHROMEDRIVER)
        .arg("--port=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromedriver");
    let stdout = driver.stdout.take().expect("chromedriver stdout");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(port) = reported_port(&line) {
                let _ = tx.send(port);
                let _ = std::io::copy(&mut lines.into_inner(), &mut std::io::sink());
                return;
            }
            line.clear();
        }
    });
    match tokio::time::timeout(Duration::from_secs(20), rx).await {
        Ok(Ok(port)) => (driver, port),
        outcome => {
            let _ = driver.kill();
            let status = driver.wait();
            let why = match outcome {
                Err(_) => "did not report its port within 20 s".to_string(),
                Ok(Err(_)) => format!("exited before reporting its port ({status:?})"),
                Ok(Ok(_)) => unreachable!(),
            };
            panic!("chromedriver {why}");
        }
    }
}

fn reported_port(line: &str) -> Option<u16> {
    let rest = line.split("started successfully on port ").nth(1)?;
    rest.trim().trim_end_matches('.').parse().ok()
}

/// The Chromium flags of every run: headless, no sandbox (containers), no background
/// traffic, a fixed window and language, and a profile of its own.
fn capabilities(profile: &TempDir) -> Capabilities {
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1280,800".into(),
        "--lang=en-US".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// A chromedriver command outside the W3C set, posted to `/session/{id}/{path}`.
#[derive(Debug)]
struct Extension {
    path: &'static str,
    body: Value,
}

impl Extension {
    fn post(path: &'static str, body: Value) -> Extension {
        Extension { path, body }
    }
}

impl WebDriverCompatibleCommand for Extension {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, url::ParseError> {
        let session = session.unwrap_or_default();
        base.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _: &Url) -> (Method, Option<String>) {
        (Method::POST, Some(self.body.to_string()))
    }
}

fn ok<T>(what: &str, r: Result<T, CmdError>) -> T {
    r.unwrap_or_else(|e| panic!("WebDriver {what}: {e}"))
}

/// The tests write `json!([a, b])`; fantoccini takes the arguments as a list.
fn arg_list(args: Value) -> Vec<Value> {
    match args {
        Value::Array(list) => list,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

#[test]
fn reads_the_port_chromedriver_prints() {
    let line = "ChromeDriver was started successfully on port 45567.\n";
    assert_eq!(reported_port(line), Some(45567));
    assert_eq!(reported_port("Only local connections are allowed.\n"), None);
}
