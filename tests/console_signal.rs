//! Signals sent from the web console: `orchestrator run --console` and a
//! simulated worker as processes, a workflow whose wait step waits, and
//! headless Chromium filling in the signal form of its page. A read-only
//! viewer sees what the step waits for but cannot send it; an invalid
//! payload is refused with a clear error and changes nothing; a sent
//! payload becomes the wait step's output, and sending the same form
//! again is answered as a duplicate.
//!
//! The browser tests skip (with a message) only when Chromium is missing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::{bin, Bench, Reaper};
use crate::console::{chromium, http_answer, Browser, TOKEN};

/// `draft` → `approve` (waits for signal `approved`) → `publish`.
const REVIEW: &str = r#"[pipeline]
name = "review"
version = 1

[[steps]]
name = "draft"

[[steps]]
name = "approve"
needs = ["draft"]
wait = { signal = "approved", timeout = "1h" }

[[steps]]
name = "publish"
needs = ["approve"]
"#;

/// A node with the console on `port`, its pipelines and a worker for the
/// task steps.
struct Node {
    b: Bench,
    port: u16,
    _pipes: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let pipes = tempfile::tempdir().unwrap();
        std::fs::write(pipes.path().join("review.toml"), REVIEW).unwrap();
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
        b.start_worker(&["--task-types", "draft,publish"]);
        Node {
            b,
            port,
            _pipes: pipes,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/console", self.port)
    }

