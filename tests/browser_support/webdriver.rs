//! A small W3C WebDriver client for the browser tests: starts `/usr/bin/chromedriver` on a
//! free port, opens one headless Chromium session, and offers the handful of commands the
//! tests use (navigate, run JS, find/click/type, screenshot, viewport and theme emulation).
//! Every wait polls with a deadline; nothing sleeps for a fixed time to "let things settle".

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::client;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a `wait_*` keeps polling before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
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
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn chromedriver");
            let base = format!("http://127.0.0.1:{port}");
            match wait_ready(&mut driver, &base).await {
                Ok(()) => return Browser::open(driver, base).await,
                Err(e) => {
                    last_err = e;
                    let _ = driver.kill();
                    let _ = driver.wait();
                }
            }
        }
        panic!("chromedriver did not start: {last_err}");
    }

    async fn open(mut driver: Child, base: String) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
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
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let r = client::request(
            Method::POST,
            &format!("{base}/session"),
            &[],
            caps.to_string(),
        )
        .await;
        let v = r.json();
        let Some(session) = v["value"]["sessionId"].as_str().map(str::to_owned) else {
            let _ = driver.kill();
            panic!("WebDriver could not open a Chromium session: {v}");
        };
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    /// One WebDriver command; panics on a WebDriver error.
    pub async fn cmd(&self, method: Method, path: &str, body: Value) -> Value {
        match self.try_cmd(method.clone(), path, body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    pub async fn try_cmd(&self, method: Method, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let body = if method == Method::GET || method == Method::DELETE {
            String::new()
        } else {
            body.to_string()
        };
        let r = client::request(method, &url, &[], body).await;
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("{e}: {}", r.text()))?;
        if r.status >= 400 {
            return Err(format!(
                "{} {}",
                v["value"]["error"].as_str().unwrap_or("error"),
                v["value"]["message"].as_str().unwrap_or("")
            ));
        }
        Ok(v["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Like `js`, for a script that calls `arguments[arguments.length - 1](value)` when done.
    pub async fn js_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            Method::POST,
            "/execute/async",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Polls `script` until it returns something truthy; returns that value.
    pub async fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = match self
                .try_cmd(
                    Method::POST,
                    "/execute/sync",
                    json!({"script": script, "args": args}),
                )
                .await
            {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => v,
                Err(e) => Value::String(e),
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

    /// Waits for the element, then returns its WebDriver id.
    pub async fn find(&self, css: &str) -> String {
        self.wait_for(css).await;
        let v = self
            .cmd(
                Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for `{css}`: {v}"))
            .to_string()
    }

    /// A real click (the element is scrolled into view and must be interactable).
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(Method::POST, &format!("/element/{id}/click"), json!({}))
            .await;
    }

    /// Clears the field, then types `text` with real key events.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(Method::POST, &format!("/element/{id}/clear"), json!({}))
            .await;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
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

    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            Method::POST,
            "/goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    /// Two animation frames: layout, ResizeObserver redraws and paint have happened.
    pub async fn settle(&self) {
        self.js_async(
            "const done = arguments[arguments.length - 1]; \
             requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
            json!([]),
        )
        .await;
    }

    /// PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd(Method::GET, "/screenshot", Value::Null).await;
        let png = base64_decode(v.as_str().expect("screenshot is base64"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// The browser console (errors such as CSP violations show up here).
    pub async fn console(&self) -> Vec<String> {
        let url = format!("{}/session/{}/se/log", self.base, self.session);
        let r = client::request(
            Method::POST,
            &url,
            &[],
            json!({"type": "browser"}).to_string(),
        )
        .await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        v["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn page_summary(&self) -> String {
        let v = self
            .try_cmd(
                Method::POST,
                "/execute/sync",
                json!({"script": "return location.href + '\\n' + document.body.innerText.slice(0, 1500);", "args": []}),
            )
            .await;
        match v {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => e,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: end the session (closes Chromium), then stop chromedriver.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        client::request(Method::DELETE, &url, &[], ""),
                    )
                    .await;
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn wait_ready(driver: &mut Child, base: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("chromedriver exited: {status}"));
        }
        // The shared client panics on a refused connection: knock first.
        let addr = base
            .trim_start_matches("http://")
            .parse()
            .expect("driver addr");
        let open = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        let probe = match open {
            true => tokio::time::timeout(
                Duration::from_secs(2),
                client::send(Method::GET, &format!("{base}/status"), &[], ""),
            )
            .await
            .ok(),
            false => None,
        };
        if let Some(stream) = probe {
            let r = stream.read_to_end().await;
            let ready = serde_json::from_slice::<Value>(&r.body)
                .map(|v| v["value"]["ready"] == true)
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("no ready /status within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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

/// Standard base64 (with padding), as WebDriver encodes screenshots.
fn base64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_decodes_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
