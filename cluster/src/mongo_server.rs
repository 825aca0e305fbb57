//! A MongoDB server for tests of the MongoDB backend: the one `MONGODB_URL`
//! names (a real MongoDB), or else jongodb — a MongoDB-wire-compatible
//! in-memory server from the npm registry that `scripts/install-jongodb`
//! installs — started on a free local port and killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

/// Where `scripts/install-jongodb` puts the server.
const JONGODB: &str =
    "target/jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb";

pub struct MongoServer {
    pub url: String,
    /// Which server this is, for test output and docs.
    pub kind: &'static str,
    child: Option<Child>,
}

impl MongoServer {
    /// The server tests should use, or `None` (with the reason printed)
    /// when there is none here. Under CI a missing server is an error.
    pub fn for_tests() -> anyhow::Result<Option<Self>> {
        if let Ok(url) = std::env::var("MONGODB_URL") {
            return Ok(Some(Self {
                url,
                kind: "MongoDB at MONGODB_URL",
                child: None,
            }));
        }
        match jongodb_binary() {
            Some(bin) => Self::start_jongodb(&bin).map(Some),
            None => Ok(crate::harness::missing(
                "a MongoDB server",
                "scripts/install-jongodb (or set MONGODB_URL)",
            )),
        }
    }

    /// Starts jongodb on a free port and waits until it accepts connections.
    pub fn start_jongodb(bin: &std::path::Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow!("starting {}: {e}", bin.display()))?;
        let server = Self {
            url: format!("mongodb://127.0.0.1:{port}"),
            kind: "jongodb",
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("jongodb did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("this server was not started here"))?;
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        if unsafe { libc::kill(child.id() as i32, signal) } != 0 {
            bail!("signal {signal}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// jongodb, from `JONGODB_BIN` or where `scripts/install-jongodb` puts it.
pub fn jongodb_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("JONGODB_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Some(root.join(JONGODB)).filter(|p| p.is_file())
}