    fn describe(&self, id: &str) -> Value {
        let o = bin()
            .args(["describe", id, "--json", "--nats-url", &self.b.url()])
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    fn describe_until(&self, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let wf = self.describe(id);
            if ready(&wf) {
                return wf;
            }
            assert!(Instant::now() < deadline, "{id} never got there: {wf}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a `review` workflow and waits until `approve` waits.
    fn start_waiting(&self, id: &str) {
        let o = self.b.start("review", id, false);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let wf = self.describe_until(id, |wf| wf["steps"][1]["status"] == "waiting");
        assert_eq!(wf["steps"][1]["waiting_for"], "approved", "{wf}");
    }

    /// Asserts that `id` still waits and holds no signal.
    fn still_waiting(&self, id: &str) {
        let wf = self.describe(id);
        assert_eq!(wf["status"], "running", "{wf}");
        assert_eq!(wf["steps"][1]["status"], "waiting", "{wf}");
        assert!(wf["signals"].as_array().is_none_or(Vec::is_empty), "{wf}");
    }
}

fn sign_in(br: &mut Browser, base: &str) {
    br.goto(&format!("{base}/login"));
    br.click("input[name=token]");
    br.type_text(TOKEN);
    br.click("button[type=submit]");
    br.wait_loaded(&format!("{base}/inbox"));
}

/// Replaces the payload of the page's signal form with `text`.
fn type_payload(br: &mut Browser, text: &str) {
    br.click("form.signal textarea[name=payload]");
    br.eval("document.querySelector('form.signal textarea[name=payload]').select()");
    br.type_text(text);
}

#[test]
fn an_operator_sends_a_signal_from_the_console_and_the_wait_step_outputs_its_payload() {
    let Some(exe) = chromium() else {
        eprintln!("skipping the console signal test: chromium is not installed");
        return;
    };
    let node = Node::start();
    node.start_waiting("rv-ok");
    let base = node.base();
    let mut br = Browser::launch(&exe);
    sign_in(&mut br, &base);

    br.goto(&format!("{base}/workflow?id=rv-ok"));
    assert_eq!(
        br.eval(
            "Array.from(document.querySelectorAll('#signals form.signal')).map(f => \
             [f.closest('[data-waiting-step]').dataset.waitingStep, f.elements.name.value, \
              f.elements.name.readOnly, f.elements.payload.value])"
        ),
        json!([["approve", "approved", true, "{}"]])
    );
    let payload = json!({"approved_by": "ann", "note": "<ok> & \"fine\"", "n": 7});
    type_payload(&mut br, &payload.to_string());
    br.screenshot("signal-form");
    br.click("form.signal button.send-signal");
    br.wait_for("!!document.getElementById('confirm')", "the preview");
    let preview = br.text();
    assert!(
        preview.contains("Preview") && preview.contains("Waiting for it: step approve"),
        "{preview}"
    );
    assert!(preview.contains("\"approved_by\": \"ann\""), "{preview}");
    node.still_waiting("rv-ok");
    // The confirm form's fields, to send them a second time below.
    let fields = br.eval(
        "new URLSearchParams(new FormData(document.getElementById('confirm-form'))).toString()",
    );
    br.click("#confirm");
    br.wait_for("!!document.getElementById('signal-result')", "the result");
    assert_eq!(
        br.eval("document.getElementById('signal-result').dataset.result"),
        json!("delivered"),
        "{}",
        br.text()
    );
    let wf = node.describe_until("rv-ok", |wf| wf["status"] == "completed");
    assert_eq!(wf["steps"][1]["output"], payload, "{wf}");

    // The same form sent again (a double submit) is a duplicate.
    let again = br.eval(&format!(
        "fetch('/console/action', {{method: 'POST', headers: {{'Content-Type': \
         'application/x-www-form-urlencoded'}}, body: {fields}}}).then(r => r.text())"
    ));
    assert!(
        again
            .as_str()
            .is_some_and(|t| t.contains("data-result=\"duplicate\"")),
        "{again}"
    );
    let after = node.describe("rv-ok");
    assert_eq!(after["steps"][1]["output"], payload, "{after}");
}

#[test]
fn an_invalid_signal_payload_in_the_console_is_refused_clearly_and_changes_nothing() {
    let Some(exe) = chromium() else {
        eprintln!("skipping the console signal test: chromium is not installed");
        return;
    };
    let node = Node::start();
    node.start_waiting("rv-bad");
    let base = node.base();
    let mut br = Browser::launch(&exe);
    sign_in(&mut br, &base);

    br.goto(&format!("{base}/workflow?id=rv-bad"));
    type_payload(&mut br, "{\"approved\": tru");
    br.click("form.signal button.send-signal");
    br.wait_for("!!document.getElementById('signal-error')", "the error");
    let error = br.eval("document.getElementById('signal-error').innerText");
    let error = error.as_str().unwrap_or("");
    assert!(
        error.starts_with("the payload is not valid JSON (") && error.ends_with("nothing was sent"),
        "{error}"
    );
    // The form comes back with what was typed, to correct it.
    assert_eq!(
        br.eval("document.querySelector('form.signal textarea[name=payload]').value"),
        json!("{\"approved\": tru")
    );
    br.screenshot("signal-invalid");
    node.still_waiting("rv-bad");

    // A confirmed post with the same payload is refused the same way.
    let status = br.eval(
        "(() => { const f = new URLSearchParams(new FormData(document.querySelector('form.signal'))); \
         f.set('confirm', '1'); return fetch('/console/action', {method: 'POST', headers: \
         {'Content-Type': 'application/x-www-form-urlencoded'}, body: f.toString()}) \
         .then(r => r.text().then(t => [r.status, t.includes('not valid JSON')])); })()",
    );
    assert_eq!(status, json!([400, true]));
    node.still_waiting("rv-bad");
}

#[test]
fn a_read_only_console_viewer_sees_the_wait_but_cannot_send_a_signal() {
    let node = Node::start();
    node.start_waiting("rv-ro");
    let port = node.port;
    let page = http_answer(
        port,
        &format!(
            "GET /console/workflow?id=rv-ro HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(page.starts_with("HTTP/1.1 200 "), "{page}");
    assert!(
        page.contains("waits for signal <code>approved</code>"),
        "{page}"
    );
    assert!(page.contains("Sign in to send it"), "{page}");
    assert!(!page.contains("class=\"signal\""), "{page}");

    // Without a session, a signal post is refused, however it is made up.
    for confirm in ["", "&confirm=1"] {
        let body = format!(
            "action=signal&id=rv-ro&name=approved&signal_id=s-1&payload=%7B%7D&csrf=guess{confirm}"
        );
        let answer = http_answer(
            port,
            &format!(
                "POST /console/action HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
        assert!(
            answer.contains("sign in with the operator token first"),
            "{answer}"
        );
    }
    node.still_waiting("rv-ro");
}
