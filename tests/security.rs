//! NATS connection security as an operator sets it up: for each way a
//! server can demand proof (user/password, token, nkey, `.creds` with an
//! operator/account/user JWT chain, TLS with a private CA, mutual TLS),
//! `run` + `worker --simulate` + `start --wait` complete a workflow through
//! it, a wrong secret fails fast with one line naming the server's reason,
//! and no secret shows in any output or in `--print-config`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::cli::{bin, wait_exit, Reaper};
use crate::support::nats::NatsServer;
use crate::support::secure::{JwtChain, Pki};

/// One way of securing the server, and what each client then needs.
struct Mode {
    server: NatsServer,
    /// Environment of every client command.
    env: Vec<(&'static str, String)>,
    /// The URL clients use.
    url: String,
    /// Strings that must never be printed.
    secrets: Vec<String>,
    /// Kept alive for the files the clients read.
    _files: Vec<Box<dyn std::any::Any>>,
}

fn listen(port: u16, store: &Path) -> String {
    format!("listen: 127.0.0.1:{port}\njetstream {{ store_dir: {store:?} }}\n")
}

fn user_password() -> Mode {
    let server = NatsServer::start_with_config(|port, store| {
        format!(
            "{}authorization {{ users = [ {{ user: orch, password: \"pw-3c1d9e\" }} ] }}\n",
            listen(port, store)
        )
    });
    Mode {
        url: server.url(),
        env: vec![
            ("NARRALYTICA_NATS_USER", "orch".into()),
            ("NARRALYTICA_NATS_PASSWORD", "pw-3c1d9e".into()),
        ],
        secrets: vec!["pw-3c1d9e".into()],
        server,
        _files: vec![],
    }
}

fn token() -> Mode {
    let server = NatsServer::start_with_config(|port, store| {
        format!(
            "{}authorization {{ token: \"tok-77ab02\" }}\n",
            listen(port, store)
        )
    });
    Mode {
        url: server.url(),
        env: vec![("NARRALYTICA_NATS_TOKEN", "tok-77ab02".into())],
        secrets: vec!["tok-77ab02".into()],
        server,
        _files: vec![],
    }
}

fn nkey() -> Mode {
    let user = nkeys::KeyPair::new_user();
    let public = user.public_key();
    let server = NatsServer::start_with_config(|port, store| {
        format!(
            "{}authorization {{ users = [ {{ nkey: {public} }} ] }}\n",
            listen(port, store)
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let seed = user.seed().unwrap();
    let file = dir.path().join("orch.nk");
    std::fs::write(&file, format!("{seed}\n")).unwrap();
    Mode {
        url: server.url(),
        env: vec![("NARRALYTICA_NATS_NKEY_FILE", file.display().to_string())],
        secrets: vec![seed],
        server,
        _files: vec![Box::new(dir)],
    }
}

fn creds() -> Mode {
    let chain = JwtChain::new();
    let block = chain.server_block();
    let server =
        NatsServer::start_with_config(|port, store| format!("{}{block}", listen(port, store)));
    let dir = tempfile::tempdir().unwrap();
    let text = chain.user_creds("orchestrator");
    let file = dir.path().join("orch.creds");
    std::fs::write(&file, &text).unwrap();
    let seed = text
        .lines()
        .find(|l| l.starts_with("SU"))
        .unwrap()
        .to_string();
    Mode {
        url: server.url(),
        env: vec![("NARRALYTICA_NATS_CREDS", file.display().to_string())],
        secrets: vec![seed],
        server,
        _files: vec![Box::new(dir)],
    }
}

fn tls(mutual: bool) -> Mode {
    let pki = Pki::new();
    let block = pki.server_block(mutual);
    let server =
        NatsServer::start_with_config(|port, store| format!("{}{block}", listen(port, store)));
    let mut env = vec![(
        "NARRALYTICA_NATS_TLS_CA",
        pki.path("ca.pem").display().to_string(),
    )];
    if mutual {
        env.push((
            "NARRALYTICA_NATS_TLS_CERT",
            pki.path("client.pem").display().to_string(),
        ));
        env.push((
            "NARRALYTICA_NATS_TLS_KEY",
            pki.path("client.key").display().to_string(),
        ));
    }
    Mode {
        url: server.url(),
        env,
        secrets: vec![],
        server,
        _files: vec![Box::new(pki)],
    }
}

fn client(mode: &Mode, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args).args(["--nats-url", &mode.url]);
    for (k, v) in &mode.env {
        c.env(k, v);
    }
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `run` + `worker --simulate` + `start --wait` through `mode`; returns
/// everything the three printed.
fn complete_one_workflow(mode: &Mode) -> String {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| std::fs::File::create(logs.path().join(name)).unwrap();
    let mut orch = Reaper(
        client(mode, &["run", "--log-level", "debug"])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(log("run.out"))
            .stderr(log("run.err"))
            .spawn()
            .unwrap(),
    );
    let mut worker = Reaper(
        client(mode, &["worker", "--simulate"])
            .stdout(log("worker.out"))
            .stderr(log("worker.err"))
            .spawn()
            .unwrap(),
    );
    let input = r#"{"video_url":"s3://media/s-1.mp4"}"#;
    let mut out = client(
        mode,
        &[
            "start",
            "video",
            "--id",
            "s-1",
            "--input",
            input,
            "--wait",
            "--timeout",
            "60",
        ],
    )
    .output()
    .unwrap();
    // `start` may come before `run` listens on the admin subjects (a busy
    // machine opens RocksDB slowly).
    for _ in 0..600 {
        if !text(&out).contains("no orchestrator is listening") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        out = client(
            mode,
            &[
                "start",
                "video",
                "--id",
                "s-1",
                "--input",
                input,
                "--wait",
                "--timeout",
                "60",
            ],
        )
        .output()
        .unwrap();
    }
    let mut all = text(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "workflow id=s-1 status=completed created=true",
        "{all}\nrun: {}\nworker: {}",
        std::fs::read_to_string(logs.path().join("run.err")).unwrap(),
        std::fs::read_to_string(logs.path().join("worker.err")).unwrap()
    );
    for child in [&mut orch, &mut worker] {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_exit(child, Duration::from_secs(15)).expect("stops on SIGTERM");
    }
    for name in ["run.out", "run.err", "worker.out", "worker.err"] {
        all.push_str(&std::fs::read_to_string(logs.path().join(name)).unwrap());
    }
    all
}

fn assert_no_secret(mode: &Mode, printed: &str) {
    for s in &mode.secrets {
        assert!(
            !printed.contains(s.as_str()),
            "a secret was printed:\n{printed}"
        );
    }
}

fn check_mode(mode: Mode) {
    let printed = complete_one_workflow(&mode);
    assert_no_secret(&mode, &printed);
    let config = client(&mode, &["run", "--print-config"]).output().unwrap();
    assert!(config.status.success(), "{}", text(&config));
    assert_no_secret(&mode, &text(&config));
}

#[test]
fn a_workflow_completes_through_a_server_that_demands_a_password() {
    let mode = user_password();
    check_mode(mode);
}

#[test]
fn a_workflow_completes_through_a_server_that_demands_a_token() {
    check_mode(token());
}

#[test]
fn a_workflow_completes_through_a_server_that_demands_an_nkey() {
    check_mode(nkey());
}

#[test]
fn a_workflow_completes_through_an_operator_mode_server_with_creds() {
    check_mode(creds());
}

#[test]
fn a_workflow_completes_over_tls_with_a_private_ca() {
    check_mode(tls(false));
}

#[test]
fn a_workflow_completes_over_mutual_tls() {
    check_mode(tls(true));
}

/// The one line a failed first connection prints: the URL without
/// credentials, the server's reason, no secret; exit status non-zero.
fn refused(mut c: Command) -> String {
    let out = c.stdout(Stdio::piped()).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot connect to NATS at nats://"),
        "{err}"
    );
    err
}

#[test]
fn a_wrong_or_missing_secret_fails_at_once_with_the_servers_reason() {
    let mode = user_password();
    let mut wrong = client(&mode, &["list"]);
    wrong.env("NARRALYTICA_NATS_PASSWORD", "not-the-pw-91");
    let err = refused(wrong);
    assert!(err.contains("authorization violation"), "{err}");
    assert!(!err.contains("not-the-pw-91"), "{err}");
    // The same credentials in the URL: the line hides them.
    let mut in_url = bin();
    in_url.args([
        "list",
        "--nats-url",
        &format!("nats://orch:url-pw-55@127.0.0.1:{}", mode.server.port),
    ]);
    let err = refused(in_url);
    assert!(err.contains("authorization violation"), "{err}");
    assert!(err.contains("nats://***@127.0.0.1"), "{err}");
    assert!(!err.contains("url-pw-55"), "{err}");
    // `run` gives up too, with the same line, instead of retrying forever.
    let data = tempfile::tempdir().unwrap();
    let mut run = client(&mode, &["run"]);
    run.arg("--data-dir")
        .arg(data.path())
        .env("NARRALYTICA_NATS_PASSWORD", "not-the-pw-91");
    let out = run.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot connect to NATS at") && err.contains("authorization violation"),
        "{err}"
    );
    assert!(!err.contains("not-the-pw-91"), "{err}");
}

#[test]
fn an_untrusted_certificate_or_no_server_fails_with_the_reason() {
    let mode = tls(false);
    // Without the private CA the server's certificate is not trusted.
    let mut no_ca = bin();
    no_ca.args(["list", "--nats-url", &mode.url, "--nats-tls-required"]);
    let err = refused(no_ca);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Nothing listens: refused, after the (short) connect timeout.
    let port = crate::support::nats::free_port();
    let mut nobody = bin();
    nobody.args([
        "list",
        "--nats-url",
        &format!("nats://127.0.0.1:{port}"),
        "--nats-connect-timeout",
        "500ms",
    ]);
    let err = refused(nobody);
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}
