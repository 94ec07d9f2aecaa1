//! Authorisation through NATS itself: nats-server runs with exactly
//! `deploy/nats/nats-server-secure.conf` (TLS on, one user per role). Each
//! role does its job (a workflow completes with the orchestrator, one
//! worker per task type and an operator; the events user reads the events
//! stream), and a worker credential cannot call an admin verb, publish into
//! another task type's stream, read another type's tasks, listen to other
//! clients' inboxes or delete a stream: each fails with "permissions
//! violation".

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::cli::{bin, wait_exit, Reaper};
use crate::support::nats::{free_port, NatsServer};
use crate::support::secure::Pki;

/// The task types of the shipped pipelines: a worker of each runs the
/// test's workflow.
fn task_types() -> Vec<String> {
    orchestrator::pipeline::task_types(&crate::support::shipped_pipelines())
}

/// The worker users of the file besides those: version 1 of the video
/// pipeline's enrichments (workflows pinned to it still need workers).
const V1_TASK_TYPES: [&str; 3] = ["enrich_topics", "enrich_entities", "enrich_sentiment"];

fn password(user: &str) -> String {
    format!("pw-{user}-5e1")
}

/// The password variable the file reads for `user`.
fn password_var(user: &str) -> String {
    let name = user.replace('-', "_").to_uppercase();
    format!("NARRALYTICA_{name}_PASSWORD")
}

struct Secure {
    server: NatsServer,
    pki: Pki,
    _store: tempfile::TempDir,
}

impl Secure {
    fn start() -> Secure {
        let pki = Pki::new();
        let store = tempfile::tempdir().unwrap();
        let file =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/nats-server-secure.conf");
        let mut env = vec![
            (
                "NATS_TLS_CERT".to_string(),
                pki.path("server.pem").display().to_string(),
            ),
            (
                "NATS_TLS_KEY".to_string(),
                pki.path("server.key").display().to_string(),
            ),
            (
                "NATS_TLS_CA".to_string(),
                pki.path("ca.pem").display().to_string(),
            ),
            (
                "NATS_STORE_DIR".to_string(),
                store.path().display().to_string(),
            ),
        ];
        let users = ["orchestrator", "operator", "events"]
            .into_iter()
            .map(str::to_owned)
            .chain(task_types().into_iter().map(|t| format!("worker-{t}")))
            .chain(V1_TASK_TYPES.iter().map(|t| format!("worker-{t}")));
        for user in users {
            env.push((password_var(&user), password(&user)));
        }
        let monitor = free_port().to_string();
        let server = NatsServer::start_with_args(
            vec![
                "-c".into(),
                file.display().to_string(),
                "-m".into(),
                monitor,
            ],
            env,
        );
        Secure {
            server,
            pki,
            _store: store,
        }
    }

    /// `orchestrator <args>` as `user`.
    fn as_user(&self, user: &str, args: &[&str]) -> Command {
        let mut c = bin();
        c.args(args)
            .args(["--nats-url", &self.server.url(), "--nats-user", user])
            .arg("--nats-tls-ca")
            .arg(self.pki.path("ca.pem"))
            .env("NARRALYTICA_NATS_PASSWORD", password(user));
        if user != "orchestrator" && user != "operator" {
            c.args(["--nats-inbox-prefix", &format!("_INBOX_{user}")]);
        }
        c
    }

    /// A client of `user` that records the server's errors.
    async fn client(&self, user: &str) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = errors.clone();
        let client = async_nats::ConnectOptions::new()
            .user_and_password(user.into(), password(user))
            .add_root_certificates(self.pki.path("ca.pem"))
            .require_tls(true)
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .event_callback(move |event| {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().push(e.to_string().to_lowercase());
                }
                std::future::ready(())
            })
            .connect(self.server.url())
            .await
            .expect("connects");
        (client, errors)
    }
}

