//! The web console in a real browser: `orchestrator run --console` and
//! simulated workers as processes, headless Chromium driven over the
//! DevTools protocol, checking what an operator sees and does.
//!
//! Skips (with a message) only when Chromium is not installed;
//! `.ci/setup.sh` installs it. With `CONSOLE_SCREENSHOTS=<dir>` the test
//! also saves a screenshot of each page there (docs/console/*.png).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::cli::{bin, wait_exit, Bench, Reaper};

pub(crate) const TOKEN: &str = "operator-token-for-the-test";

pub(crate) fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
}

/// Headless Chromium and one page, driven over the DevTools protocol.
pub(crate) struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn launch(exe: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            // Read to the end so Chromium never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium prints its DevTools address");
        let (ws, _) = tungstenite::connect(url.as_str()).expect("DevTools websocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = b.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let session = b.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = session["sessionId"].as_str().unwrap().to_string();
        b.viewport(1000);
        b
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> Value {
        let v = self.try_send(method, params, session);
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    /// The whole answer to one DevTools command, error included.
    fn try_send(&mut self, method: &str, params: Value, session: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if session {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let m = self.ws.read().expect("DevTools answers");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false)
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    fn viewport(&mut self, height: u64) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    pub(crate) fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    pub(crate) fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_loaded(url);
    }

    /// Waits until the page at a URL starting with `prefix` has loaded.
    pub(crate) fn wait_loaded(&mut self, prefix: &str) {
        let check = format!(
            "document.readyState === 'complete' && location.href.startsWith({})",
            json!(prefix)
        );
        self.wait_for(&check, "the page to load");
    }

    pub(crate) fn wait_for(&mut self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // A click that submits a form navigates: an evaluation that
            // races the navigation is answered with an error, and the
            // condition is asked again on the new page.
            let v = self.try_send(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
                true,
            );
            let navigating = v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("navigated") || m.contains("context was destroyed"));
            assert!(v.get("error").is_none() || navigating, "{expr}: {v}");
            if v["result"]["result"]["value"] == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// A real mouse click in the middle of the element `selector`.
    pub(crate) fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        ));
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            panic!("no {selector} on the page:\n{}", self.text());
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    pub(crate) fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Saves the whole page as `<dir>/<name>.png` when screenshots are asked for.
    pub(crate) fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("CONSOLE_SCREENSHOTS") else {
            return;
        };
        let height = self
            .eval("document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(1000)
            .clamp(600, 4000);
        self.viewport(height);
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        self.viewport(1000);
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `clip`: fetch, then thumbs and transcript in parallel, then embed; two
/// attempts per step, quickly retried.
fn pipelines() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clip.toml"),
        r#"[pipeline]
name = "clip"
version = 1
[defaults.retry]
max_attempts = 2
initial_backoff = "100ms"
[[steps]]
name = "fetch"
task_type = "fetch"
[[steps]]
name = "thumbs"
task_type = "thumbs"
needs = ["fetch"]
[[steps]]
name = "transcript"
task_type = "transcript"
needs = ["fetch"]
[[steps]]
name = "embed"
task_type = "embed"
needs = ["thumbs", "transcript"]
"#,
    )
    .unwrap();
    dir
}

