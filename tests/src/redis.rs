//! A private Redis server for the key-value tests: Debian's `redis-server` (installed by
//! `make setup`) on a free loopback port, without persistence, killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running redis-server.
pub struct Redis {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Redis {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    /// Starts one on `port` (a restart uses the port it had).
    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // DEBUG SLEEP stalls it on purpose in a test.
            .args(["--enable-debug-command", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is missing: run `make setup` (it installs Debian's redis-server)",
            );
        let redis = Self { child, port };
        crate::eventually_blocking(Duration::from_secs(10), "redis-server answers PING", || {
            match redis.command("PING") {
                Some(pong) if pong == "+PONG" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        redis
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends one inline command and returns the first line of the answer.
    pub fn command(&self, line: &str) -> Option<String> {
        command(self.port, line)
    }

    /// A field of `INFO` (e.g. `used_memory`).
    pub fn info(&self, field: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "INFO\r\n").ok()?;
        let prefix = format!("{field}:");
        BufReader::new(s)
            .lines()
            .map_while(Result::ok)
            .take(400)
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }

    /// Kills it (every connection drops).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one inline command to the Redis on `port` and returns the first line of the answer.
pub fn command(port: u16, line: &str) -> Option<String> {
    command_within(port, line, Duration::from_secs(5))
}

/// [`command`], giving up on the answer after `wait` (`None`): how a test tells a Redis
/// stalled by `DEBUG SLEEP`.
pub fn command_within(port: u16, line: &str, wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    write!(s, "{line}\r\n").ok()?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).ok()?;
    Some(answer.trim_end().to_owned())
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