/// Waits until the server reported a permissions violation naming `subject`.
async fn violation(errors: &Mutex<Vec<String>>, subject: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if errors
            .lock()
            .iter()
            .any(|e| e.contains("permissions violation") && e.contains(&subject.to_lowercase()))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no permissions violation for {subject}: {:?}",
            errors.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn with_the_shipped_nats_config_each_role_does_its_job_and_nothing_else() {
    let s = Secure::start();
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| std::fs::File::create(logs.path().join(name)).unwrap();
    let mut orch = Reaper(
        s.as_user("orchestrator", &["run"])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(log("run.err"))
            .spawn()
            .unwrap(),
    );
    // The orchestrator creates the streams; workers only look them up, so
    // they start once it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let run_log = std::fs::read_to_string(logs.path().join("run.err")).unwrap();
        if run_log.contains("orchestrator running") {
            break;
        }
        assert!(
            orch.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline,
            "the orchestrator does not run:\n{run_log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut workers = Vec::new();
    for t in task_types() {
        let t = t.as_str();
        let user = format!("worker-{t}");
        loop {
            let mut w = Reaper(
                s.as_user(&user, &["worker", "--simulate", "--task-types", t])
                    .stdout(Stdio::null())
                    .stderr(log(&format!("{user}.err")))
                    .spawn()
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(500));
            if w.try_wait().unwrap().is_none() {
                workers.push(w);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{user} does not start: {}",
                std::fs::read_to_string(logs.path().join(format!("{user}.err"))).unwrap()
            );
        }
    }
    let input = r#"{"video_url":"s3://media/r-1.mp4"}"#;
    let start = |s: &Secure| {
        s.as_user(
            "operator",
            &[
                "start",
                "video",
                "--id",
                "r-1",
                "--input",
                input,
                "--wait",
                "--timeout",
                "60",
            ],
        )
        .output()
        .unwrap()
    };
    let mut out = start(&s);
    for _ in 0..50 {
        if !String::from_utf8_lossy(&out.stderr).contains("no orchestrator is listening") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = start(&s);
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "workflow id=r-1 status=completed created=true",
        "{}\nrun: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(logs.path().join("run.err")).unwrap()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The events user reads the events stream.
        let (events, errors) = s.client("events").await;
        let js = async_nats::jetstream::new(events);
        let mut stream = js
            .get_stream("NARRALYTICA_EVENTS")
            .await
            .expect("events stream");
        let info = stream.info().await.unwrap();
        assert!(info.state.messages > 0, "{info:?}");
        assert!(errors.lock().is_empty(), "{:?}", errors.lock());

        // A worker credential, for everything it may not do.
        let (w, errors) = s.client("worker-transcribe").await;
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            w.request("narralytica.admin.list", "{}".into()),
        )
        .await;
        violation(&errors, "narralytica.admin.list").await;
        w.publish("narralytica.tasks.embed", "{}".into())
            .await
            .unwrap();
        violation(&errors, "narralytica.tasks.embed").await;
        w.publish(
            "$JS.API.CONSUMER.MSG.NEXT.NARRALYTICA_TASKS.worker-embed",
            "{}".into(),
        )
        .await
        .unwrap();
        violation(
            &errors,
            "$js.api.consumer.msg.next.narralytica_tasks.worker-embed",
        )
        .await;
        let _sub = w.subscribe("narralytica.tasks.embed").await.unwrap();
        violation(&errors, "subscription to \"narralytica.tasks.embed\"").await;
        let _inboxes = w.subscribe("_INBOX.>").await.unwrap();
        violation(&errors, "_inbox.>").await;
        let wjs = async_nats::jetstream::new(w.clone());
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            wjs.delete_stream("NARRALYTICA_TASKS"),
        )
        .await;
        violation(&errors, "$js.api.stream.delete.narralytica_tasks").await;
    });

    // Every mutating admin request is audited with the caller.
    let _ = Command::new("kill")
        .args(["-TERM", &orch.id().to_string()])
        .status();
    wait_exit(&mut orch, Duration::from_secs(15)).expect("stops on SIGTERM");
    let run_log = std::fs::read_to_string(logs.path().join("run.err")).unwrap();
    let audit = run_log
        .lines()
        .find(|l| l.contains("narralytica::audit") && l.contains("verb=\"start\""))
        .unwrap_or_else(|| panic!("no audit line:\n{run_log}"));
    assert!(
        audit.contains("account=OPS") && audit.contains("user=operator"),
        "{audit}"
    );
    drop(workers);
}