fn describe(b: &Bench, id: &str) -> String {
    let o = bin()
        .args(["describe", id, "--nats-url", &b.url()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn wait_status(b: &Bench, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = describe(b, id);
        if out.starts_with(&format!("workflow id={id} status={status} ")) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} not {status}: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The whole answer (status line, headers, body) to a raw HTTP/1.1
/// request to the console.
pub(crate) fn http_answer(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// The status line of a raw HTTP/1.1 request to the console.
pub(crate) fn http_status(port: u16, request: &str) -> String {
    http_answer(port, request)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn an_operator_sees_a_failure_in_the_console_and_a_retry_from_the_page_completes_it() {
    let Some(exe) = chromium() else {
        eprintln!(
            "skipping the console browser test: chromium is not installed \
             (bash .ci/setup.sh installs it)"
        );
        return;
    };
    let pipes = pipelines();
    let mut b = Bench::new(Some(pipes.path().to_path_buf()));
    let port = crate::support::nats::free_port();
    let mut run = bin();
    run.args(["run", "--nats-url", &b.url(), "--data-dir"])
        .arg(b.dir.path())
        .arg("--pipelines")
        .arg(pipes.path())
        .args(["--console", "--http-addr", &format!("127.0.0.1:{port}")])
        .env("NARRALYTICA_CONSOLE_TOKEN", TOKEN);
    b.orch = Some(Reaper(
        run.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    // A worker whose `embed` always fails: both attempts of it fail.
    b.start_worker(&[
        "--name",
        "sim-broken",
        "--latency-ms",
        "60",
        "--fail-for",
        "embed=1h",
    ]);
    for id in ["clip-bad-1", "clip-bad-2"] {
        let o = b.start("clip", id, false);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    wait_status(&b, "clip-bad-1", "failed");
    wait_status(&b, "clip-bad-2", "failed");
    // The broken worker goes; a healthy one serves from now on.
    let mut broken = b.workers.remove(0);
    let _ = Command::new("kill")
        .args(["-TERM", &broken.id().to_string()])
        .status();
    assert!(wait_exit(&mut broken, Duration::from_secs(15)).is_some());
    b.start_worker(&["--name", "sim-healthy", "--latency-ms", "60"]);
    let o = b.start("clip", "clip-ok-1", true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let base = format!("http://127.0.0.1:{port}/console");
    // Without a signed-in session, a post changes nothing.
    let body = "action=retry&id=clip-bad-1&confirm=1&csrf=guess";
    let refused = http_status(
        port,
        &format!(
            "POST /console/action HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(refused.contains(" 403 "), "{refused}");

    let mut br = Browser::launch(&exe);

    // Workflows: all three, with the counts per status.
    br.goto(&format!("{base}/workflows"));
    let text = br.text();
    for id in ["clip-bad-1", "clip-bad-2", "clip-ok-1"] {
        assert!(text.contains(id), "{id} missing from the list:\n{text}");
    }
    assert_eq!(
        br.eval("document.querySelector('.counts a[data-status=failed] b').innerText"),
        json!("2")
    );
    assert_eq!(
        br.eval("document.querySelector('.counts a[data-status=completed] b').innerText"),
        json!("1")
    );
    br.screenshot("workflows");
    // The status filter narrows the list.
    br.goto(&format!("{base}/workflows?status=completed"));
    let rows = br.eval("Array.from(document.querySelectorAll('#workflows tbody tr')).map(r => r.cells[0].innerText)");
    assert_eq!(rows, json!(["clip-ok-1"]));

    // The failed inbox: one group (embed, simulated) of two, with the error.
    br.goto(&format!("{base}/inbox"));
    let text = br.text();
    assert!(
        text.contains("clip-bad-1") && text.contains("clip-bad-2"),
        "{text}"
    );
    assert!(text.contains("simulated: injected failure"), "{text}");
    assert_eq!(
        br.eval("Array.from(document.querySelectorAll('section.group')).map(g => [g.dataset.step, g.dataset.kind, g.querySelectorAll('tr[data-id]').length])"),
        json!([["embed", "simulated", 2]])
    );
    // Read-only: no retry button before signing in.
    assert_eq!(
        br.eval("document.querySelectorAll('button.retry-one').length"),
        json!(0)
    );

    // One workflow: the DAG with each step's state, the retried attempt.
    br.goto(&format!("{base}/workflow?id=clip-bad-1"));
    assert_eq!(
        br.eval("Array.from(document.querySelectorAll('#dag g.step')).map(g => [g.dataset.step, g.dataset.status])"),
        json!([["fetch", "succeeded"], ["thumbs", "succeeded"], ["transcript", "succeeded"], ["embed", "failed"]])
    );
    assert_eq!(
        br.eval("Array.from(document.querySelectorAll('#timeline tr.attempt[data-step=embed]')).map(r => [r.dataset.attempt, r.dataset.outcome])"),
        json!([["1", "failed"], ["2", "failed"]])
    );
    let retried = br.eval("document.querySelector('#timeline tr.attempt[data-step=embed][data-attempt=\"2\"]').innerText");
    let retried = retried.as_str().unwrap_or("");
    assert!(retried.contains("#2 (retry)"), "{retried}");
    assert!(retried.contains("sim-broken"), "{retried}");
    assert!(retried.contains("simulated: injected failure"), "{retried}");
    br.screenshot("workflow-failed");

    // Capacity and health: the task types and the workers seen.
    br.goto(&format!("{base}/health"));
    assert_eq!(
        br.eval("Array.from(document.querySelectorAll('#task-types tr[data-task-type]')).map(r => r.dataset.taskType)"),
        json!(["embed", "fetch", "thumbs", "transcript"])
    );
    assert_eq!(
        br.eval("document.getElementById('ready').innerText"),
        json!("yes")
    );
    assert_eq!(
        br.eval("document.getElementById('nats').innerText"),
        json!("connected")
    );
    br.screenshot("health");

    // Sign in with the operator token, typed into the form.
    br.goto(&format!("{base}/login"));
    br.click("input[name=token]");
    br.type_text(TOKEN);
    br.click("button[type=submit]");
    br.wait_loaded(&format!("{base}/inbox"));
    br.wait_for(
        "document.querySelectorAll('button.retry-one').length === 2",
        "retry buttons",
    );
    br.screenshot("inbox");

    // Retry one from its row: a preview first, then the confirmation.
    br.click("tr[data-id=clip-bad-1] button.retry-one");
    br.wait_for("!!document.getElementById('confirm')", "the preview");
    let preview = br.text();
    assert!(
        preview.contains("Preview") && preview.contains("clip-bad-1"),
        "{preview}"
    );
    assert!(preview.contains("simulated: injected failure"), "{preview}");
    br.screenshot("retry-preview");
    assert!(
        describe(&b, "clip-bad-1").contains("status=failed"),
        "the preview changed nothing"
    );
    br.click("#confirm");
    br.wait_loaded(&format!("{base}/workflow?id=clip-bad-1"));
    // The page follows the lifecycle events: it turns completed by itself.
    br.wait_for(
        "document.querySelector('#status') && document.querySelector('#status').innerText === 'completed'",
        "the workflow to complete on the page",
    );
    wait_status(&b, "clip-bad-1", "completed");
    assert_eq!(
        br.eval("Array.from(document.querySelectorAll('#timeline tr.attempt[data-step=embed]')).map(r => [r.cells[0].innerText, r.dataset.attempt, r.dataset.outcome])"),
        json!([["0", "1", "failed"], ["0", "2", "failed"], ["1", "1", "succeeded"]])
    );
    assert!(br.text().contains("retry of the failed steps"), "lineage");
    br.screenshot("workflow-retried");

    // The other one is still in the inbox, alone.
    br.goto(&format!("{base}/inbox"));
    assert_eq!(
        br.eval("Array.from(document.querySelectorAll('tr[data-id]')).map(r => r.dataset.id)"),
        json!(["clip-bad-2"])
    );
    assert!(describe(&b, "clip-bad-2").contains("status=failed"));
}
